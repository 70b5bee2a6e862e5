"""Model selection on a fixed validation split, the protocol of the field.

Group-robustness papers tune on a held-out validation split (with or without
its group labels) and report the test split; they do not cross-validate.
:class:`ValidationSplit` expresses that split as a scikit-learn CV object, so
``GridSearchCV`` (with metadata routing, :data:`~skgroup.metrics.worst_group_scorer`
and ``n_jobs``) does the search, and :func:`select_on_validation` refits the
winner on the training rows only (``GridSearchCV(refit=True)`` would refit
on train + validation, leaking the validation data into training).
"""

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV

from ..metrics import worst_group_scorer

__all__ = ["ValidationSplit", "select_on_validation", "split_arrays", "requests"]


class ValidationSplit:
    """One split: the first ``n_train`` rows train, the next ``n_val`` validate.

    Use with data stacked as ``np.vstack([X_train, X_val])``.
    """

    def __init__(self, n_train, n_val):
        self.n_train = int(n_train)
        self.n_val = int(n_val)

    def split(self, X=None, y=None, groups=None):
        n = self.n_train + self.n_val
        if X is not None and len(X) != n:
            raise ValueError(
                f"ValidationSplit({self.n_train}, {self.n_val}) expects {n} stacked rows; got {len(X)}."
            )
        yield np.arange(self.n_train), np.arange(self.n_train, n)

    def get_n_splits(self, X=None, y=None, groups=None):
        return 1

    def __repr__(self):
        return f"ValidationSplit(n_train={self.n_train}, n_val={self.n_val})"


def _stack(a, b):
    return np.concatenate([np.asarray(a), np.asarray(b)], axis=0)


def split_arrays(split, name):
    """``(X, y, group_labels or None)`` of a split given as a Bunch, a dict or a tuple.

    The loaders of :mod:`skgroup.datasets` return Bunches with ``X``, ``y``
    and ``group_labels``; a split without group labels (the usual case in
    practice) is a Bunch or dict without that key, or a tuple ``(X, y)``.
    """
    if isinstance(split, (tuple, list)):
        if len(split) not in (2, 3):
            raise ValueError(
                f"{name} as a tuple must be (X, y) or (X, y, group_labels); got {len(split)} items."
            )
        X, y, g = (*split, None)[:3]
        return X, y, g
    get = split.get if isinstance(split, dict) else (lambda k, d=None: getattr(split, k, d))
    X, y = get("X"), get("y")
    if X is None or y is None:
        raise ValueError(
            f"{name} must have X and y (a Bunch or dict with keys 'X', 'y' and optionally "
            f"'group_labels', or a tuple (X, y)); got {type(split).__name__}."
        )
    return X, y, get("group_labels")


def _consumers(scoring):
    """The scorer objects inside ``scoring`` (a scorer, a string, a callable, a list or a dict)."""
    if isinstance(scoring, dict):
        return [check_scoring(None, scoring=s) for s in scoring.values()]
    if isinstance(scoring, (list, tuple, set)):
        return [check_scoring(None, scoring=s) for s in scoring]
    return [check_scoring(None, scoring=scoring)]


def requests(obj, method, names):
    """The subset of ``names`` that ``obj`` requests for ``method`` through metadata routing.

    An object without ``get_metadata_routing`` (a plain function) requests nothing.
    """
    if not hasattr(obj, "get_metadata_routing"):
        return set()
    with sklearn.config_context(enable_metadata_routing=True):
        return set(obj.get_metadata_routing().consumes(method, list(names)))


def select_on_validation(
    estimator,
    param_grid,
    train,
    val,
    *,
    scoring=worst_group_scorer,
    score_params=None,
    n_jobs=None,
    error_score="raise",
    verbose=0,
):
    """Grid-search on the validation split, then refit the best on train only.

    Parameters
    ----------
    estimator : classifier
        Group labels reach its ``fit`` only if it requests them (Group DRO
        does by default); the others never see them.
    param_grid : dict or list of dicts
    train, val : Bunch, dict or tuple
        ``X``, ``y`` and optionally ``group_labels`` (Bunches as the loaders
        of :mod:`skgroup.datasets` return, dicts, or tuples ``(X, y)`` /
        ``(X, y, group_labels)``). Group labels are needed only where
        something requests them: the scorer (``worst_group_scorer``) needs
        the validation rows', Group DRO the training rows'.
    scoring : scorer, str, or dict, default=worst_group_scorer
        A scorer that requests ``group_labels`` gets the validation rows'
        labels; :data:`~skgroup.metrics.worst_class_scorer`, ``'accuracy'``
        and the other scikit-learn scorers need none.
    score_params : dict of (train_values, val_values), default=None
        Further per-sample metadata, e.g. ``{"y_pred_biased": (b_tr, b_val)}``
        for :data:`~skgroup.metrics.bias_unsupervised_scorer`.
    n_jobs : int, default=None
    error_score : 'raise' or float, default='raise'

    Returns
    -------
    best_estimator : the estimator with the best parameters, fitted on train
    search : the fitted GridSearchCV (``cv_results_``, ``best_params_``)

    See Also
    --------
    RobustSearchCV : chooses among methods too, without group labels, with
        bootstrap intervals and early stopping on the validation split.
    """
    X_tr, y_tr, g_tr = split_arrays(train, "train")
    X_va, y_va, g_va = split_arrays(val, "val")
    X = _stack(X_tr, X_va)
    y = _stack(y_tr, y_va)
    scorer_wants = set().union(*(requests(s, "score", ["group_labels"]) for s in _consumers(scoring)))
    estimator_wants = requests(estimator, "fit", ["group_labels"])
    params = {}
    if scorer_wants:
        if g_va is None or g_tr is None:
            which = "val" if g_va is None else "train"
            raise ValueError(
                f"The scorer requests group_labels but `{which}` has none: give both splits "
                "group_labels, or select without them with scoring=worst_class_scorer, "
                "bias_unsupervised_scorer (with score_params) or 'accuracy'."
            )
        params["group_labels"] = _stack(g_tr, g_va)
    elif estimator_wants and g_tr is not None:
        # only the training fold reaches the estimator; the validation rows' labels
        # are never looked at, so a split without them gets placeholders
        g_va_or_fill = g_va if g_va is not None else np.full(len(y_va), np.asarray(g_tr)[0])
        params["group_labels"] = _stack(g_tr, g_va_or_fill)
    for name, (tr, va) in (score_params or {}).items():
        params[name] = _stack(tr, va)
    cv = ValidationSplit(len(y_tr), len(y_va))
    refit = False if not isinstance(scoring, dict) else next(iter(scoring))
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            estimator,
            param_grid,
            scoring=scoring,
            cv=cv,
            refit=False,
            n_jobs=n_jobs,
            error_score=error_score,
            verbose=verbose,
        )
        search.fit(X, y, **params)
        key = "rank_test_score" if not isinstance(scoring, dict) else f"rank_test_{refit}"
        best = int(np.argmin(search.cv_results_[key]))
        best_params = search.cv_results_["params"][best]
        search.best_params_ = best_params
        search.best_index_ = best
        best_estimator = clone(estimator).set_params(**best_params)
        fit_params = {}
        if "group_labels" in requests(best_estimator, "fit", ["group_labels"]) and g_tr is not None:
            fit_params["group_labels"] = g_tr
        best_estimator.fit(X_tr, y_tr, **fit_params)
    return best_estimator, search
