"""Accuracy metrics for group robustness.

The worst-group accuracy is the field's headline number; the worst-class
accuracy and the bias-unsupervised score are the model-selection criteria of
LaBonte et al. (2023, "The Group Robustness is in the Details") for when no
group labels exist at all.
"""

import warnings

import numpy as np
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_consistent_length, column_or_1d

from .._groups import check_group_labels

__all__ = [
    "accuracy_by_cell",
    "accuracy_by_group",
    "below_majority",
    "EmptyCellWarning",
    "MissingGroupWarning",
    "worst_group_accuracy",
    "worst_class_accuracy",
    "bias_unsupervised_score",
    "class_difference",
    "class_diff_of",
    "per_group_accuracy",
]


class MissingGroupWarning(UserWarning):
    """A group that should be evaluated has no sample in the evaluated data."""


class EmptyCellWarning(MissingGroupWarning):
    """A (class, biased prediction) cell of the bias-unsupervised score has no sample."""


def accuracy_by_cell(correct, cells, n_cells):
    """(accuracy, count) of each of ``n_cells`` cells; ``cells`` are integer codes in [0, n_cells).

    The kernel of the worst-class accuracy (cells: classes) and of the
    bias-unsupervised score (cells: (class, biased prediction) pairs), on
    validated arrays; an empty cell's accuracy is NaN.
    """
    counts = np.bincount(cells, minlength=n_cells)
    hits = np.bincount(cells, weights=np.asarray(correct, dtype=np.float64), minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts, counts


def accuracy_by_group(correct, matrix):
    """(accuracy, count) of each column of a boolean membership matrix; NaN for an empty group."""
    matrix = np.asarray(matrix)
    counts = matrix.sum(axis=0)
    hits = np.asarray(correct, dtype=np.float64) @ matrix
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts, counts


def below_majority(y_true, y_pred):
    """Whether predictions do worse than always answering the most frequent class, and the numbers.

    The constant answer has accuracy ``r`` (the majority rate) and balanced
    accuracy (mean recall over the classes) ``1 / K``. Predictions are
    *below the majority class* when their accuracy is below ``r`` **and**
    their balanced accuracy is no higher than ``1 / K``: worse on average
    and no better class by class. A robust model that trades average
    accuracy for the small classes on imbalanced data (accuracy below ``r``,
    balanced accuracy well above ``1 / K``) is not; a model that is worse
    than the constant on both has learned nothing usable.

    Returns
    -------
    below : bool
    numbers : dict
        ``accuracy``, ``majority_rate``, ``balanced_accuracy``, ``chance``.
    """
    y_true, y_pred = _check_predictions(y_true, y_pred)
    classes, codes = np.unique(y_true, return_inverse=True)
    return below_majority_codes(y_true == y_pred, codes.ravel(), classes.shape[0])


def below_majority_codes(correct, codes, n_codes):
    """:func:`below_majority`'s kernel on validated arrays: whether each prediction is right, and the
    true classes as integer codes in [0, n_codes) (codes no row has are left out)."""
    correct = np.asarray(correct, dtype=bool)
    recall, counts = accuracy_by_cell(correct, codes, n_codes)
    present = counts > 0
    numbers = {
        "accuracy": float(correct.mean()),
        "majority_rate": float(counts.max() / counts.sum()),
        "balanced_accuracy": float(recall[present].mean()),
        "chance": 1.0 / int(present.sum()),
    }
    below = (numbers["accuracy"] < numbers["majority_rate"]
             and numbers["balanced_accuracy"] <= numbers["chance"] + 1e-12)
    return below, numbers


def _check_predictions(y_true, y_pred):
    """1-D labels and predictions of one length and of one label type.

    Labels of different types (strings against numbers, class labels against
    continuous scores) never compare equal, so the accuracy would silently
    read 0; scikit-learn's :func:`~sklearn.utils.multiclass.unique_labels`
    raises its "Mix of label input types" / "Mix type of y" errors instead.
    """
    y_true = column_or_1d(y_true, warn=True)
    y_pred = column_or_1d(y_pred, warn=True)
    check_consistent_length(y_true, y_pred)
    if y_true.shape[0] == 0:
        raise ValueError("y_true is empty: there is nothing to score.")
    _check_one_type(y_true, "y_true")
    _check_one_type(y_pred, "y_pred")
    unique_labels(y_true, y_pred)
    return y_true, y_pred


def _value_kind(v):
    """'bool', 'number' or the type's name: values of one kind compare as labels (1 == 1.0, not '1')."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _check_one_type(labels, name):
    """An object array of labels of several kinds (ints and strings) cannot be sorted or compared:
    a ValueError naming the argument, not numpy's TypeError from inside a sort."""
    if labels.dtype != object:
        return
    kinds = {_value_kind(v) for v in labels.tolist()}
    if len(kinds) > 1:
        types = sorted({type(v).__name__ for v in labels.tolist()})
        raise ValueError(
            f"{name} mixes labels of types {', '.join(types)}, which cannot be compared or sorted: give every "
            f"label one type, e.g. all strings (np.asarray({name}).astype(str)) or all ints."
        )


def per_group_accuracy(y_true, y_pred, *, group_labels, expected_groups=None):
    """Accuracy and sample count of each non-empty group.

    Returns
    -------
    names : list
        Group names (1-D ids, or column names/indices of a membership matrix).
    accuracies : ndarray of shape (n_nonempty_groups,)
    counts : ndarray of shape (n_nonempty_groups,)
    """
    y_true, y_pred = _check_predictions(y_true, y_pred)
    membership = check_group_labels(group_labels, y_true.shape[0])
    accuracies, counts = accuracy_by_group(y_true == y_pred, membership.matrix)
    names = list(membership.names)
    empty = counts == 0
    missing = [n for n, e in zip(names, empty) if e]
    if expected_groups is not None:
        expected_groups = list(expected_groups)
        kinds = {_value_kind(n) for n in names}
        foreign = [g for g in expected_groups if _value_kind(g) not in kinds]
        if foreign:
            # '0' for the group 0 would be reported missing while the group is there
            raise ValueError(
                f"expected_groups holds {foreign[:5]} of type {sorted({type(g).__name__ for g in foreign})} but "
                f"the group ids of group_labels are of type {sorted({type(_item(n)).__name__ for n in names})} "
                f"({names[:5]}): list the ids as group_labels holds them."
            )
        present = {n for n, e in zip(names, empty) if not e}
        missing += [g for g in expected_groups if g not in present and g not in missing]
    if missing:
        warnings.warn(
            f"Groups {missing} have no samples here and are left out of the "
            "per-group accuracies; the worst-group accuracy is over the other groups "
            "only. Evaluate on data that holds every group (e.g. stratify the split "
            "by group) for a faithful number.",
            MissingGroupWarning,
            stacklevel=3,
        )
    keep = ~empty
    if not keep.any():
        raise ValueError("Every group in group_labels is empty: no group can be scored.")
    names = [n for n, k in zip(names, keep) if k]
    return names, accuracies[keep], counts[keep]


def worst_group_accuracy(y_true, y_pred, *, group_labels, expected_groups=None):
    """Minimum over groups of the accuracy within the group.

    .. math:: \\mathrm{WGA} = \\min_{g:\\,n_g>0} \\frac{1}{n_g}\\sum_{i \\in g} [\\hat y_i = y_i]

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
        One group id per sample, or a boolean membership matrix for
        overlapping groups (as CivilComments-WILDS evaluates): numpy bool or
        a DataFrame of bool columns. A 2-D integer array is refused (it may
        be 0/1 membership or (label, attribute) pairs; see
        :func:`make_group_labels`). Rows in no group are not scored, with an
        :class:`UngroupedRowsWarning`.
    expected_groups : iterable, default=None
        Group ids that should be present; each absent one raises a
        :class:`MissingGroupWarning` (an absent group would otherwise make the
        minimum look better than it is). Empty columns of a membership matrix
        always warn.

    Returns
    -------
    float
    """
    _, accuracies, _ = per_group_accuracy(
        y_true, y_pred, group_labels=group_labels, expected_groups=expected_groups
    )
    return float(accuracies.min())


def worst_class_accuracy(y_true, y_pred):
    """Minimum over true classes of the recall of the class.

    Needs no group labels: LaBonte et al. (2023) show it selects models nearly
    as well as worst-group accuracy on the class-imbalanced benchmarks.
    """
    y_true, y_pred = _check_predictions(y_true, y_pred)
    classes, codes = np.unique(y_true, return_inverse=True)
    accuracies, _ = accuracy_by_cell(y_true == y_pred, codes.ravel(), classes.shape[0])
    return float(accuracies.min())


def class_diff_of(accuracies):
    """Mean absolute difference of the accuracies over all pairs (0.0 for a single accuracy).

    The kernel of :func:`class_difference` on per-class accuracies, without
    input checks (the engine calls it every epoch).
    """
    a = np.asarray(accuracies, dtype=np.float64).ravel()
    if a.shape[0] < 2:
        return 0.0
    i, j = np.triu_indices(a.shape[0], k=1)
    return float(np.mean(np.abs(a[i] - a[j])))


def class_difference(y_true, y_pred):
    """ClassDiff: the mean absolute difference between the recalls of every pair of classes.

    The label-free selection criterion of Li et al. (BAM, "Bias Amplification
    Enhances Minority Group Performance", TMLR 2024), as SubpopBench runs it
    (``ValClassDiff``): a model whose classes are recalled equally well is
    preferred, which on class-imbalanced spurious benchmarks tracks the worst
    group. Lower is better; 0 when every class is recalled equally.

    .. math:: \\mathrm{ClassDiff} = \\binom{K}{2}^{-1} \\sum_{i<j} |\\mathrm{acc}_i - \\mathrm{acc}_j|

    SubpopBench sums over the pairs instead of averaging; the two differ by
    the constant :math:`\\binom{K}{2}` (equal for two classes), which changes
    no ranking. Classes are those present in ``y_true``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)

    Returns
    -------
    float
    """
    y_true, y_pred = _check_predictions(y_true, y_pred)
    classes, codes = np.unique(y_true, return_inverse=True)
    accuracies, _ = accuracy_by_cell(y_true == y_pred, codes.ravel(), classes.shape[0])
    return class_diff_of(accuracies)


def bias_unsupervised_score(y_true, y_pred, *, y_pred_biased):
    """Bias-unsupervised validation score (LaBonte et al., 2023, eq. 1).

    The biased predictions come from an ERM model trained without class
    balancing; its predicted class stands in for the unknown spurious
    attribute. Eq. 1 averages, over the K x K cells (true class y, biased
    prediction b), the accuracy within the cell. The K classes are those in
    ``y_true`` or ``y_pred_biased``.

    **Empty cells are left out of the average.** A cell with no validation
    row has no accuracy: when the biased model never predicts class b for a
    row of class y, the score is the mean over the non-empty cells only,
    which makes it easier to score well (the missing cell is often the one a
    spurious shortcut gets wrong). A :class:`EmptyCellWarning` names the
    empty cells; use more validation rows, or prefer the worst-class
    accuracy when a cell is empty:

    .. math:: \\frac{1}{|\\mathcal{C}|} \\sum_{(y,b) \\in \\mathcal{C}}
              \\frac{1}{n_{y,b}} \\sum_{i:\\,y_i=y,\\,b_i=b} [\\hat y_i = y_i],
              \\qquad \\mathcal{C} = \\{(y, b) : n_{y,b} > 0\\}

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    y_pred_biased : array-like of shape (n_samples,)
        Predictions of the biased model, in the label space of ``y_true``
        (or any coding of its classes: only the cells matter).

    Returns
    -------
    float
    """
    y_true, y_pred = _check_predictions(y_true, y_pred)
    y_pred_biased = column_or_1d(y_pred_biased)
    check_consistent_length(y_true, y_pred_biased)
    _check_one_type(y_pred_biased, "y_pred_biased")
    note = ""
    if _value_kind(y_true[0]) == _value_kind(y_pred_biased[0]):
        # one label space: the K classes are those of either, and a class the biased model never
        # predicts leaves its cells empty
        t_labels = b_labels = np.unique(np.concatenate([y_true, y_pred_biased]))
        t_rank = np.searchsorted(t_labels, y_true)
        b_rank = np.searchsorted(b_labels, y_pred_biased)
    else:
        # another coding of the classes (documented as allowed): only which rows share a value matters
        t_labels, t_rank = np.unique(y_true, return_inverse=True)
        b_labels, b_rank = np.unique(y_pred_biased, return_inverse=True)
        if b_labels.shape[0] > t_labels.shape[0]:
            raise ValueError(
                f"y_pred_biased takes {b_labels.shape[0]} values but y_true has {t_labels.shape[0]} classes: the "
                "biased predictions must be the biased model's classes (in y_true's labels or any coding of them)."
            )
        if b_labels.shape[0] < t_labels.shape[0]:
            note = (f" The biased model never predicts {t_labels.shape[0] - b_labels.shape[0]} of the "
                    f"{t_labels.shape[0]} classes, whose cells (unnamed in its coding) are empty too.")
    kt, kb = t_labels.shape[0], b_labels.shape[0]
    cell = t_rank.ravel() * kb + b_rank.ravel()
    accuracies, counts = accuracy_by_cell(y_true == y_pred, cell, kt * kb)
    nonempty = counts > 0
    if not nonempty.all() or note:
        empty = [(_item(t_labels[c // kb]), _item(b_labels[c % kb])) for c in np.flatnonzero(~nonempty)]
        shown = f"the (class, biased prediction) cells {empty} have no rows and are" if empty else "empty cells are"
        warnings.warn(
            f"bias_unsupervised_score: {shown} left out of the average, which is over the "
            f"{int(nonempty.sum())} non-empty cells of {kt * kt}.{note} Score on more validation rows, or select "
            "with the worst-class accuracy, which needs no cell to be filled.",
            EmptyCellWarning,
            stacklevel=2,
        )
    return float(np.mean(accuracies[nonempty]))


def _item(v):
    return v.item() if hasattr(v, "item") else v
