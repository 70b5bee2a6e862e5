"""
Quick start: select a model on worst-group accuracy with GridSearchCV
=====================================================================

Group labels (here: label x spurious attribute) travel to the scorer
through scikit-learn's metadata routing, under the keyword
``group_labels``. :data:`~skgroup.worst_group_scorer` scores every
validation fold on its own slice of them; Group DRO also trains on them,
the other estimators never see them.
"""

# %%
# Data: the synthetic benchmark of Sagawa et al. (2020b): a core feature
# block and an easier spurious block that agrees with the label 90% of the
# time in training; validation and test are group-balanced.
import os

import matplotlib.pyplot as plt
import sklearn
from sklearn.model_selection import GridSearchCV

from skgroup import ERMClassifier, GroupDROClassifier, group_accuracies, worst_group_scorer
from skgroup.datasets import make_spurious_benchmark

# SKGROUP_EXAMPLES_QUICK=1: smaller data and grids (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

sklearn.set_config(enable_metadata_routing=True)  # group labels travel by routing
data = make_spurious_benchmark(600 if QUICK else 3000, 400, 2000, random_state=0)
tr, te = data.train, data.test

# %%
# Grid search with cross-validation on worst-group accuracy. Each fold is
# scored on that fold's slice of ``group_labels``.
results = {}
for est, grid in ((ERMClassifier(), {"l2_reg": [1e-4, 1e-2, 1.0]}),
                  (GroupDROClassifier(random_state=0), {"l2_reg": [1e-3, 1e-1]})):
    search = GridSearchCV(est, grid, scoring=worst_group_scorer, cv=2 if QUICK else 5)
    search.fit(tr.X, tr.y, group_labels=tr.group_labels)
    name = type(est).__name__
    results[name] = search.best_estimator_
    print(f"{name}: best {search.best_params_}, CV worst-group accuracy {search.best_score_:.3f}")

# %%
# Per-group test accuracies with stratified bootstrap intervals.
for name, est in results.items():
    print(f"\n{name}")
    print(group_accuracies(te.y, est.predict(te.X), group_labels=te.group_labels, confidence_level=0.95))

# %%
from skgroup.analysis import plot_group_accuracies

plot_group_accuracies(results, te.X, te.y, group_labels=te.group_labels, group_names=data.group_names)
plt.tight_layout()
if not QUICK:
    plt.show()
sklearn.set_config(enable_metadata_routing=False)
