"""
Choosing a method without group labels
======================================

No method wins everywhere, and JTT and CVaR swing from best to worse than
ERM with their settings. :class:`~skgroup.model_selection.RobustSearchCV`
makes the method a hyperparameter: with ``candidates='auto'`` it searches
every skgroup estimator over the library's search space for it (scaled to
the data), selects on the validation split by a rule that needs **no group
labels** (by default the worst accuracy over groups it infers on the
validation rows; worst-class accuracy, or LaBonte et al.'s
bias-unsupervised score), and reports how sure the choice is.
"""

# %%
import os

import matplotlib.pyplot as plt

from skgroup import ERMClassifier, GroupDROClassifier, JTTClassifier
from skgroup.analysis import plot_search_results
from skgroup.datasets import make_spurious_benchmark
from skgroup.metrics import group_accuracies
from skgroup.model_selection import RobustSearchCV

# SKGROUP_EXAMPLES_QUICK=1: smaller data and grids (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

data = make_spurious_benchmark(600 if QUICK else 3000, 400 if QUICK else 1000, 2000, random_state=0)
tr, va, te = data.train, data.val, data.test

# %%
# The search sees ``X_val, y_val`` only: no ``group_labels``, no
# ``group_labels_val``. In quick mode three methods with small grids
# stand in for ``'auto'``.
candidates = "auto"
if QUICK:
    candidates = [(ERMClassifier(), {"l2_reg": [1e-4, 1.0]}), (JTTClassifier(), {"lambda_up": [5, 20]}),
                  (GroupDROClassifier(), {"l2_reg": [1e-3, 0.1]})]
searches = {}
for rule in ("inferred_worst_group", "worst_class", "bias_unsupervised"):
    search = RobustSearchCV(candidates, selection=rule, random_state=0)
    search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    searches[rule] = search
    lo, hi = search.best_score_ci_
    print(f"{rule}: picks {search.best_estimator_name_} {search.best_params_}, validation score "
          f"{search.best_score_:.3f} [{lo:.3f}, {hi:.3f}]")

# %%
# Every candidate, with its bootstrap interval and whether the paired
# bootstrap tells it from the winner (``distinguishable``): candidates it
# cannot tell apart are as good a choice as far as this validation set can
# say.
res = searches["inferred_worst_group"].results_
print(res[["estimator", "params", "score", "ci_low", "ci_high", "distinguishable", "fit_time"]]
      .sort_values("score", ascending=False).to_string(index=False))

# %%
# The test worst-group accuracy of each pick (the group labels are used
# here, to evaluate, for the first time).
for rule, search in searches.items():
    report = group_accuracies(te.y, search.predict(te.X), group_labels=te.group_labels, confidence_level=0.95)
    lo, hi = report.worst_group_ci
    print(f"{rule}: test accuracy {report.accuracy:.3f}, worst-group accuracy "
          f"{report.worst_group_accuracy:.3f} [{lo:.3f}, {hi:.3f}]")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5 if QUICK else 8))
for ax, (rule, search) in zip(axes, searches.items()):
    plot_search_results(search, ax=ax, top=12, title=f"selection='{rule}'")
plt.tight_layout()
if not QUICK:
    plt.show()
