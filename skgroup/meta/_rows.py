"""Rows and weights that balance strata (classes or groups) for a single fit of a base estimator."""

import numpy as np

__all__ = ["balanced_draws", "balanced_weights", "quick_estimator"]


def balanced_draws(strata, n_draws, rng, subset=None):
    """Sorted row indices of ``n_draws`` draws with replacement: a stratum uniformly, then a row in it.

    One epoch of a stratum-balanced sampler (LaBonte et al.'s class-balanced
    upsampling, Group DRO's ``--reweight_groups``), drawn once. ``subset``:
    indices of the rows to draw from (default all).
    """
    strata = np.asarray(strata)
    rows = np.arange(strata.shape[0]) if subset is None else np.asarray(subset)
    values, inverse = np.unique(strata[rows], return_inverse=True)
    per_stratum = rng.multinomial(n_draws, np.full(values.shape[0], 1.0 / values.shape[0]))
    out = []
    for s, k in enumerate(per_stratum):
        members = rows[inverse == s]
        out.append(rng.choice(members, size=int(k), replace=True))
    return np.sort(np.concatenate(out))


def balanced_weights(codes, power=1.0):
    """Row weights proportional to ``n_s^-power`` over the strata, scaled to sum to the number of rows."""
    counts = np.bincount(codes).astype(np.float64)
    w = counts[codes] ** -power
    return w * (codes.shape[0] / w.sum())


def quick_estimator():
    """The quick base estimator of the meta-estimators' specs (tests and checks)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1)
