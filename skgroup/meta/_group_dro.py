"""Group DRO by reductions: exponentiated-gradient group weights and weighted refits of any classifier."""

import numpy as np
from sklearn.base import _fit_context

from ..estimators import MethodSpec, register_method
from ._reductions import BaseReductionClassifier
from ._rows import quick_estimator

__all__ = ["GroupDROMetaClassifier"]


class _GroupGame:
    """The adversary of Group DRO: weights q over groups, updated by exponentiated gradient."""

    def __init__(self, matrix, eta):
        self.A = np.asarray(matrix, dtype=np.float64)
        self.n = self.A.shape[0]
        self.counts = self.A.sum(axis=0)
        self.eta = float(eta)
        self.log_q = np.full(self.A.shape[1], -np.log(self.A.shape[1]))
        self.qs, self.losses = [], []

    @property
    def q(self):
        q = np.exp(self.log_q - self.log_q.max())
        return q / q.sum()

    def weights(self):
        # sum_g q_g L_g(h) = sum_i l_i(h) sum_{g : i in g} q_g / n_g; scaled to sum to n
        return self.n * (self.A @ (self.q / self.counts))

    def update(self, row_losses):
        group_loss = (row_losses @ self.A) / self.counts
        self.qs.append(self.q)
        self.losses.append(group_loss)
        self.log_q = self.log_q + self.eta * group_loss
        self.log_q -= self.log_q.max()

    def history(self):
        losses = np.asarray(self.losses)
        mixture = np.cumsum(losses, axis=0) / np.arange(1, losses.shape[0] + 1)[:, None]
        return {"q": np.asarray(self.qs), "group_loss": losses, "mixture_group_loss": mixture,
                "mixture_worst_group_loss": mixture.max(axis=1)}


