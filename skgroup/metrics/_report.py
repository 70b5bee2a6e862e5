"""Per-group accuracy report with bootstrap confidence intervals.

Minority groups in the standard benchmarks hold about a hundred test samples
(CelebA blond men: 180, Waterbirds landbirds on water: 642 but waterbirds on
land: 642 / 133 in val), so a worst-group accuracy without an interval is easy
to over-read. The interval here is a *stratified* percentile bootstrap: each
group is resampled within itself, keeping its size, which is what resampling
a test set whose group sizes are fixed by design means. For the accuracy of a
group of size n with k correct, a bootstrap replicate's number of correct
predictions is exactly Binomial(n, k/n), so no per-sample resampling is needed
and the report costs O(n_bootstrap * n_groups) whatever the data size.
"""

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from ._metrics import _value_kind, per_group_accuracy

__all__ = ["GroupReport", "group_accuracies", "group_proportions", "paired_bootstrap", "class_diff_interval"]


#: Bootstrap replicates that must lie beyond each end of a percentile interval.
MIN_TAIL_REPLICATES = 5


def min_bootstrap(confidence_level):
    """The fewest replicates for a percentile interval at ``confidence_level``: 5 beyond each end
    (200 at 0.95, 1,000 at 0.99); fewer give bounds that are one or two replicates, or the same one."""
    tail = (1 - confidence_level) / 2
    return int(np.ceil(MIN_TAIL_REPLICATES / tail - 1e-9))


def check_bootstrap(n_bootstrap, confidence_level):
    """Refuse too few replicates for the interval's level (see :func:`min_bootstrap`)."""
    need = min_bootstrap(confidence_level)
    if n_bootstrap < need:
        raise ValueError(
            f"n_bootstrap={n_bootstrap} is too few replicates for a confidence_level={confidence_level} "
            f"interval: its bounds are the {100 * (1 - confidence_level) / 2:g}% and "
            f"{100 * (1 + confidence_level) / 2:g}% points of the replicates, which needs at least {need} "
            f"({MIN_TAIL_REPLICATES} beyond each bound). Raise n_bootstrap, or lower confidence_level."
        )


def group_proportions(group_labels):
    """Fraction of samples in each group, as a dict ``{group: fraction}``.

    Pass the training split's group labels to get the weights of the
    Waterbirds convention (test accuracy averaged with training proportions).
    """
    from .._groups import check_group_labels

    membership = check_group_labels(group_labels, np.shape(group_labels)[0])
    counts = membership.counts.astype(np.float64)
    return dict(zip(membership.names, counts / counts.sum()))


