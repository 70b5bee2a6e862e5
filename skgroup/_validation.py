"""Validation data for early stopping: when it is on, the internal split, and the monitor.

Shared by the head estimators and the fine-tuning path, which take the same
``early_stopping``, ``validation_fraction`` and ``monitor`` parameters.
"""

import numpy as np
from sklearn.model_selection import train_test_split

from ._groups import GroupMembership

__all__ = ["validation_enabled", "split_validation_rows", "take_groups", "resolve_monitor"]


def validation_enabled(early_stopping, X_val, y_val, group_labels_val):
    """Whether a fit validates, with the errors for inconsistent arguments.

    'auto' validates exactly when ``X_val`` is given (as
    ``HistGradientBoostingClassifier`` does).
    """
    given = X_val is not None or y_val is not None
    if given and (X_val is None or y_val is None):
        raise ValueError("Pass both X_val and y_val (validation features and labels), or neither.")
    if group_labels_val is not None and not given:
        raise ValueError("group_labels_val was given without X_val and y_val: pass all three.")
    if given and early_stopping is False:
        raise ValueError(
            "X_val and y_val were passed to fit while early_stopping=False: set "
            "early_stopping=True or 'auto' to use them, or do not pass them."
        )
    return early_stopping is True or (early_stopping == "auto" and given)


def split_validation_rows(y_enc, groups, fraction, seed):
    """Sorted (training rows, validation rows): a ``fraction`` held out, stratified by group, else class."""
    n = y_enc.shape[0]
    n_val = int(np.ceil(fraction * n))
    strata = y_enc
    if groups is not None and groups.disjoint:
        ids = groups.ids()
        if np.bincount(ids).min() >= 2 and n_val >= groups.n_groups and n - n_val >= groups.n_groups:
            strata = ids
    counts = np.bincount(strata)
    counts = counts[counts > 0]
    what, k = ("class", "classes") if strata is y_enc else ("group", "groups"), counts.shape[0]
    if counts.min() < 2:
        raise ValueError(
            f"one {what[0]} has a single row of the {n}, which cannot be in both the training and the validation "
            "rows of an internal split (whatever the validation_fraction): pass X_val, y_val (validation rows of "
            "your own), or early_stopping=False."
        )
    if n_val < k:
        raise ValueError(
            f"validation_fraction={fraction} of {n} rows holds out {n_val} row{'s' if n_val != 1 else ''}, fewer "
            f"than the {k} {what[1]} it must hold: pass X_val, y_val, or a larger validation_fraction."
        )
    if n - n_val < k:
        raise ValueError(
            f"validation_fraction={fraction} of {n} rows leaves {n - n_val} training rows, fewer than the {k} "
            f"{what[1]} they must hold: pass X_val, y_val, or a smaller validation_fraction."
        )
    train_idx, val_idx = train_test_split(np.arange(n), test_size=n_val, stratify=strata,
                                          random_state=int(seed) % (2**32))
    return np.sort(train_idx), np.sort(val_idx)


def take_groups(groups, rows):
    """The membership of some rows (None stays None)."""
    if groups is None:
        return None
    return GroupMembership(np.ascontiguousarray(groups.matrix[rows]), groups.names, groups.disjoint)


def resolve_monitor(monitor, has_group_labels):
    """'auto' -> worst-group accuracy when the validation rows have group labels, else worst-class."""
    if monitor == "auto":
        return "worst_group_accuracy" if has_group_labels else "worst_class_accuracy"
    if monitor == "worst_group_accuracy" and not has_group_labels:
        raise ValueError(
            "monitor='worst_group_accuracy' needs group labels for the validation rows: pass "
            "group_labels_val= with X_val (or group_labels= for the internal validation_fraction "
            "split), or monitor 'worst_class_accuracy' or 'bias_unsupervised', which need none."
        )
    return monitor
