"""Per-sample last-layer gradient norms, by group (GradTune, Fig. 2 and 4).

GradTune's premise is that on held-out data the samples of the groups an ERM
model fails on have large per-sample gradients at the last layer; the
distribution of those norms per group shows whether a model's gradients
separate the groups at all.
"""

import numpy as np

from .._groups import check_group_labels
from ..estimators._gradtune import last_layer_gradient_norms
from ..utils._tables import make_table, table_columns

__all__ = ["gradient_norms_by_group", "gradient_norm_summary"]


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
    norms = np.asarray(last_layer_gradient_norms(estimator, X, y), dtype=np.float64)
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