@dataclass
class GroupReport:
    """Per-group accuracies of one set of predictions.

    Attributes
    ----------
    groups : list
        Group names, in the order of the other arrays.
    counts, accuracies : ndarray
    ci_low, ci_high : ndarray or None
        Bootstrap interval bounds per group (None without bootstrap).
    accuracy : float
        Overall accuracy (each sample counted once).
    worst_group_accuracy : float
    worst_group : object
        Name of the group reaching the minimum.
    worst_group_ci : tuple or None
        Bootstrap interval of the worst-group accuracy itself (the minimum is
        recomputed in every replicate, so its interval sits below the naive
        one of the worst group when several groups are close).
    weighted_accuracy : float or None
        Average of the group accuracies weighted by ``group_weights``.
    confidence_level : float or None
    """

    groups: list
    counts: np.ndarray
    accuracies: np.ndarray
    accuracy: float
    worst_group_accuracy: float
    worst_group: object
    ci_low: np.ndarray = None
    ci_high: np.ndarray = None
    worst_group_ci: tuple = None
    weighted_accuracy: float = None
    confidence_level: float = None

    def to_dict(self):
        """Rows as a list of dicts, one per group."""
        rows = []
        for i, g in enumerate(self.groups):
            row = {"group": g, "count": int(self.counts[i]), "accuracy": float(self.accuracies[i])}
            if self.ci_low is not None:
                row["ci_low"] = float(self.ci_low[i])
                row["ci_high"] = float(self.ci_high[i])
            rows.append(row)
        return rows

    def to_frame(self):
        """The per-group rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.to_dict()).set_index("group")

    def __str__(self):
        has_ci = self.ci_low is not None
        head = f"{'group':>14} {'count':>8} {'accuracy':>9}"
        if has_ci:
            head += f"  {int(round(self.confidence_level * 100))}% interval"
        lines = [head]
        for row in self.to_dict():
            line = f"{str(row['group']):>14} {row['count']:>8d} {row['accuracy']:>9.4f}"
            if has_ci:
                line += f"  [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
            lines.append(line)
        lines.append(f"overall accuracy      {self.accuracy:.4f}")
        wga = f"worst-group accuracy  {self.worst_group_accuracy:.4f} (group {self.worst_group})"
        if self.worst_group_ci is not None:
            wga += f"  [{self.worst_group_ci[0]:.4f}, {self.worst_group_ci[1]:.4f}]"
        lines.append(wga)
        if self.weighted_accuracy is not None:
            lines.append(f"weighted accuracy     {self.weighted_accuracy:.4f}")
        return "\n".join(lines)

    def _repr_html_(self):  # notebooks
        return "<pre>" + str(self) + "</pre>"


def group_accuracies(
    y_true,
    y_pred,
    *,
    group_labels,
    group_weights=None,
    confidence_level=None,
    n_bootstrap=2000,
    expected_groups=None,
    random_state=None,
):
    """Per-group accuracy report.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
    group_weights : dict or array-like, default=None
        Weight of each group for the weighted average accuracy, e.g. the
        training-set group proportions from :func:`group_proportions` (the
        Waterbirds convention: its test set is group-balanced, its training set
        is not). A dict maps group names to weights: it must name every
        evaluated group, and only those (a key of another type, ``'1'`` for
        the group ``1``, is an error, not a weight of 0); an array follows
        the order of the groups. Weights are renormalised to sum to 1;
        they must be finite and non-negative, with a positive sum.
    confidence_level : float in (0, 1), default=None
        If given, add stratified percentile-bootstrap intervals per group and
        for the worst-group accuracy.
    n_bootstrap : int >= 1, default=2000
        Bootstrap replicates; with an interval at least 5 beyond each of its
        bounds (200 at ``confidence_level=0.95``, 1,000 at 0.99). For no
        intervals leave ``confidence_level=None``.
    expected_groups : iterable, default=None
        See :func:`worst_group_accuracy`.
    random_state : int, RandomState or None
        Seeds the bootstrap.

    Returns
    -------
    GroupReport
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 1:
        raise ValueError(
            f"n_bootstrap must be a positive int (default 2000); got {n_bootstrap!r}. For no "
            "intervals leave confidence_level=None."
        )
    y_true_arr = np.asarray(y_true)
    names, acc, counts = per_group_accuracy(
        y_true, y_pred, group_labels=group_labels, expected_groups=expected_groups
    )
    overall = float(np.mean(y_true_arr.ravel() == np.asarray(y_pred).ravel()))
    worst = int(np.argmin(acc))
    report = GroupReport(
        groups=names,
        counts=counts.astype(np.int64),
        accuracies=acc,
        accuracy=overall,
        worst_group_accuracy=float(acc[worst]),
        worst_group=names[worst],
    )
    if group_weights is not None:
        if isinstance(group_weights, dict):
            # a key that is no evaluated group ('1' for the group 1, a group with no rows here) would be
            # dropped and a group without a key weighted 0: both change the number silently
            unknown = [k for k in group_weights if not any(_same_group(k, g) for g in names)]
            if unknown:
                raise ValueError(
                    f"group_weights names {', '.join(repr(k) for k in unknown)}, which "
                    f"{'is' if len(unknown) == 1 else 'are'} not among the evaluated groups {names} (a group "
                    "id of another type, e.g. '1' for 1, or a group with no rows here): use the ids of "
                    "group_labels, and drop the groups absent from this data."
                )
            unweighted = [g for g in names if not any(_same_group(k, g) for k in group_weights)]
            if unweighted:
                raise ValueError(
                    f"group_weights gives no weight to the evaluated group(s) {unweighted}: give every "
                    "group a weight (0 leaves a group out of the weighted accuracy)."
                )
            w = np.array([float(next(v for k, v in group_weights.items() if _same_group(k, g))) for g in names])
        else:
            w = np.asarray(group_weights, dtype=np.float64)
            if w.shape != acc.shape:
                raise ValueError(
                    f"group_weights has {w.size} entries but there are {acc.size} "
                    "non-empty groups: pass a dict {group: weight} instead."
                )
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            shown = ", ".join(f"{g}: {v}" for g, v, b in zip(names, w, bad) if b)
            raise ValueError(
                f"group_weights must be finite and non-negative; got {{{shown}}}. Give every group a "
                "weight >= 0, e.g. the training proportions from group_proportions(train_group_labels)."
            )
        if w.sum() <= 0:
            raise ValueError("group_weights must have a positive sum: give at least one group a weight > 0.")
        report.weighted_accuracy = float(np.dot(w, acc) / w.sum())
    if confidence_level is not None:
        if (isinstance(confidence_level, bool) or not isinstance(confidence_level, numbers.Real)
                or not 0 < confidence_level < 1):
            raise ValueError(
                f"confidence_level must be a number in (0, 1), e.g. 0.95, or None for no intervals; got "
                f"{confidence_level!r}."
            )
        check_bootstrap(n_bootstrap, confidence_level)
        rng = check_random_state(random_state)
        boot = rng.binomial(counts.astype(np.int64), acc, size=(n_bootstrap, acc.size)) / counts
        tail = (1 - confidence_level) / 2 * 100
        report.ci_low, report.ci_high = np.percentile(boot, [tail, 100 - tail], axis=0)
        wmin = boot.min(axis=1)
        report.worst_group_ci = tuple(float(v) for v in np.percentile(wmin, [tail, 100 - tail]))
        report.confidence_level = confidence_level
    return report


