"""Automatic Feature Reweighting (Qiu et al., ICML 2023): retrain the last layer
with the rows an ERM model finds hard upweighted, held near the ERM weights."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions

from ..objectives import Objective, Weighted
from ..engine import ProximalPenalty, Stage
from ..utils import fill_doc
from ..utils._warnings import warn
from ._base import BaseHeadClassifier
from ._erm import stage_estimator
from ._spec import MethodSpec, register_method

__all__ = ["AFRClassifier", "afr_weights"]


def afr_weights(logits, y, gamma, class_balance="count"):
    """AFR's per-sample weights from the first-stage logits; they sum to 1.

    .. math:: w_i \\propto \\beta_{y_i}\\, e^{-\\gamma\\, \\hat p_i(y_i)}

    with :math:`\\hat p_i(y_i)` the first-stage model's softmax probability
    of the true class. ``class_balance``: 'count' sets
    :math:`\\beta_c = n / n_c` (the paper's and its code's class
    rebalancing: as if every class had as many rows), 'sum' rescales each
    class's weights to the same total, 'none' sets :math:`\\beta_c = 1`.

    Parameters
    ----------
    logits : array of shape (n_samples, n_classes)
    y : array of shape (n_samples,), encoded labels (0..n_classes-1)
    gamma : float >= 0
    class_balance : {'count', 'sum', 'none'}

    Returns
    -------
    weights : ndarray of shape (n_samples,), float64, summing to 1
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p_true = np.exp(log_p[np.arange(y.shape[0]), y])
    # in log space: the weights are normalised, and exp(-gamma * p) alone underflows to 0 for every row
    # at a large gamma (which would leave 0 / 0)
    log_w = -float(gamma) * p_true
    _, inverse = np.unique(y, return_inverse=True)
    if class_balance == "count":
        log_w = log_w + np.log(y.shape[0] / np.bincount(inverse)[inverse])
    elif class_balance == "sum":
        peak = np.full(inverse.max() + 1, -np.inf)
        np.maximum.at(peak, inverse, log_w)
        total = np.bincount(inverse, weights=np.exp(log_w - peak[inverse]))
        log_w = log_w - (peak + np.log(total))[inverse]
    elif class_balance != "none":
        raise ValueError(f"class_balance must be 'count', 'sum' or 'none'; got {class_balance!r}.")
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


