"""Per-sample last-layer gradient norms, by group (GradTune, Fig. 2 and 4).

GradTune's premise is that on held-out data the samples of the groups an ERM
model fails on have large per-sample gradients at the last layer; the
distribution of those norms per group shows whether a model's gradients
separate the groups at all.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._groups import check_group_labels
from ._tables import make_table, table_columns

__all__ = ["gradient_norms_by_group", "gradient_norm_summary"]


def _closed_form_norms(estimator, X, y):
    """Norm of the cross-entropy gradient w.r.t. the last layer, per sample.

    For a head with last-layer input ``h`` (X itself for a linear head),
    softmax probabilities ``p`` and one-hot label ``e_y``, the gradient of
    ``CE(W h + b, y)`` is ``(p - e_y) h^T`` for W and ``p - e_y`` for b, so
    its Frobenius norm over (W, b) is exactly

    .. math:: \\lVert \\nabla_{W,b} \\ell_i \\rVert = \\lVert p_i - e_{y_i} \\rVert_2 \\sqrt{\\lVert h_i \\rVert_2^2 + 1}

    Computed in closed form (no autograd), in chunks. The same definition
    as GradTune's ``last_layer_gradient_norms``, which
    :func:`gradient_norms_by_group` uses (so the analysis shows what GradTune
    selects on); this copy is the fallback should that module be absent.

    Parameters
    ----------
    estimator : fitted skgroup head classifier
        Anything with ``coefs_``, ``intercepts_`` and ``classes_`` and a
        softmax output with one unit per class (ReLU hidden layers).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    check_is_fitted(estimator, ["coefs_", "intercepts_", "classes_"])
    coefs, intercepts, classes = estimator.coefs_, estimator.intercepts_, estimator.classes_
    if coefs[-1].shape[1] != len(classes):
        raise TypeError(
            f"{type(estimator).__name__}'s last layer has {coefs[-1].shape[1]} outputs for "
            f"{len(classes)} classes; only softmax heads with one output per class (the "
            "skgroup estimators) are supported."
        )
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != coefs[0].shape[0]:
        raise ValueError(
            f"X must have shape (n_samples, {coefs[0].shape[0]}) like the features the "
            f"estimator was fitted on; got {X.shape}."
        )
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},); got {y.shape}.")
    idx = np.searchsorted(classes, y)
    idx = np.clip(idx, 0, len(classes) - 1)
    if not np.all(classes[idx] == y):
        unknown = np.unique(y[classes[idx] != y])[:5]
        raise ValueError(
            f"y holds labels {list(unknown)} that the estimator never saw; its classes "
            f"are {list(classes)}."
        )
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], 8192):
        h = np.asarray(X[start : start + 8192], dtype=np.float64)
        for W, b in zip(coefs[:-1], intercepts[:-1]):
            h = np.maximum(h @ W + b, 0.0)
        z = h @ coefs[-1] + intercepts[-1]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(p.shape[0]), idx[start : start + 8192]] -= 1.0
        out[start : start + 8192] = np.linalg.norm(p, axis=1) * np.sqrt(
            np.einsum("ij,ij->i", h, h) + 1.0
        )
    return out


def _norm_function():
    try:
        from ..estimators._gradtune import last_layer_gradient_norms as gradtune_norms
    except ImportError:
        return _closed_form_norms
    return gradtune_norms


def gradient_norms_by_group(estimator, X, y, *, group_labels):
    """Per-sample last-layer gradient norms with each sample's group, as a long table.

    The norm is that of the cross-entropy gradient with respect to the last
    layer's weights and bias,
    ``||softmax(z) - e_y||_2 * sqrt(||h||^2 + 1)`` with h the last layer's
    input (GradTune's ``last_layer_gradient_norms``).

    Parameters
    ----------
    estimator : fitted skgroup head classifier
        Typically the ERM model GradTune starts from.
    X, y : held-out data (GradTune computes the norms on held-out rows).
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
        With a membership matrix a sample appears once per group it belongs to.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per (sample, group): ``sample`` (row index), ``group``,
        ``y``, ``correct`` (the estimator's prediction is right),
        ``gradient_norm``. Plot it with :func:`plot_gradient_norms`;
        summarise it with :func:`gradient_norm_summary`.
    """
    n = np.shape(X)[0]
    membership = check_group_labels(group_labels, n)
    norms = np.asarray(_norm_function()(estimator, X, y), dtype=np.float64)
    y = np.asarray(y)
    correct = np.asarray(estimator.predict(X)) == y
    rows, cols = np.nonzero(membership.matrix)
    names = np.asarray(list(membership.names), dtype=object)
    group_col = names[cols]
    try:  # keep int ids as ints
        group_col = group_col.astype(np.asarray(list(membership.names)).dtype)
    except (TypeError, ValueError):
        pass
    return make_table(
        {
            "sample": rows,
            "group": group_col,
            "y": y[rows],
            "correct": correct[rows],
            "gradient_norm": norms[rows],
        }
    )


def gradient_norm_summary(table):
    """Per-group count, mean, quartiles and max of a :func:`gradient_norms_by_group` table."""
    cols = table_columns(table, ("group", "gradient_norm"))
    groups = np.unique(cols["group"])
    out = {k: [] for k in ("group", "count", "mean", "q25", "median", "q75", "max")}
    for g in groups:
        v = cols["gradient_norm"][cols["group"] == g].astype(np.float64)
        q25, med, q75 = np.percentile(v, [25, 50, 75])
        for k, val in zip(out, (g, v.size, v.mean(), q25, med, q75, v.max())):
            out[k].append(val)
    return make_table(out)
