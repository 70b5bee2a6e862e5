"""
Inferring groups and training on them
=====================================

Group DRO, group balancing, DFR and DPE need group labels that users
rarely have. :mod:`skgroup.groups` infers them from the data alone: every
inferrer is fitted on labelled rows and names the group of any labelled
rows, ``fit(X, y)`` then ``predict(X, y)``. Here, on Sagawa et al.'s
synthetic task (a spurious block of features agrees with the label on 90 %
of the training rows), we

1. infer the groups with each inferrer and score them against the planted
   ones (the group labels are used for that, and only for that);
2. train Group DRO on the inferred groups with
   :class:`~skgroup.groups.InferredGroupsClassifier`, next to ERM and to
   Group DRO with the true groups;
3. let :class:`~skgroup.model_selection.RobustSearchCV` choose between
   them with no group labels anywhere, on groups inferred on the
   validation rows (``selection='inferred_worst_group'``).
"""

# %%
import os

import matplotlib.pyplot as plt

from skgroup import ERMClassifier, GroupDROClassifier
from skgroup.datasets import make_spurious_benchmark
from skgroup.groups import EIIL, SPARE, ClusterInferrer, ErrorSplit, InferredGroupsClassifier, group_recovery
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import RobustSearchCV

# SKGROUP_EXAMPLES_QUICK=1: smaller data (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

data = make_spurious_benchmark(1000 if QUICK else 3000, 400 if QUICK else 1000, 2000, random_state=0)
tr, va, te = data.train, data.val, data.test

# %%
# 1. Inferring the groups. The adjusted Rand index (ARI) against the
# planted (class, attribute) groups is high for the class alone, since the
# groups contain it; the ARI *within* each class says how well the
# attribute itself is recovered (0: not at all, 1: exactly).
inferrers = {
    "ErrorSplit": ErrorSplit(random_state=0),
    "Cluster (features)": ClusterInferrer("features", random_state=0),
    "Cluster (probabilities)": ClusterInferrer("probabilities", random_state=0),
    "EIIL": EIIL(n_steps=2000 if QUICK else 10000, random_state=0),
    "SPARE": SPARE(random_state=0),
}
scores = {}
for name, inferrer in inferrers.items():
    labels = inferrer.fit_predict(tr.X, tr.y)
    scores[name] = group_recovery(tr.group_labels, labels, tr.y)
    print(f"{name:24s} groups per class {inferrer.n_groups_per_class_.tolist()}, ARI {scores[name]['ari']:.3f} "
          f"(class alone {scores[name]['ari_class_only']:.3f}), "
          f"within-class ARI {scores[name]['ari_within_class']:.3f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(scores), [s["ari_within_class"] for s in scores.values()], color="tab:blue")
ax.set_xlabel("within-class adjusted Rand index (training rows)")
ax.set_xlim(-0.05, 1.05)
ax.set_title("Planted groups recovered")
fig.tight_layout()

# %%
# SPARE also weighs the rows for importance sampling: a row of a small
# inferred group counts more, every class equally.
spare = inferrers["SPARE"]
for gid, (cls, k) in enumerate(spare.group_names_):
    print(f"class {cls}, inferred group {k}: {spare.group_counts_[gid]} rows, weight "
          f"{spare.sample_weight_[spare.labels_ == gid].mean():.2f}")

# %%
# 2. Training on inferred groups. ``InferredGroupsClassifier`` infers the
# groups of the training rows (and of the validation rows, for the epoch
# selection) and trains the wrapped method on them; it never sees a true
# group label.
def wga(model):
    return worst_group_accuracy(te.y, model.predict(te.X), group_labels=te.group_labels)


erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
inferred = InferredGroupsClassifier(GroupDROClassifier(), ClusterInferrer("features"), random_state=0)
inferred.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
true = GroupDROClassifier(random_state=0).fit(tr.X, tr.y, group_labels=tr.group_labels, X_val=va.X, y_val=va.y,
                                              group_labels_val=va.group_labels)
print(f"test worst-group accuracy: ERM {wga(erm):.3f}, Group DRO on inferred groups {wga(inferred):.3f}, "
      f"Group DRO on the true groups {wga(true):.3f}")

# %%
# 3. Choosing without group labels. The rule ``'inferred_worst_group'``
# scores every candidate by its worst accuracy over the groups inferred on
# the validation rows (EVaLS-style); ``'worst_class'`` needs no inference.
candidates = [(ERMClassifier(), {"l2_reg": [1e-4, 1.0]}),
              (InferredGroupsClassifier(GroupDROClassifier()), {"estimator__l2_reg": [1e-3, 0.1]})]
for rule in ("worst_class", "inferred_worst_group"):
    search = RobustSearchCV(candidates, selection=rule, random_state=0).fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    print(f"{rule}: picks {search.best_estimator_name_} {search.best_params_}; test worst-group accuracy "
          f"{wga(search):.3f}")
res = search.results_
print(res[["estimator", "params", "score", "ci_low", "ci_high", "distinguishable"]].to_string(index=False))
plt.show()