@fill_doc
class AFRClassifier(BaseHeadClassifier):
    """Automatic Feature Reweighting: ERM, then the last layer retrained on upweighted hard rows.

    Qiu, Potapczynski, Izmailov & Wilson, "Simple and Fast Group Robustness
    by Automatic Feature Reweighting", ICML 2023. No group labels in
    training (the paper uses them on validation only, to select gamma,
    lambda and the second stage's epoch).

    1. Stage 1: ERM on a class-stratified ``first_stage_fraction`` of the
       training rows (the paper: 80%).
    2. Stage 2, on the other rows: per-sample weights from the stage-1
       model's probability of the true class,
       :math:`w_i \\propto \\beta_{y_i} e^{-\\gamma \\hat p_i(y_i)}` (see
       :func:`afr_weights`), normalised to sum to 1; then the last layer
       (W, b), starting from the stage-1 weights (W_1, b_1), minimises

       .. math:: \\sum_i w_i\\, \\ell(W h_i + b, y_i)
                 + \\lambda \\big(\\lVert W - W_1\\rVert^2 + \\lVert b - b_1\\rVert^2\\big)

       full batch, by L-BFGS through the engine (the pull is a
       :class:`~skgroup.engine.ProximalPenalty`). Hidden layers of an MLP
       head stay frozen; for a linear head h is X.

    Search space (the paper's code, ``notebooks/wb_celeba.ipynb``): on
    Waterbirds ``gamma`` in ``np.linspace(4, 20, 33)`` and ``reg_coeff`` in
    {0, 0.1, 0.2, 0.3}; on CelebA ``gamma`` in ``np.linspace(1, 3, 10)``
    and ``reg_coeff`` in ``np.logspace(-3, -1, 3)``; each run selected on
    validation worst-group accuracy, as is the epoch of stage 2
    (``early_stopping`` with validation data here).

    Defaults and why: ``first_stage_fraction=0.8`` is the paper's.
    ``class_balance='sum'`` gives each class the same total weight whatever
    gamma does inside it; the paper's count rebalancing multiplies a class
    by ``n / n_c`` *after* the exponential, so when the stage-1 model is
    confident on the majority class the minority class's share grows with
    gamma, until the model predicts the minority class for most rows.
    ``gamma=4`` and ``reg_coeff=0.01``
    are what validation worst-group accuracy selects there (with 'sum'); on
    other data tune both (the grids above). Stage 1 is
    :class:`ERMClassifier`'s default (full-batch L-BFGS, ``l2_reg=1e-4``).
    Measurements: ``docs/methods/afr.rst``.

    Differences from the reference code (github.com/AndPotap/afr): stage 2
    runs L-BFGS on the convex full-batch objective (to ``tol``, at most
    ``second_stage_max_iter`` iterations, each an "epoch" for early
    stopping) where the code runs 500-1000 full-batch SGD steps (learning
    rate 1e-2 to 2e-2, gradients clipped at norm 1) and keeps the best
    epoch; the code parametrises the last layer as the stage-1 layer plus a
    randomly initialised residual, here it starts at the stage-1 weights
    (the same objective); the default class rebalancing is 'sum' (see
    above; ``class_balance='count'`` is the code's).

    Parameters
    ----------
    gamma : float >= 0, default=4.0
        Temperature of the weights ``exp(-gamma * p_true)``; 0 gives
        (class-rebalanced) uniform weights.
    reg_coeff : float >= 0, default=0.01
        lambda: strength of the pull of the last layer toward the stage-1
        last layer (weights and bias), no 1/2 factor (as the code).
    first_stage_fraction : float in (0, 1), default=0.8
        Share of the training rows for stage 1 (class-stratified); stage 2
        reweights the rest.
    class_balance : {'count', 'sum', 'none'}, default='sum'
        Class rebalancing of the weights: 'sum' gives each class the same
        total weight, 'count' multiplies class c's by ``n / n_c`` (paper and
        code), 'none' leaves them.
    second_stage_max_iter : int, default=200
        L-BFGS iterations of stage 2.
    {hidden_layer_sizes}
    l2_reg : float, default=0.0001
        L2 penalty ``l2_reg / 2 * ||W||^2`` of the stage-1 ERM model (stage
        2 has the pull toward it instead).
    solver : {'lbfgs', 'adamw', 'sgd'}, default='lbfgs'
        Solver of stage 1 (stage 2 is always full-batch L-BFGS).
    max_iter : int, default=200
        Stage 1: L-BFGS iterations, or epochs for the minibatch solvers.
    {batch_size}
    {learning_rate}
    {lr_schedule}
    {tol}
    {early_stopping}
    {validation_fraction}
    {monitor}
    {n_iter_no_change}
    {restore_best}
    {callbacks}
    {device}
    {dtype}
    {random_state}
    {verbose}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    first_stage_model_ : ERMClassifier
        The stage-1 model.
    first_stage_indices_, second_stage_indices_ : ndarray of int
        Rows of ``fit``'s X each stage trained on (sorted).
    sample_weight_ : ndarray of shape (n_second_stage,)
        Stage-2 weights, in the order of ``second_stage_indices_``; they
        sum to 1.
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier` (of stage 2).

    Examples
    --------
    >>> from skgroup import AFRClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = AFRClassifier(random_state=0).fit(X, y)
    >>> clf.second_stage_indices_.shape, round(clf.sample_weight_.sum(), 6)
    ((200,), 1.0)
    """

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        "gamma": [Interval(Real, 0, None, closed="left")],
        "reg_coeff": [Interval(Real, 0, None, closed="left")],
        "first_stage_fraction": [Interval(Real, 0, 1, closed="neither")],
        "class_balance": [StrOptions({"count", "sum", "none"})],
        "second_stage_max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        gamma=4.0,
        reg_coeff=0.01,
        first_stage_fraction=0.8,
        class_balance="sum",
        second_stage_max_iter=200,
        hidden_layer_sizes=(),
        l2_reg=1e-4,
        solver="lbfgs",
        max_iter=200,
        batch_size="auto",
        learning_rate=1e-3,
        lr_schedule="constant",
        tol=1e-5,
        early_stopping="auto",
        validation_fraction=0.1,
        monitor="auto",
        n_iter_no_change=10,
        restore_best=True,
        callbacks=None,
        device="cpu",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.gamma = gamma
        self.reg_coeff = reg_coeff
        self.first_stage_fraction = first_stage_fraction
        self.class_balance = class_balance
        self.second_stage_max_iter = second_stage_max_iter
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l2_reg = l2_reg
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.n_iter_no_change = n_iter_no_change
        self.restore_best = restore_best
        self.callbacks = callbacks
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fit stage 1 on part of the rows, reweight and retrain the last layer on the rest.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used in training; only to stratify the internal validation
            split and to score it (``monitor='worst_group_accuracy'``).
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and epoch (L-BFGS iteration) selection of
            stage 2.
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _split(self, y, seed):
        n = y.shape[0]
        n_first = int(round(self.first_stage_fraction * n))
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < 2 or n_first < classes.shape[0] or n - n_first < classes.shape[0]:
            raise ValueError(
                f"first_stage_fraction={self.first_stage_fraction} of {n} training rows cannot put "
                f"every class in both stages (the smallest class has {counts.min()} rows): add rows "
                "or choose a fraction nearer 0.5."
            )
        first, second = train_test_split(np.arange(n), train_size=n_first, stratify=y, random_state=seed)
        return np.sort(first), np.sort(second)

    def _plan(self, ctx):
        first_rows, second_rows = self._split(ctx.y, ctx.seed(0) % (2**32))
        stage1 = yield Stage("erm", Objective(), ctx.options, rows=first_rows, seed=ctx.seed(1), validate=False)
        self.first_stage_model_ = stage_estimator(ctx, stage1, ctx.options, ctx.seed(1))
        weights = afr_weights(stage1.logits(second_rows), ctx.y[second_rows], self.gamma, self.class_balance)
        full = np.zeros(ctx.n_samples)
        full[second_rows] = weights
        self.first_stage_indices_ = ctx.rows[first_rows]
        self.second_stage_indices_ = ctx.rows[second_rows]
        self.sample_weight_ = weights
        effective = 1.0 / float(np.sum(weights ** 2))
        if effective < min(10.0, 0.5 * weights.shape[0]):
            warn(
                f"AFR's weights with gamma={self.gamma:g} put nearly all the weight on the hardest rows: an "
                f"effective {effective:.1f} of the {weights.shape[0]} second-stage rows, so the last layer is "
                "retrained on those alone. Lower gamma (the paper searches 4-20 on Waterbirds, 1-3 on CelebA).",
                UserWarning,
            )
        options = ctx.options.replace(solver="lbfgs", max_iter=self.second_stage_max_iter, l2_reg=0.0)
        penalty = ProximalPenalty(stage1.module, self.reg_coeff) if self.reg_coeff > 0 else None
        with warnings.catch_warnings():
            if self.reg_coeff == 0:
                # without the pull the weighted loss may be minimised only at infinity: the
                # iteration budget (or early stopping) is then the regulariser, as in the paper
                warnings.filterwarnings("ignore", category=ConvergenceWarning)
            yield Stage("reweight", Objective(reduction=Weighted(full, rows=second_rows)), options, rows=second_rows, init=stage1,
                        trainable="head", penalty=penalty, seed=ctx.seed(2))


def _search_space(data):
    # Qiu et al. (2023) search gamma in linspace(1, 3, 10) on CelebA and linspace(4, 20, 33)
    # on Waterbirds, reg_coeff in logspace(-3, -1, 3) and {0, 0.1, 0.2, 0.3}: three points
    # across both spans each (docs/methods/afr.rst).
    return {"gamma": [2.0, 4.0, 8.0], "reg_coeff": [0.0, 0.01, 0.1]}


register_method(MethodSpec(
    AFRClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 20, "second_stage_max_iter": 20},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500, second_stage_max_iter=500),
    # the paper's gamma range spans 1-20 across datasets (see docs/methods/afr.rst)
    benchmark_grid={"gamma": [2.0, 4.0, 6.0, 8.0], "reg_coeff": [0.0, 0.001, 0.01, 0.1]},
    quick_grid={"gamma": [2.0, 4.0], "second_stage_max_iter": [50]},
))
