"""Tables that compare estimators or hyperparameters on worst-group accuracy."""

import numpy as np

from ..metrics import per_group_accuracy
from ..utils._tables import make_table, table_columns

__all__ = ["group_accuracy_table", "hyperparameter_table"]


def group_accuracy_table(estimators, X, y, *, group_labels):
    """Per-group accuracy of several fitted estimators (or prediction arrays).

    Parameters
    ----------
    estimators : dict
        ``name -> fitted classifier`` (its ``predict(X)`` is scored) or
        ``name -> array of predictions`` for the rows of X.
    X : array-like, or None when every value is a prediction array.
    y : array-like of shape (n_samples,)
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)

    Returns
    -------
    table : DataFrame or dict of columns
        One row per (estimator, group): ``estimator``, ``group``, ``count``,
        ``accuracy``, and the estimator's ``overall_accuracy`` and
        ``worst_group_accuracy`` (repeated on each of its rows).
    """
    if not isinstance(estimators, dict) or not estimators:
        raise ValueError("estimators must be a non-empty dict {name: fitted estimator or predictions}.")
    y = np.asarray(y)
    cols = {k: [] for k in ("estimator", "group", "count", "accuracy", "overall_accuracy",
                            "worst_group_accuracy")}
    for name, est in estimators.items():
        if hasattr(est, "predict"):
            if X is None:
                raise ValueError(f"X is needed to predict with estimator {name!r}.")
            pred = np.asarray(est.predict(X))
        else:
            pred = np.asarray(est)
        if pred.shape != y.shape:
            raise ValueError(
                f"{name!r}: predictions have shape {pred.shape} but y has shape {y.shape}."
            )
        groups, accs, counts = per_group_accuracy(y, pred, group_labels=group_labels)
        overall = float(np.mean(pred == y))
        for g, a, c in zip(groups, accs, counts):
            for key, val in zip(cols, (name, g, int(c), float(a), overall, float(accs.min()))):
                cols[key].append(val)
    return make_table(cols)


def _param_key(results, param):
    key = param if param.startswith("param_") else f"param_{param}"
    if key in results:
        return key
    matches = [k for k in results if k.startswith("param_") and k.endswith(f"__{param}")]
    if len(matches) == 1:
        return matches[0]
    available = [k[len("param_"):] for k in results if k.startswith("param_")]
    raise ValueError(f"No searched parameter {param!r}; the search varied {available}.")


def _score_key(results, score):
    if score is not None:
        for key in (score, f"mean_test_{score}"):
            if key in results:
                return key
        raise ValueError(f"cv_results_ has no score {score!r}.")
    if "mean_test_score" in results:
        return "mean_test_score"
    keys = [k for k in results if k.startswith("mean_test_")]
    if len(keys) == 1:
        return keys[0]
    raise ValueError(
        f"Several scores were recorded ({[k[len('mean_test_'):] for k in keys]}): "
        "choose one with score=..."
    )


def hyperparameter_table(cv_results, param, *, score=None):
    """Score against one hyperparameter, from a search's ``cv_results_``.

    Parameters
    ----------
    cv_results : dict or fitted search
        ``GridSearchCV.cv_results_`` (or the search itself), e.g. from
        :func:`skgroup.model_selection.select_on_validation` with
        :data:`~skgroup.metrics.worst_group_scorer`.
    param : str
        Parameter name (``'alpha'`` also finds ``'estimator__alpha'``).
    score : str, default=None
        Scorer name for multi-metric searches.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per candidate: ``value`` (the parameter), ``score``,
        ``score_std`` and ``others``: the other parameters as a string
        (candidates with equal ``others`` form one curve).
    """
    results = getattr(cv_results, "cv_results_", cv_results)
    if not isinstance(results, dict) or "params" not in results:
        raise TypeError("cv_results must be a search's cv_results_ dict (or the fitted search).")
    pkey = _param_key(results, param)
    skey = _score_key(results, score)
    name = pkey[len("param_"):]
    values = [p.get(name) for p in results["params"]]
    others = [
        ", ".join(f"{k}={v!r}" for k, v in sorted(p.items()) if k != name) for p in results["params"]
    ]
    std_key = "std" + skey[len("mean"):]
    std = results.get(std_key, np.full(len(values), np.nan))
    return make_table(
        {
            "value": np.asarray(values, dtype=object),
            "score": np.asarray(results[skey], dtype=np.float64),
            "score_std": np.asarray(std, dtype=np.float64),
            "others": np.asarray(others, dtype=object),
        }
    )


def _table_or_cv(results, param, score):
    """(values, scores, curve labels) from a cv_results_ or a tidy table."""
    if hasattr(results, "cv_results_") or (isinstance(results, dict) and "params" in results):
        cols = table_columns(hyperparameter_table(results, param, score=score))
        return cols["value"], cols["score"], cols["others"], score or "worst-group accuracy"
    score = score or "worst_group_accuracy"
    cols = table_columns(results, (param, score))
    hue = cols.get("others", np.full(len(cols[param]), "", dtype=object))
    return cols[param], cols[score], hue, score
