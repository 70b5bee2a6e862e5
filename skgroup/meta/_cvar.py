"""CVaR DRO by reductions: row weights in the CVaR set, updated by capped Hedge, and weighted refits."""

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ..estimators import MethodSpec, register_method
from ._reductions import BaseReductionClassifier, capped_simplex_projection, cvar
from ._rows import quick_estimator

__all__ = ["CVaRMetaClassifier"]


class _CVaRGame:
    """The adversary of CVaR DRO: row weights p in the capped simplex, exponentiated gradient + KL projection."""

    def __init__(self, n, alpha, eta):
        self.n, self.alpha, self.eta = n, float(alpha), float(eta)
        self.cap = 1.0 / (self.alpha * n)
        self.log_p = np.full(n, -np.log(n))
        self.loss_sum = np.zeros(n)
        self.records = {"adversary_loss": [], "cvar": [], "mixture_cvar": [], "max_weight": []}

    def weights(self):
        return self.n * np.exp(self.log_p)

    def update(self, row_losses):
        p = np.exp(self.log_p)
        self.loss_sum += row_losses
        t = len(self.records["cvar"]) + 1
        self.records["adversary_loss"].append(float(p @ row_losses))
        self.records["cvar"].append(cvar(row_losses, self.alpha))
        self.records["mixture_cvar"].append(cvar(self.loss_sum / t, self.alpha))
        self.records["max_weight"].append(float(p.max() * self.n))
        p = capped_simplex_projection(self.log_p + self.eta * row_losses, self.cap)
        with np.errstate(divide="ignore"):
            self.log_p = np.log(p)

    def history(self):
        return {k: np.asarray(v) for k, v in self.records.items()}