class GroupDROMetaClassifier(BaseReductionClassifier):
    """Group DRO around any classifier, by reductions: a game of group weights and weighted refits.

    Sagawa, Koh, Hashimoto & Liang, "Distributionally Robust Neural Networks
    for Group Shifts", ICLR 2020, minimise the worst group's average loss,
    :math:`\\min_h \\max_g L_g(h)`, :math:`L_g(h) = \\frac{1}{n_g}\\sum_{i \\in g}
    \\ell(h(x_i), y_i)`, as the game :math:`\\min_h \\max_{q \\in \\Delta_G}
    \\sum_g q_g L_g(h)`. Their Algorithm 1 interleaves a gradient step of the
    model with an exponentiated-gradient step of q. Here, after Agarwal et al.
    ("A Reductions Approach to Fair Classification", ICML 2018), each model
    step is a whole fit of ``estimator``, the best response to the current q:

    1. q starts uniform (the first fit is group-balanced reweighting);
    2. round t fits a clone of ``estimator`` with ``sample_weight``
       :math:`w_i = n \\sum_{g \\ni i} q_g / n_g` (the minimiser of
       :math:`\\sum_g q_g L_g` for a learner that minimises its weighted
       loss; weights sum to n), giving :math:`h_t`;
    3. q takes the exponentiated-gradient step :math:`q_g \\leftarrow q_g
       \\exp(\\eta L_g(h_t))`, renormalised (Algorithm 1's update, once per
       fit instead of once per minibatch).

    The model returned is the average of :math:`h_1, \\dots, h_T`, the
    randomized classifier whose worst-group loss the game bounds: with
    losses in [0, B], :math:`\\max_g \\frac1T \\sum_t L_g(h_t) \\le
    \\frac1T\\sum_t \\sum_g q_{t,g} L_g(h_t) + \\frac{\\ln G}{\\eta T} +
    \\frac{\\eta B^2}{8}` (Hedge's regret), and each term of the sum is at
    most the game's value when the fits are exact best responses.
    ``predict_proba`` is the mean of the iterates' probabilities and
    ``predict`` its argmax (a deterministic rule; the bound is the randomized
    classifier's). ``history_['mixture_worst_group_loss']`` is the left side
    after each round.

    With ``X_val, y_val`` (and ``group_labels_val``) every iterate and every
    prefix average is scored on validation (``monitor``, worst-group
    accuracy by default): ``prediction='average'`` then averages the first
    ``n_average_`` iterates, the prefix of best score (the number of rounds
    selected on validation), and ``prediction='best_iterate'`` predicts with
    the single iterate of best score (``best_iteration_``).

    ``loss`` is the per-row loss of the q update: the log loss of the
    iterate's probabilities (floored at 1e-6, so B = 13.8), the objective of
    Group DRO; or 'zero_one', each group's error rate (B = 1; the base
    estimator then needs no ``predict_proba``). The losses are measured on
    the training rows: a base estimator that fits its training rows (full
    trees) shows every group a loss near 0 and q barely moves, the
    observation of Sagawa et al. that Group DRO needs strong
    regularisation to matter; regularise the base estimator
    (``min_samples_leaf``, ``max_depth``, ``l2_regularization``).

    Differences from the references: Algorithm 1 steps q once per minibatch
    with a small step (0.01) over thousands of steps; here once per fit, so
    ``eta`` is larger (1.0: Hedge's step :math:`\\sqrt{8 \\ln G / T} / B` for
    G = 4 groups, T = 10 rounds and losses of range about 1). Agarwal et
    al. and fairlearn weigh the iterates by a final linear program; here the
    plain average (or the validation-selected prefix or iterate).

    Group labels are routed to ``fit`` by default (metadata routing requests
    ``group_labels``); without them each class is a group (worst-class DRO).

    Parameters
    ----------
    estimator : classifier
        Its ``fit`` must take ``sample_weight``.
    n_iter : int, default=10
        T, the number of weighted fits.
    eta : float >= 0, default=1.0
        Step size of the exponentiated-gradient update of q.
    loss : {'log_loss', 'zero_one'}, default='log_loss'
        The per-row loss of the q update.
    prediction : {'average', 'best_iterate'}, default='average'
        'average': the mean of the iterates (of the best prefix with
        validation data); 'best_iterate': the best iterate on validation
        (needs ``X_val``).
    monitor : {'auto', 'worst_group_accuracy', 'worst_class_accuracy', 'accuracy'}, default='auto'
        The validation score; 'auto': worst-group accuracy with
        ``group_labels_val``, else worst-class accuracy.
    n_jobs : int or None, default=None
        Iterates predicted in parallel threads in ``predict_proba``.
    random_state : int, RandomState or None, default=None
        Seeds every iterate whose own ``random_state`` is None.
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimator_ : classifier
        The unfitted base estimator the iterates are cloned from.
    estimators_ : list of classifiers
        The T fitted iterates.
    group_names_ : tuple
        The groups, in the order of q's entries.
    q_ : ndarray of shape (n_groups,)
        The group weights after the last update.
    history_ : dict of ndarray
        ``'q'`` (T, G): the weights each iterate was fitted with;
        ``'group_loss'`` (T, G): :math:`L_g(h_t)` on the training rows;
        ``'mixture_group_loss'`` (T, G) and ``'mixture_worst_group_loss'``
        (T,): each group's and the worst group's loss of the average of the
        first t iterates; ``'fit_time'`` (T,): seconds of each fit.
    validation_scores_ : dict of ndarray or None
        ``'iterate'`` and ``'average'`` (T,): the monitored validation score
        of each iterate and of each prefix average.
    monitor_ : str or None
    best_iteration_ : int or None
        1-based index of the best iterate on validation.
    n_average_ : int
        Iterates averaged by ``prediction='average'``.
    n_iter_ : int
    n_features_in_, feature_names_in_ :
        As the base estimator's.

    Examples
    --------
    >>> from sklearn.ensemble import HistGradientBoostingClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.meta import GroupDROMetaClassifier
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = GroupDROMetaClassifier(HistGradientBoostingClassifier(max_iter=20), n_iter=3,
    ...                              random_state=0).fit(X, y, group_labels=g)
    >>> clf.history_["q"].shape
    (3, 4)
    """

    __metadata_request__fit = {"group_labels": True, "X_val": True, "y_val": True, "group_labels_val": True}

    def __init__(self, estimator, *, n_iter=10, eta=1.0, loss="log_loss", prediction="average", monitor="auto",
                 n_jobs=None, random_state=None, verbose=0):
        self.estimator = estimator
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
        """Play ``n_iter`` rounds of weighted fits against exponentiated-gradient group weights.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Passed to the base estimator as is.
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,) or (n_samples, n_groups), default=None
            One group id per row, or a boolean membership matrix (a row in
            several groups carries each one's weight; a row in none gets
            weight 0). None: the classes are the groups.
        X_val, y_val, group_labels_val : validation rows, default=None
            To select the iterates that predict (``prediction``).
        **fit_params : dict
            Passed to every fit of the base estimator; with metadata routing
            on, what it requests.

        Returns
        -------
        self
        """
        X, y, y_enc = self._check_fit_data(X, y)
        routed = self._route_fit({"group_labels": group_labels, "X_val": X_val, "y_val": y_val,
                                  "group_labels_val": group_labels_val}, fit_params)["estimator"]
        membership = self._membership(group_labels, y_enc)
        empty = [name for name, c in zip(membership.names, membership.counts) if c == 0]
        if empty:
            raise ValueError(
                f"group_labels: groups {empty} have no training row; drop their columns from the membership "
                "matrix (Group DRO needs a loss for every group)."
            )
        game = _GroupGame(membership.matrix, self.eta)
        self.group_names_ = tuple(membership.names)
        self._fit_game(X, y, y_enc, routed, game, X_val, y_val, group_labels_val)
        self.q_ = game.q
        return self


def _search_space(data):
    # eta: Hedge's step sqrt(8 ln G / T) / B is about 1 for a few groups, T = 10 rounds and log losses of
    # range ~1; a factor 3 either side (at 10, q jumps to one group a round and the average oscillates:
    # docs/wrappers.rst). T = 10 rounds (the cost: 10 fits).
    return {"eta": [0.3, 1.0, 3.0], "n_iter": [10]}


register_method(MethodSpec(
    GroupDROMetaClassifier,
    search_space=_search_space,
    fast_params={"estimator": quick_estimator(), "n_iter": 3},
    check_params={"estimator": quick_estimator(), "n_iter": 3},
    wraps_estimator=True,
    finetune=False,
))