def _same_group(key, name):
    """Whether a group_weights key is the group ``name``: equal and of the same kind (1 is not '1', nor True)."""
    return _value_kind(key) == _value_kind(name) and key == name


def _neg_class_diff(per_cell, axis):
    """Minus the mean absolute pairwise difference along ``axis`` (NaN cells, i.e. empty ones, left out)."""
    per_cell = np.moveaxis(np.asarray(per_cell, dtype=np.float64), axis, -1)
    k = per_cell.shape[-1]
    if k < 2:
        return np.zeros(per_cell.shape[:-1])
    i, j = np.triu_indices(k, k=1)
    with np.errstate(invalid="ignore"):
        return -np.nanmean(np.abs(per_cell[..., i] - per_cell[..., j]), axis=-1)


def class_diff_interval(cell_point, cell_replicates, confidence_level):
    r"""Interval of minus ClassDiff from bootstrap replicates of the class accuracies.

    ClassDiff (the mean of :math:`|a_i - a_j|` over the pairs of classes,
    :math:`a_i` the recall of class i) is biased upward under resampling:
    with two classes recalled almost alike, nearly every resampled absolute
    difference exceeds the estimate, and the percentile interval of the
    replicates lies entirely beyond it. The signed differences are smooth:
    each pair's percentile interval :math:`[L, U]` of :math:`a_i - a_j`
    gives :math:`|a_i - a_j| \in [0, \max(|L|, |U|)]` when it holds 0,
    else :math:`[\min(|L|, |U|), \max(|L|, |U|)]` (the interval mapped
    through the absolute value), and ClassDiff's bounds are the means of
    the pairs' bounds. The interval holds the estimate whenever each pair's
    interval holds its difference.

    Parameters
    ----------
    cell_point : ndarray of shape (n_models, n_classes)
        Class accuracies (NaN: a class without rows, left out).
    cell_replicates : ndarray of shape (n_bootstrap, n_models, n_classes)
    confidence_level : float in (0, 1)

    Returns
    -------
    low, high : ndarrays of shape (n_models,)
        Bounds of minus ClassDiff (the search's score, larger is better).
    """
    k = cell_point.shape[-1]
    if k < 2:
        zero = np.zeros(cell_point.shape[0])
        return zero, zero.copy()
    i, j = np.triu_indices(k, k=1)
    alpha = (1 - confidence_level) / 2 * 100
    with np.errstate(invalid="ignore"):
        lo_d, hi_d = np.nanpercentile(cell_replicates[..., i] - cell_replicates[..., j], [alpha, 100 - alpha], axis=0)
    small, large = np.minimum(np.abs(lo_d), np.abs(hi_d)), np.maximum(np.abs(lo_d), np.abs(hi_d))
    low_abs = np.where((lo_d <= 0) & (hi_d >= 0), 0.0, small)
    with np.errstate(invalid="ignore"):
        return -np.nanmean(large, axis=-1), -np.nanmean(low_abs, axis=-1)