class CVaRMetaClassifier(BaseReductionClassifier):
    """CVaR DRO around any classifier, by reductions: row weights in the CVaR set and weighted refits.

    Levy, Carmon, Duchi & Sidford, "Large-Scale Methods for Distributionally
    Robust Optimization", NeurIPS 2020 (a baseline of JTT, Liu et al.,
    2021), minimise the conditional value at risk of the loss, the mean of
    the worst alpha-fraction of the rows' losses. Its dual form is a game
    over row weights in the CVaR uncertainty set,

    .. math:: \\min_h \\max_{p \\in P_\\alpha} \\sum_i p_i \\ell(h(x_i), y_i), \\qquad
              P_\\alpha = \\{p : \\textstyle\\sum_i p_i = 1,\\ 0 \\le p_i \\le \\frac{1}{\\alpha n}\\},

    whose inner maximum puts mass :math:`1/(\\alpha n)` on the alpha n
    largest losses. Played by reductions (Agarwal et al., ICML 2018):

    1. p starts uniform (the first fit is the plain estimator);
    2. round t fits a clone of ``estimator`` with ``sample_weight`` n p,
       the learner's best response :math:`h_t`;
    3. p takes the exponentiated-gradient step :math:`p_i \\leftarrow p_i
       \\exp(\\eta \\ell_i(h_t))` and the KL projection back onto
       :math:`P_\\alpha` (Hedge with capping, Warmuth & Kuzmin, "Randomized
       Online PCA Algorithms with Regret Bounds that are Logarithmic in the
       Dimension", JMLR 2008: the largest entries are capped at
       :math:`1/(\\alpha n)`, the others rescaled).

    Capped Hedge's regret against any p in the set is at most
    :math:`\\ln(1/\\alpha)/\\eta + \\eta T B^2 / 8` for losses in [0, B]
    (the KL divergence of the uniform distribution on alpha n rows from the
    uniform start is :math:`\\ln(1/\\alpha)`), so the average of the
    iterates has a CVaR within that regret / T of the best responses'
    values. Exact best responses of the adversary (all mass on the current
    top alpha-fraction) have no such guarantee and oscillate; this is why
    the adversary moves by small steps.

    The returned model, the validation selection (``prediction``,
    ``monitor``), ``loss`` and the caveat on base estimators that fit their
    training rows are as in :class:`GroupDROMetaClassifier`. No group labels
    are used in training.

    Parameters
    ----------
    estimator : classifier
        Its ``fit`` must take ``sample_weight``.
    alpha : float in (0, 1], default=0.2
        The fraction of rows whose losses CVaR averages; 1 is ERM.
    n_iter : int, default=10
    eta : float >= 0, default=1.0
        Step size of the exponentiated-gradient update of p.
    loss : {'log_loss', 'zero_one'}, default='log_loss'
    prediction : {'average', 'best_iterate'}, default='average'
    monitor : {'auto', 'worst_group_accuracy', 'worst_class_accuracy', 'accuracy'}, default='auto'
    n_jobs : int or None, default=None
    random_state : int, RandomState or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_, estimator_, estimators_, validation_scores_, monitor_, best_iteration_, n_average_, n_iter_ :
        As in :class:`GroupDROMetaClassifier`.
    sample_weight_ : ndarray of shape (n_samples,)
        n p after the last update.
    history_ : dict of ndarray
        Per round (T,): ``'cvar'`` (CVaR of the iterate's training losses),
        ``'mixture_cvar'`` (CVaR of the mean loss of the first t iterates),
        ``'adversary_loss'`` (:math:`\\sum_i p_{t,i} \\ell_i(h_t)`),
        ``'max_weight'`` (largest n p_i the iterate was fitted with) and
        ``'fit_time'``.
    n_features_in_, feature_names_in_ :
        As the base estimator's.

    Examples
    --------
    >>> from sklearn.ensemble import HistGradientBoostingClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.meta import CVaRMetaClassifier
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = CVaRMetaClassifier(HistGradientBoostingClassifier(max_iter=20), n_iter=3,
    ...                          random_state=0).fit(X, y)
    >>> float(clf.history_["max_weight"].max()) <= 1 / 0.2
    True
    """

    _parameter_constraints = {
        **BaseReductionClassifier._parameter_constraints,
        "alpha": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(self, estimator, *, alpha=0.2, n_iter=10, eta=1.0, loss="log_loss", prediction="average",
                 monitor="auto", n_jobs=None, random_state=None, verbose=0):
        self.estimator = estimator
        self.alpha = alpha
        self.n_iter = n_iter
        self.eta = eta
        self.loss = loss
        self.prediction = prediction
        self.monitor = monitor
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None, **fit_params):
        """Play ``n_iter`` rounds of weighted fits against capped exponentiated-gradient row weights.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used in training (CVaR DRO needs no group labels).
        X_val, y_val, group_labels_val : validation rows, default=None
            To select the iterates that predict (``prediction``).
        **fit_params : dict
            Passed to every fit of the base estimator.

        Returns
        -------
        self
        """
        X, y, y_enc = self._check_fit_data(X, y)
        routed = self._route_fit({"group_labels": group_labels, "X_val": X_val, "y_val": y_val,
                                  "group_labels_val": group_labels_val}, fit_params)["estimator"]
        game = _CVaRGame(y_enc.shape[0], self.alpha, self.eta)
        self._fit_game(X, y, y_enc, routed, game, X_val, y_val, group_labels_val)
        self.sample_weight_ = game.weights()
        return self


def _search_space(data):
    # alpha from 0.05 to 0.5, the span of the CVaR DRO baselines of Levy et al. (2020) and Liu et al. (2021);
    # eta and the 10 rounds as for Group DRO by reductions.
    return {"alpha": [0.05, 0.2, 0.5], "eta": [1.0], "n_iter": [10]}


register_method(MethodSpec(
    CVaRMetaClassifier,
    search_space=_search_space,
    fast_params={"estimator": quick_estimator(), "n_iter": 3},
    check_params={"estimator": quick_estimator(), "n_iter": 3},
    wraps_estimator=True,
    finetune=False,
))
