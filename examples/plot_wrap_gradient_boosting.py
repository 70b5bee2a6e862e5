"""
Group-robust gradient boosting on a table
=========================================

Gradient boosting is the workhorse of tabular data, and a spurious
attribute hurts it as much as it hurts a linear model. The meta-estimators
of :mod:`skgroup.meta` wrap any scikit-learn classifier whose ``fit`` takes
``sample_weight``: here ``HistGradientBoostingClassifier`` on the CelebA
attribute table (is the hair blond, from 38 other attributes; the spurious
attribute is the sex: blond men are 0.9% of the training rows), before and
after group balancing and Group DRO by reductions.

It needs the CelebA attribute files in the data folder
(``$SKGROUP_DATA/celeba``, see ``docs/quickstart.rst``).
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from skgroup.datasets import get_data_home, load_celeba_attributes
from skgroup.meta import GroupBalancedMetaClassifier, GroupDROMetaClassifier
from skgroup.metrics import group_accuracies

# SKGROUP_EXAMPLES_QUICK=1: smaller data and fewer rounds (the test suite runs the examples so)
QUICK = os.environ.get("SKGROUP_EXAMPLES_QUICK", "0") != "0"

home = get_data_home(required=False)
AVAILABLE = home is not None and (home / "celeba" / "list_attr_celeba.zip").exists()
if not AVAILABLE:
    print("Skipped: needs the CelebA attribute files ($SKGROUP_DATA/celeba/list_attr_celeba.zip and "
          "list_eval_partition.txt.gz).")


# %%
# The table as pandas DataFrames: the meta-estimators pass them to the base
# estimator untouched (column names, dtypes, categorical columns).
def frames(split, rows=None):
    X = pd.DataFrame(split.X, columns=names)
    if rows is not None:
        return X.iloc[rows].reset_index(drop=True), split.y[rows], split.group_labels[rows]
    return X, split.y, split.group_labels


if AVAILABLE:
    data = load_celeba_attributes()
    names = data.feature_names
    rng = np.random.RandomState(0)
    keep = np.sort(rng.choice(len(data.train.y), 30_000, replace=False)) if QUICK else None
    X, y, g = frames(data.train, keep)
    X_val, y_val, g_val = frames(data.val)
    X_test, y_test, g_test = frames(data.test)
    print(f"{len(y)} training rows; rows per group {np.bincount(g).tolist()} ({', '.join(data.group_names)})")

# %%
# Before: plain gradient boosting. After: the same model, with every group
# weighing the same (Idrissi et al., 2022), and Group DRO by reductions
# (each round refits the model with the group weights of an
# exponentiated-gradient adversary; the validation split selects how many
# rounds the returned average keeps).
if AVAILABLE:
    hgb = HistGradientBoostingClassifier(max_iter=50 if QUICK else 100, random_state=0)
    rounds = 3 if QUICK else 10
    models = {
        "gradient boosting": hgb.fit(X, y),
        "+ group balancing": GroupBalancedMetaClassifier(hgb, random_state=0).fit(X, y, group_labels=g),
        "+ Group DRO (reductions)": GroupDROMetaClassifier(hgb, n_iter=rounds, random_state=0).fit(
            X, y, group_labels=g, X_val=X_val, y_val=y_val, group_labels_val=g_val),
    }
    reports = {}
    for name, model in models.items():
        reports[name] = group_accuracies(y_test, model.predict(X_test), group_labels=g_test)
        r = reports[name]
        print(f"{name:26s} test accuracy {r.accuracy:.3f}, worst-group accuracy {r.worst_group_accuracy:.3f}")

# %%
# Test accuracy of each group, before and after.
if AVAILABLE:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(reports)
    for j, (name, r) in enumerate(reports.items()):
        axes[0].bar(np.arange(4) + j * width, r.accuracies, width, label=name)
    axes[0].set_xticks(np.arange(4) + width)
    axes[0].set_xticklabels([n.replace(", ", "\n") for n in data.group_names], fontsize=8)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)

    # The game: the group weights q each round was fitted with, and the worst
    # group's training loss of the average of the first t rounds (the
    # quantity the reductions bound; it falls as q moves to the worst group).
    dro = models["+ Group DRO (reductions)"]
    t = np.arange(1, dro.n_iter_ + 1)
    for k, name in enumerate(data.group_names):
        axes[1].plot(t, dro.history_["q"][:, k], marker="o", label=f"q: {name}")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("group weight q")
    twin = axes[1].twinx()
    twin.plot(t, dro.history_["mixture_worst_group_loss"], "k--", label="worst group loss of the average")
    twin.set_ylabel("training log loss")
    axes[1].legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="upper right")
    print(f"Group DRO: validation selects the average of the first {dro.n_average_} of {dro.n_iter_} rounds")
    plt.tight_layout()
    if not QUICK:
        plt.show()
