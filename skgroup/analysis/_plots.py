"""Plots of the analysis tables (matplotlib, an optional extra).

Every function takes a table (DataFrame or dict of columns, as the
analysis functions return) and an optional ``ax``, draws on it (a new
figure when ``ax`` is None) and returns the Axes. ``group_names`` maps group
ids to display names (a dict, or a sequence indexed by the id), e.g.
``load_celeba_attributes().group_names``.
"""

import numpy as np

from ..utils._tables import table_columns

__all__ = [
    "plot_group_accuracies",
    "plot_worst_group_vs_param",
    "plot_error_set_enrichment",
    "plot_gradient_norms",
    "plot_spectra",
    "plot_cvar_set_composition",
    "plot_error_set_ablation",
    "plot_search_results",
    "candidate_label",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "skgroup.analysis plots need matplotlib: pip install matplotlib "
            "(or pip install 'skgroup[analysis]')."
        ) from exc
    return plt


def _axes(ax):
    if ax is not None:
        return ax
    return _pyplot().subplots()[1]


def _label(g, group_names):
    if group_names is None:
        return f"group {g}"
    try:
        return str(group_names[g])
    except (KeyError, IndexError, TypeError):
        return f"group {g}"


def _unique(values):
    """Distinct values in first-seen order (tables keep their own order)."""
    return list(dict.fromkeys(np.asarray(values).tolist()))


def plot_group_accuracies(results, X=None, y=None, *, group_labels=None, ax=None, group_names=None):
    """Per-group accuracy bars, one bar per estimator within each group.

    ``results`` is a dict ``name -> fitted estimator (or predictions)``,
    scored on ``X, y, group_labels``, or the table of
    :func:`group_accuracy_table`. The legend gives each estimator's
    worst-group accuracy.
    """
    from ._comparison import group_accuracy_table

    is_table = isinstance(results, dict) and {"estimator", "group", "accuracy"} <= set(results)
    if isinstance(results, dict) and not is_table:
        if y is None or group_labels is None:
            raise ValueError("Pass y and group_labels (and X) to score the estimators.")
        results = group_accuracy_table(results, X, y, group_labels=group_labels)
    cols = table_columns(results, ("estimator", "group", "accuracy"), name="results")
    ax = _axes(ax)
    names = _unique(cols["estimator"])
    groups = _unique(cols["group"])
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        sel = cols["estimator"] == name
        acc = {g: a for g, a in zip(cols["group"][sel].tolist(), cols["accuracy"][sel])}
        heights = [acc.get(g, np.nan) for g in groups]
        wga = np.nanmin(heights)
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=f"{name} (worst {wga:.3f})")
    ax.set_xticks(x)
    ax.set_xticklabels([_label(g, group_names) for g in groups], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize="small")
    ax.set_title("Per-group accuracy")
    return ax


def plot_worst_group_vs_param(results, param, *, score=None, ax=None, log_scale="auto"):
    """Worst-group accuracy (or any score) against one hyperparameter.

    ``results`` is a search's ``cv_results_`` (or the fitted search, e.g. the
    one :func:`skgroup.model_selection.select_on_validation` returns), or a
    table with a ``param`` column and a ``score`` column (default
    ``'worst_group_accuracy'``). Candidates that differ in other parameters
    are drawn as separate curves.
    """
    from ._comparison import _table_or_cv

    values, scores, curves, score_name = _table_or_cv(results, param, score)
    ax = _axes(ax)
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and v is not None
                  for v in values)
    for curve in _unique(curves):
        sel = np.asarray([c == curve for c in curves])
        v, s = np.asarray(values, dtype=object)[sel], np.asarray(scores, dtype=np.float64)[sel]
        if numeric:
            order = np.argsort(v.astype(np.float64))
            v, s = v[order].astype(np.float64), s[order]
        else:
            v = np.asarray([str(t) for t in v])
        ax.plot(v, s, marker="o", label=str(curve) if curve else None)
    if numeric and log_scale == "auto":
        vals = np.asarray(values, dtype=np.float64)
        log_scale = bool(np.all(vals > 0) and vals.max() / vals.min() >= 100)
    if numeric and log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(str(score_name).replace("_", " "))
    if any(c for c in curves):
        ax.legend(fontsize="small")
    return ax