def paired_bootstrap(correct, cells, *, reduce="min", n_bootstrap=1000, random_state=None):
    """Bootstrap replicates of a cell-wise accuracy score for several models at once.

    The same stratified bootstrap as :func:`group_accuracies` (each cell
    resampled within itself, keeping its size), with one difference: every
    model is scored on the *same* resampled rows in a replicate, so the
    replicates of two models are paired and the bootstrap distribution of
    their difference is available (which comparing two marginal intervals
    ignores). For one model and ``reduce='min'`` over groups, a replicate is
    distributed exactly as :func:`group_accuracies`' binomial draw.

    Parameters
    ----------
    correct : array-like of shape (n_models, n_samples), bool
        Whether each model gets each row right.
    cells : array-like of shape (n_samples,) or (n_samples, n_cells)
        The cells the score is computed over: one id per row (groups,
        classes, (class, biased prediction) cells; resampled within each
        cell), or a boolean membership matrix of overlapping cells (rows
        then resampled all together).
    reduce : {'min', 'mean', 'class_diff', 'none'}
        Worst cell accuracy (worst-group, worst-class), the mean of the
        cell accuracies (the bias-unsupervised score; with one cell, the
        accuracy), minus the mean absolute difference of the cell
        accuracies over all pairs of cells (BAM's ClassDiff over classes,
        negated so that larger is better), or 'none': the cell accuracies
        themselves (an extra last axis of ``point`` and ``replicates``;
        NaN for an empty cell). Empty cells are left out.
    n_bootstrap : int
    random_state : int, RandomState or None

    Returns
    -------
    point : ndarray of shape (n_models,) (``reduce='none'``: (n_models, n_cells))
        The score on the rows as given.
    replicates : ndarray of shape (n_bootstrap, n_models) (``'none'``: (n_bootstrap, n_models, n_cells))
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    n_models, n = correct.shape
    cells = np.asarray(cells)
    if cells.shape[0] != n:
        raise ValueError(f"cells has {cells.shape[0]} rows but correct has {n} columns (one per row).")
    if reduce not in ("min", "mean", "class_diff", "none"):
        raise ValueError(f"reduce must be 'min', 'mean', 'class_diff' or 'none'; got {reduce!r}.")
    agg = {"min": np.nanmin, "mean": np.nanmean, "class_diff": _neg_class_diff,
           "none": lambda a, axis: a}[reduce]
    rng = check_random_state(random_state)
    if cells.ndim == 1:
        _, ids = np.unique(cells, return_inverse=True)
        strata = [np.flatnonzero(ids == c) for c in range(ids.max() + 1)]
        replicates = np.empty((n_bootstrap, n_models) + ((len(strata),) if reduce == "none" else ()))
        point = agg(np.stack([correct[:, rows].mean(axis=1) for rows in strata], axis=1), axis=1)
        chunk = max(1, min(n_bootstrap, 2_000_000 // max(n, 1)))
        for start in range(0, n_bootstrap, chunk):
            m = min(chunk, n_bootstrap - start)
            per_cell = np.empty((m, n_models, len(strata)))
            for j, rows in enumerate(strata):
                k = rows.shape[0]
                draws = rng.randint(0, k, size=(m, k)) + (np.arange(m) * k)[:, None]
                weights = np.bincount(draws.ravel(), minlength=m * k).reshape(m, k)
                per_cell[:, :, j] = weights @ correct[:, rows].T / k
            replicates[start:start + m] = agg(per_cell, axis=2)
        return point, replicates
    member = cells.astype(np.float64)
    counts = member.sum(axis=0)
    replicates = np.empty((n_bootstrap, n_models) + ((member.shape[1],) if reduce == "none" else ()))
    with np.errstate(invalid="ignore", divide="ignore"):
        point = agg(np.where(counts > 0, (correct @ member) / counts, np.nan), axis=1)
        chunk = max(1, min(n_bootstrap, 2_000_000 // max(n, 1)))
        for start in range(0, n_bootstrap, chunk):
            m = min(chunk, n_bootstrap - start)
            draws = rng.randint(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
            weights = np.bincount(draws.ravel(), minlength=m * n).reshape(m, n)
            w_counts = weights @ member  # (m, n_cells)
            hits = np.einsum("bn,cn,nk->bck", weights, correct, member)
            acc = np.where(w_counts[:, None, :] > 0, hits / w_counts[:, None, :], np.nan)
            replicates[start:start + m] = agg(acc, axis=2)
    return point, replicates
