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
from sklearn.model_selection import GridSearchCV

from .metrics import worst_group_scorer

__all__ = ["ValidationSplit", "select_on_validation"]


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
    train, val : Bunch-like with ``X``, ``y`` and ``group_labels``
        As returned by the loaders of :mod:`skgroup.datasets`.
    scoring : scorer, str, or dict, default=worst_group_scorer
        A scorer that requests ``group_labels`` gets the validation rows'
        labels; :data:`~skgroup.metrics.worst_class_scorer` needs none.
    score_params : dict of (train_values, val_values), default=None
        Further per-sample metadata, e.g. ``{"y_pred_biased": (b_tr, b_val)}``
        for the bias-unsupervised scorer.
    n_jobs : int, default=None
    error_score : 'raise' or float, default='raise'

    Returns
    -------
    best_estimator : the estimator with the best parameters, fitted on train
    search : the fitted GridSearchCV (``cv_results_``, ``best_params_``)
    """
    X = _stack(train.X, val.X)
    y = _stack(train.y, val.y)
    params = {"group_labels": _stack(train.group_labels, val.group_labels)}
    for name, (tr, va) in (score_params or {}).items():
        params[name] = _stack(tr, va)
    cv = ValidationSplit(len(train.y), len(val.y))
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
        requests = best_estimator.get_metadata_routing().consumes("fit", ["group_labels"])
        if "group_labels" in requests:
            fit_params["group_labels"] = train.group_labels
        best_estimator.fit(train.X, train.y, **fit_params)
    return best_estimator, search