def plot_error_set_enrichment(table, *, ax=None, group_names=None):
    """Enrichment of each group in an error set (:func:`error_set_analysis`).

    Bars of precision / empirical rate, a dashed line at 1 (no enrichment),
    and precision and recall written above each bar.
    """
    cols = table_columns(table, ("group", "enrichment", "precision", "recall"))
    ax = _axes(ax)
    x = np.arange(len(cols["group"]))
    bars = ax.bar(x, cols["enrichment"], color="tab:red", alpha=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    for b, p, r in zip(bars, cols["precision"], cols["recall"]):
        h = b.get_height()
        ax.annotate(f"P={p:.2f}\nR={r:.2f}", (b.get_x() + b.get_width() / 2, 0 if np.isnan(h) else h),
                    ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x)
    ax.set_xticklabels([_label(g, group_names) for g in cols["group"]], rotation=20, ha="right")
    ax.set_ylabel("enrichment (precision / empirical rate)")
    ax.set_title("Error-set enrichment")
    return ax


def plot_gradient_norms(table, *, ax=None, bins=50, density=True, log_scale=False, group_names=None):
    """Histograms of the last-layer gradient norms per group (:func:`gradient_norms_by_group`).

    With ``density=True`` each group's bars are the fraction of that group
    per bin (so groups of very different sizes compare, on linear or
    logarithmic bins alike); otherwise counts.
    """
    cols = table_columns(table, ("group", "gradient_norm"))
    ax = _axes(ax)
    v = cols["gradient_norm"].astype(np.float64)
    if log_scale:
        lo = max(v[v > 0].min() if np.any(v > 0) else 1e-12, 1e-12)
        edges = np.geomspace(lo, max(v.max(), lo * 10), bins + 1)
        ax.set_xscale("log")
    else:
        edges = np.linspace(v.min(), v.max() if v.max() > v.min() else v.min() + 1, bins + 1)
    for g in sorted(_unique(cols["group"]), key=str):
        sel = cols["group"] == g
        weights = np.full(int(sel.sum()), 1.0 / sel.sum()) if density else None
        ax.hist(v[sel], bins=edges, weights=weights, histtype="step", lw=1.5,
                label=f"{_label(g, group_names)} (n={int(sel.sum())})")
    ax.set_xlabel("last-layer gradient norm")
    ax.set_ylabel("fraction of the group" if density else "count")
    ax.legend(fontsize="small")
    ax.set_title("Per-sample gradient norms by group")
    return ax


def plot_spectra(table, *, ax=None, log_scale=True, group_names=None):
    """Top eigenvalues of each group's covariance against their rank (:func:`group_spectra`)."""
    cols = table_columns(table, ("group", "rank", "eigenvalue"), name="spectra")
    ax = _axes(ax)
    has_class = "class" in cols
    keys = list(zip(cols["class"].tolist(), cols["group"].tolist())) if has_class else [
        (None, g) for g in cols["group"].tolist()
    ]
    for key in dict.fromkeys(keys):
        sel = np.asarray([k == key for k in keys])
        label = _label(key[1], group_names)
        if has_class:
            label = f"y={key[0]}, {label}"
        n = int(cols["n_samples"][sel][0]) if "n_samples" in cols else None
        if n is not None:
            label += f" (n={n})"
        ax.plot(cols["rank"][sel], cols["eigenvalue"][sel], marker="o", ms=3, label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue of the group covariance")
    ax.legend(fontsize="small")
    ax.set_title("Group covariance spectra")
    return ax


def plot_cvar_set_composition(table, *, ax=None, group_names=None):
    """Fraction of CVaR's worst-alpha set from each group, per epoch (:func:`cvar_set_composition`).

    Dashed lines: each group's empirical rate in the training data.
    """
    cols = table_columns(table, ("epoch", "group", "precision", "empirical_rate"))
    ax = _axes(ax)
    for g in _unique(cols["group"]):
        sel = cols["group"] == g
        line, = ax.plot(cols["epoch"][sel], cols["precision"][sel], marker="o", ms=3,
                        label=_label(g, group_names))
        ax.axhline(float(cols["empirical_rate"][sel][0]), color=line.get_color(), ls="--", lw=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of the worst-alpha set")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    ax.set_title("CVaR worst-alpha set composition")
    return ax


def plot_error_set_ablation(table, *, ax=None):
    """Average and worst-group accuracy per variant (:func:`jtt_error_set_ablation`)."""
    cols = table_columns(table, ("variant", "accuracy", "worst_group_accuracy"))
    ax = _axes(ax)
    x = np.arange(len(cols["variant"]))
    ax.bar(x - 0.2, cols["accuracy"], 0.4, label="average accuracy")
    ax.bar(x + 0.2, cols["worst_group_accuracy"], 0.4, label="worst-group accuracy")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in cols["variant"]])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    ax.set_title("JTT: static vs dynamic error set")
    return ax


def candidate_label(estimator, params):
    """A short label for a search candidate: the method and its grid values."""
    name = str(estimator).replace("Classifier", "")
    if not params:
        return name
    parts = []
    for k, v in dict(params).items():
        if hasattr(v, "get_params") and not isinstance(v, type):  # a wrapped method: its class is the label
            v = type(v).__name__.replace("Classifier", "")
        v = f"{v:g}" if isinstance(v, float) else str(v)
        parts.append(f"{k}={v}")
    return f"{name} ({', '.join(parts)})"


def plot_search_results(results, *, ax=None, top=None, title=None):
    """Every candidate's validation score with its bootstrap interval, best first.

    ``results`` is a fitted :class:`~skgroup.model_selection.RobustSearchCV`
    or its ``results_``. The winner is drawn in red, candidates the paired
    bootstrap cannot tell from it in orange, the others (worse beyond the
    bootstrap's doubt) in grey; ``top`` keeps the best ``top`` candidates.
    """
    rule = getattr(results, "selection_", None)
    if hasattr(results, "results_"):
        results = results.results_
    cols = table_columns(results, ("estimator", "params", "score", "ci_low", "ci_high", "distinguishable", "rank"),
                         name="results")
    ok = np.isfinite(np.asarray(cols["score"], dtype=np.float64))
    order = [i for i in np.argsort(np.asarray(cols["rank"])) if ok[i]]
    if top is not None:
        order = order[: int(top)]
    ax = _axes(ax)
    y = np.arange(len(order))[::-1]
    for yi, i in zip(y, order):
        score = float(cols["score"][i])
        color = "tab:red" if cols["rank"][i] == 1 else ("tab:gray" if cols["distinguishable"][i] else "tab:orange")
        ax.errorbar(score, yi, xerr=[[score - float(cols["ci_low"][i])], [float(cols["ci_high"][i]) - score]],
                    fmt="o", color=color, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels([candidate_label(cols["estimator"][i], cols["params"][i]) for i in order], fontsize="small")
    ax.set_xlabel(f"validation {str(rule or 'score').replace('_', ' ')} (bootstrap interval)")
    ax.set_title(title or "Candidates: winner (red), indistinguishable (orange), worse (grey)", fontsize="small")
    return ax
