"""Which groups an error set (or any selected subset of rows) is made of.

JTT (Liu et al., ICML 2021, Sec. 5.3 and Tables 2-5) explains its gains by
the composition of the identification model's error set E: for each group
g of the training data,

* precision  ``|E ∩ g| / |E|``  (the fraction of the error set from g),
* recall     ``|E ∩ g| / |g|``  (the fraction of g caught in the error set),
* empirical rate ``|g| / n``    (the fraction of the training data in g),
* enrichment = precision / empirical rate: how many times more frequent g
  is in E than in the data (1 means no enrichment).
"""

import warnings

import numpy as np

from .._groups import check_group_labels
from ..utils._tables import make_table

__all__ = ["error_set_analysis", "misclassified", "subset_mask"]


def subset_mask(subset, n_samples, *, name="error_set", against="group_labels"):
    """A boolean mask of length ``n_samples`` from a mask or an array of row indices."""
    arr = np.asarray(subset)
    if arr.dtype == bool:
        if arr.ndim != 1 or arr.shape[0] != n_samples:
            raise ValueError(
                f"{name} is a boolean mask of shape {arr.shape} but {against} has "
                f"{n_samples} rows: pass one True/False per sample of {against}, or row indices."
            )
        return arr
    if arr.size == 0:
        return np.zeros(n_samples, dtype=bool)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be a boolean mask (n_samples,) or a 1-D array of integer row "
            f"indices; got dtype {arr.dtype} and shape {arr.shape}."
        )
    if arr.shape[0] == n_samples and n_samples > 2 and np.isin(arr, (0, 1)).all():
        raise ValueError(
            f"{name} is an integer array of 0/1 with one entry per sample: pass a mask as "
            "booleans (np.asarray(mask, dtype=bool)); integers are read as row indices."
        )
    if np.unique(arr).shape[0] != arr.shape[0]:
        raise ValueError(f"{name} holds repeated row indices; each row is in the set or not.")
    if arr.min() < 0 or arr.max() >= n_samples:
        raise ValueError(
            f"{name} holds row indices outside [0, {n_samples}) ({against} has {n_samples} rows)."
        )
    mask = np.zeros(n_samples, dtype=bool)
    mask[arr] = True
    return mask


def misclassified(estimator, X, y):
    """Boolean mask of the rows a fitted classifier gets wrong (JTT's error set).

    ``E = {i : f_id(x_i) != y_i}`` (JTT, Algorithm 1), computed with the
    estimator's ``predict``.
    """
    y = np.asarray(y)
    pred = np.asarray(estimator.predict(X))
    if pred.shape != y.shape:
        raise ValueError(f"y has shape {y.shape} but the predictions have shape {pred.shape}.")
    return pred != y


def _resolve_error_set(error_set, n_samples):
    if hasattr(error_set, "error_set_"):  # a fitted JTTClassifier
        error_set = error_set.error_set_
    elif hasattr(error_set, "predict") and hasattr(error_set, "fit"):
        raise TypeError(
            "error_set is an estimator without an `error_set_` attribute; pass "
            "misclassified(estimator, X, y) (or a fitted JTTClassifier) instead."
        )
    return subset_mask(error_set, n_samples)


def error_set_analysis(error_set, group_labels):
    """Per-group precision, recall, empirical rate and enrichment of an error set.

    JTT (Liu et al., 2021, Sec. 5.3, Tables 2-5): for the error set E and
    each group g, precision ``|E & g| / |E|``, recall ``|E & g| / |g|``,
    empirical rate ``|g| / n`` and enrichment = precision / empirical rate.

    Parameters
    ----------
    error_set : array-like of bool (n_samples,), row indices, or fitted JTTClassifier
        The selected training rows (for JTT: those the identification model
        misclassifies, see :func:`misclassified`); a fitted estimator with an
        ``error_set_`` mask is read directly.
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
        Group ids of the same rows, or a boolean membership matrix
        (overlapping groups: the precisions then need not sum to 1).

    Returns
    -------
    table : DataFrame or dict of columns
        One row per group: ``group``, ``group_size`` (``|g|``), ``n_in_set``
        (``|E & g|``), ``precision`` (``|E & g| / |E|``), ``recall``
        (``|E & g| / |g|``), ``empirical_rate`` (``|g| / n``), ``enrichment``
        (precision / empirical rate). Undefined ratios (an empty error set, an empty group) are NaN,
        with a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from skgroup.analysis import error_set_analysis
    >>> g = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    >>> E = np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
    >>> t = error_set_analysis(E, g)
    >>> [round(float(v), 3) for v in t["enrichment"]]
    [0.444, 2.667]
    """
    n = np.shape(group_labels)[0]
    membership = check_group_labels(group_labels, n)
    mask = _resolve_error_set(error_set, n)
    M = membership.matrix
    sizes = M.sum(axis=0).astype(np.int64)
    in_set = M[mask].sum(axis=0).astype(np.int64)
    n_set = int(mask.sum())
    rate = sizes / n
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = in_set / n_set if n_set else np.full(sizes.shape, np.nan)
        recall = np.where(sizes > 0, in_set / np.maximum(sizes, 1), np.nan)
        enrichment = np.where(sizes > 0, precision / np.where(sizes > 0, rate, 1.0), np.nan)
    if n_set == 0:
        warnings.warn(
            "The error set is empty (the identification model makes no training "
            "error): precision and enrichment are undefined (NaN). Train the "
            "identification model for fewer epochs or with more regularisation.",
            UserWarning,
            stacklevel=2,
        )
    if np.any(sizes == 0):
        empty = [g for g, s in zip(membership.names, sizes) if s == 0]
        warnings.warn(
            f"Groups {empty} have no samples: their recall and enrichment are NaN.",
            UserWarning,
            stacklevel=2,
        )
    return make_table(
        {
            "group": list(membership.names),
            "group_size": sizes,
            "n_in_set": in_set,
            "precision": precision.astype(np.float64),
            "recall": recall.astype(np.float64),
            "empirical_rate": rate.astype(np.float64),
            "enrichment": enrichment.astype(np.float64),
        }
    )
