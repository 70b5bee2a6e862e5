"""The fit protocol that heads and fine-tuning share.

A fit of any skgroup estimator, on cached features or on a whole backbone,
does the same around its method's plan: encode the labels, draw a seed from
``random_state``, hold out validation rows (``X_val`` or a stratified
``validation_fraction``) and choose the monitor, run the plan on an executor,
and store what training recorded (``history_``, ``validation_scores_``,
``best_iteration_``). Only how inputs are checked and subset differs (a
feature array, or texts and images behind a dataset), so those two
operations are passed in.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from .._groups import GroupMembership, check_group_labels
from ._head import ValidationData

__all__ = [
    "FitData",
    "encode_labels",
    "fit_classes",
    "history_columns",
    "resolve_monitor",
    "resolve_seed",
    "split_fit_data",
    "split_validation_rows",
    "store_fit_result",
    "take_groups",
    "validation_enabled",
]


def resolve_seed(random_state):
    """The integer seed of a fit: ``random_state`` itself, or one draw from its generator (None: numpy's)."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if random_state is None:
        return int(np.random.randint(np.iinfo(np.int32).max))
    return int(random_state) % (2**32)


def _label_kind(values):
    """'bool', 'number' or 'str' (None: a mix, or something else) of an array of labels."""
    kind = values.dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iuf":
        return "number"
    if kind in "US":
        return "str"
    if kind == "O":
        kinds = {"bool" if isinstance(v, (bool, np.bool_)) else "number" if isinstance(v, (int, float, np.number))
                 else "str" if isinstance(v, str) else None for v in values.ravel().tolist()}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def encode_labels(classes, y, name="y"):
    """Positions of the labels ``y`` in the sorted ``classes``; unknown labels are an error.

    Labels of another type than the classes (strings against numbers, bools
    against ints) are an error too, not converted: ``'1'`` is not ``1``.
    """
    y = column_or_1d(y, warn=True)
    classes = np.asarray(classes)
    theirs, ours = _label_kind(y), _label_kind(classes)
    if y.shape[0] and (theirs is None or theirs != ours):
        raise ValueError(
            f"{name} holds labels of type {theirs or 'mixed ' + str(sorted({type(v).__name__ for v in y.tolist()}))} "
            f"(e.g. {y[:3].tolist()}) but the model's classes are of type {ours} ({classes[:5].tolist()}): "
            f"give {name} the type of the training labels y."
        )
    pos = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    unknown = classes[pos] != y
    if np.any(unknown):
        raise ValueError(
            f"{name} holds labels the model was not fitted on: "
            f"{np.unique(y[unknown])[:5].tolist()}; its classes are {classes.tolist()}."
        )
    return pos


def fit_classes(y, who, checked=False):
    """(sorted classes, encoded y) of training labels, at least two classes.

    ``checked``: ``check_classification_targets`` already ran on ``y`` (it is not repeated).
    """
    y = column_or_1d(np.asarray(y), warn=True)
    if not checked:
        check_classification_targets(y)
    classes, y_enc = _classes_and_codes(y)
    if classes.shape[0] < 2:
        raise ValueError(
            f"{who} needs samples of at least 2 classes in y, but the data contains only one class: "
            f"{classes[0]!r}."
        )
    return classes, y_enc.ravel()


def _classes_and_codes(y):
    """``np.unique(y, return_inverse=True)``: integer labels of a small range by counting
    (~0.3 ms for 100,000 labels, against 3 ms), others by unique and a search among the classes."""
    if y.dtype.kind in "iu" and y.shape[0]:
        low, high = int(y.min()), int(y.max())
        if high - low < max(1 << 16, y.shape[0]) and -(1 << 62) < low and high < 1 << 62:
            offset = y.astype(np.intp, copy=False) - low
            present = np.bincount(offset, minlength=high - low + 1) > 0
            codes = np.cumsum(present) - 1  # the position of each present value among the classes
            return (np.flatnonzero(present) + low).astype(y.dtype), codes[offset]
    classes = np.unique(y)
    return classes, np.searchsorted(classes, y)


#: Rows of every class an automatic validation split must hold (see split_fit_data).
MIN_HELD_OUT_PER_CLASS = 20


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


def resolve_monitor(monitor, has_group_labels, auto=None):
    """'auto' -> ``auto`` when a method names its own (ERM: the validation loss), else worst-group accuracy
    when the validation rows have group labels, else worst-class accuracy."""
    if monitor == "auto":
        if auto is not None:
            return auto
        return "worst_group_accuracy" if has_group_labels else "worst_class_accuracy"
    if monitor == "worst_group_accuracy" and not has_group_labels:
        raise ValueError(
            "monitor='worst_group_accuracy' needs group labels for the validation rows: pass "
            "group_labels_val= with X_val (or group_labels= for the internal validation_fraction "
            "split), or monitor 'worst_class_accuracy' or 'bias_unsupervised', which need none."
        )
    return monitor


@dataclass
class FitData:
    """The training rows of a fit after the validation split, and its validation data."""

    X: object
    y: np.ndarray
    groups: object
    sample_weight: object
    #: positions of the training rows in the data given to ``fit``
    rows: np.ndarray
    validation: object = None
    #: EarlyStopping's settings (monitor, patience, restore_best, and select_lbfgs: whether full-batch
    #: L-BFGS stages select an iteration too), or None without validation
    stopping: dict = None


def split_fit_data(estimator, X, y_enc, groups, *, X_val=None, y_val=None, group_labels_val=None,
                   sample_weight=None, seed=0, check_X_val, subset):
    """Hold out the validation rows of a fit and choose its monitor.

    ``estimator`` provides ``early_stopping``, ``validation_fraction``,
    ``monitor``, ``n_iter_no_change``, ``restore_best`` and ``classes_``;
    ``check_X_val(X_val) -> X_val`` validates given validation inputs and
    ``subset(X, rows)`` takes rows of the training inputs.
    """
    rows = np.arange(y_enc.shape[0])
    # a method whose last epoch is unreliable (``_auto_validation_split``) holds out its validation_fraction
    # under 'auto' when no X_val is given and the split gives every class enough rows to be scored (as
    # HistGradientBoosting's 'auto' does on large data only)
    held_out = (estimator.early_stopping == "auto" and getattr(estimator, "_auto_validation_split", False)
                and np.bincount(y_enc).min() * estimator.validation_fraction >= MIN_HELD_OUT_PER_CLASS)
    if not (validation_enabled(estimator.early_stopping, X_val, y_val, group_labels_val) or held_out):
        return FitData(X, y_enc, groups, sample_weight, rows)
    if X_val is not None:
        X_val = check_X_val(X_val)
        y_val = encode_labels(estimator.classes_, y_val, "y_val")
        if y_val.shape[0] != len(X_val):
            raise ValueError(f"X_val has {len(X_val)} rows but y_val has {y_val.shape[0]}.")
        val_groups = None
        if group_labels_val is not None:
            val_groups = check_group_labels(group_labels_val, y_val.shape[0], name="group_labels_val")
    else:
        rows, val_idx = split_validation_rows(y_enc, groups, estimator.validation_fraction, seed)
        X_val, y_val, val_groups = subset(X, val_idx), y_enc[val_idx], take_groups(groups, val_idx)
        X, y_enc, groups = subset(X, rows), y_enc[rows], take_groups(groups, rows)
        if sample_weight is not None:
            sample_weight = sample_weight[rows]
    monitor = resolve_monitor(estimator.monitor, val_groups is not None, getattr(estimator, "_auto_monitor", None))
    validation = ValidationData(X_val, y_val, membership=None if val_groups is None else val_groups.matrix)
    # an L-BFGS iteration is not an epoch: its iterates approach one optimum, and selecting one of the
    # first on a noisy validation score stops short of it; L-BFGS stages select only when asked to
    stopping = {"monitor": monitor, "patience": estimator.n_iter_no_change, "restore_best": estimator.restore_best,
                "select_lbfgs": estimator.early_stopping is True}
    return FitData(X, y_enc, groups, sample_weight, rows, validation, stopping)


def history_columns(history):
    """Per-epoch records (list of dicts) as columns: a dict of arrays, NaN where a record lacks a key."""
    keys = []
    for record in history:
        keys += [k for k in record if k not in keys]
    out = {}
    for k in keys:
        values = [record.get(k) for record in history]
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            width = max(len(v) for v in values if v is not None)
            out[k] = np.array([v if v is not None else [np.nan] * width for v in values], dtype=np.float64)
        else:
            out[k] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def store_fit_result(estimator, result, validated):
    """What training recorded, on the estimator: ``n_iter_``, ``loss_curve_``, ``history_``,
    ``validation_scores_`` and ``best_iteration_`` (of the plan's last stage)."""
    history = result.history
    estimator.n_iter_ = len(history)
    estimator.loss_curve_ = [r.get("train_loss", np.nan) for r in history]
    estimator.history_ = history_columns(history)
    if validated and any(k.startswith("val_") for k in estimator.history_):
        estimator.validation_scores_ = {k[4:]: v for k, v in estimator.history_.items() if k.startswith("val_")}
        # without a selection (an L-BFGS stage under early_stopping='auto') the last iterate is kept
        estimator.best_iteration_ = len(history) if result.best is None else int(result.best["epoch"])
    else:
        estimator.validation_scores_ = None
        estimator.best_iteration_ = None
