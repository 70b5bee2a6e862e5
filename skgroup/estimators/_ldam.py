"""LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019): SubpopBench's LDAM, and LDAM-DRW."""

import math
from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ..engine import Stage
from ..objectives import LDAMLoss, Objective, Weighted, effective_number_weights
from ..utils import fill_doc
from ._base import BaseHeadClassifier
from ._spec import MethodSpec, register_method

__all__ = ["LDAMClassifier"]


@fill_doc
class LDAMClassifier(BaseHeadClassifier):
    """Softmax head trained with the LDAM loss and deferred re-weighting (LDAM-DRW).

    K. Cao, C. Wei, A. Gaidon, N. Arechiga, T. Ma, "Learning Imbalanced
    Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019
    (eq. 13 and Algorithm 1). The loss asks the true class to win by a
    margin that grows as the class shrinks,

    .. math:: \\ell(z, y) = -\\log \\frac{e^{s (z_y - \\Delta_y)}}{e^{s (z_y - \\Delta_y)}
              + \\sum_{j \\neq y} e^{s z_j}},\\qquad \\Delta_c = \\frac{C}{n_c^{1/4}},

    with C such that the rarest class's margin is ``max_margin``. Deferred
    re-weighting (DRW): the first ``drw_start`` of training minimises the
    plain mean LDAM loss; the rest weights each row by its class's
    effective-number weight :math:`(1-\\beta)/(1-\\beta^{n_c})` (Cui et al.,
    2019; :class:`CBLossClassifier`), so the representation is learnt
    without re-weighting and the re-weighting then moves the decision
    boundary. The plan has two stages: ``'ldam'`` (not validated: it always
    runs its share) and ``'drw'``, which starts from its weights and is the
    one validation and early stopping watch. ``drw_start=1`` is LDAM
    without re-weighting (SubpopBench's LDAM); ``drw_start=0`` re-weights
    from the start (the paper's LDAM-RW). Group labels are not used in
    training.

    How the stages are cut: with the minibatch solvers the epochs are split,
    ``floor(drw_start * max_iter)`` epochs then the rest (the paper: 160 of
    200); with full-batch L-BFGS each stage runs to the tolerance (up to
    ``max_iter`` iterations) — a linear head's objective is convex, so the
    re-weighted stage reaches the minimiser of LDAM with class-balanced
    weights from any start and the first stage is only its warm start;
    with an MLP head or a whole backbone (``FineTuneClassifier(method=
    LDAMClassifier())``) the first stage shapes the features, as in the
    paper.

    Defaults and why: ``max_margin=0.5``, ``scale=30`` (the authors' code
    and SubpopBench's defaults), ``drw_start=0.8`` and ``drw_beta=0.9999``
    (the authors' CIFAR schedule, ``idx = epoch // 160`` of 200 epochs,
    ``betas = [0, 0.9999]``); :class:`ERMClassifier`'s solver (full-batch
    L-BFGS) and ``l2_reg=1e-4``. Measurements: ``docs/methods/class_imbalance.rst``.

    Differences from the references (``docs/methods/class_imbalance.rst``): the
    authors' network normalises features and class weights (cosine logits,
    to which ``s`` applies); SubpopBench, and this estimator, apply the
    margin and ``s`` to the plain head's logits. The authors drop the
    learning rate 100-fold when re-weighting starts and keep the SGD
    momentum; here the second stage starts a fresh optimizer at the
    stage's rate and schedule. The weighted mean is normalised by the sum
    of the row weights (``docs/design.rst``), where the authors' weighted
    ``F.cross_entropy`` is normalised per batch: the same full-batch
    objective.

    Parameters
    ----------
    max_margin : float > 0, default=0.5
        The rarest class's margin (the paper's and SubpopBench's ``max_m``).
    scale : float > 0, default=30.0
        The logits' scale s.
    drw_start : float in [0, 1], default=0.8
        Share of the training (minibatch epochs) before re-weighting starts;
        under L-BFGS only 0 (no first stage), 1 (no re-weighting) or in
        between (both stages) matters.
    drw_beta : float in [0, 1), default=0.9999
        The effective-number beta of the deferred re-weighting.
    {hidden_layer_sizes}
    {l2_reg}
    {solver}
    max_iter : int, default=200
        L-BFGS iterations of each stage, or epochs of the whole training for
        the minibatch solvers (split by ``drw_start``).
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
    class_counts_ : ndarray of shape (n_classes,)
        Training rows per class.
    margins_ : ndarray of shape (n_classes,)
        The margins :math:`\\Delta_c`.
    class_weight_ : ndarray of shape (n_classes,)
        The deferred re-weighting's class weights (normalised to sum to the
        number of classes); ones with ``drw_start=1``.
    n_iter_before_drw_ : int
        Epochs (L-BFGS iterations) of the unweighted first stage; 0 without one.
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier`, of the last stage.

    Examples
    --------
    >>> import numpy as np
    >>> from skgroup import LDAMClassifier
    >>> X = np.random.RandomState(0).randn(1700, 3)
    >>> y = np.r_[np.zeros(1600), np.ones(100)].astype(int)
    >>> LDAMClassifier(random_state=0).fit(X, y).margins_.round(6).tolist()
    [0.25, 0.5]
    """

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        "max_margin": [Interval(Real, 0, None, closed="neither")],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "drw_start": [Interval(Real, 0, 1, closed="both")],
        "drw_beta": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        *,
        max_margin=0.5,
        scale=30.0,
        drw_start=0.8,
        drw_beta=0.9999,
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
        self.max_margin = max_margin
        self.scale = scale
        self.drw_start = drw_start
        self.drw_beta = drw_beta
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
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used in training; only to stratify the internal validation
            split and to score it.
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and checkpoint selection (of the re-weighted
            stage).
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _stage_lengths(self, options):
        """Epochs (L-BFGS: most iterations) of the unweighted and the re-weighted stage; 0: no such stage."""
        if self.drw_start >= 1:
            return options.max_iter, 0
        if self.drw_start <= 0:
            return 0, options.max_iter
        if options.solver == "lbfgs":
            return options.max_iter, options.max_iter
        total = int(options.max_iter)
        first = min(int(math.floor(self.drw_start * total + 1e-9)), total - 1)
        return first, total - first

    def _plan(self, ctx):
        loss = LDAMLoss(self.max_margin, self.scale).bind(ctx.y, ctx.n_classes)
        counts = np.bincount(ctx.y, minlength=ctx.n_classes)
        self.class_counts_ = counts
        self.margins_ = loss.margins(counts)
        first, second = self._stage_lengths(ctx.options)
        self.class_weight_ = (effective_number_weights(counts, self.drw_beta) if second
                              else np.ones(ctx.n_classes))
        self.n_iter_before_drw_ = 0
        init = "fresh"
        if first:
            result = yield Stage("ldam", Objective(loss), ctx.options.replace(max_iter=first), seed=ctx.seed(0),
                                 validate=not second)
            self.n_iter_before_drw_ = result.n_iter if second else 0
            if not second:
                return
            init = result
        weights = Weighted(self.class_weight_[ctx.y], name="class_weight_")
        yield Stage("drw", Objective(loss, weights), ctx.options.replace(max_iter=second), init=init,
                    seed=ctx.seed(1))


def _search_space(data):
    # SubpopBench's hparams_registry.py: max_m ~ 10^U(-1, -0.1) (0.1 to 0.79, default 0.5), four
    # points about log-spaced over it (0.8 for its top, 10^-0.1); scale s in {10, 30} (default 30). DRW at
    # the authors' schedule
    return {"max_margin": [0.1, 0.2, 0.4, 0.8], "scale": [10.0, 30.0]}


register_method(MethodSpec(
    LDAMClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 30},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500),
    quick_grid={"max_margin": [0.2, 0.5], "max_iter": [50]},
))
