"""Class-balanced loss with effective-number weights (Cui et al., CVPR 2019): SubpopBench's CBLoss."""

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ..engine import Stage
from ..objectives import Objective, Weighted, effective_number_weights
from ..utils import fill_doc
from ._base import BaseHeadClassifier, LOSS_CONSTRAINT
from ._spec import MethodSpec, register_method

__all__ = ["CBLossClassifier"]


@fill_doc
class CBLossClassifier(BaseHeadClassifier):
    """Softmax head trained with the class-balanced loss (effective number of samples).

    Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss
    Based on Effective Number of Samples", CVPR 2019 (eq. 4-5), one of
    SubpopBench's class-imbalance baselines (Yang et al., ICML 2023). Class c
    of :math:`n_c` training rows covers an expected volume ("effective
    number") :math:`E_{n_c} = (1 - \\beta^{n_c}) / (1 - \\beta)`, and its
    rows' losses are weighted by the inverse:

    .. math:: w_c = \\frac{1 - \\beta}{1 - \\beta^{n_c}},\\qquad
              \\min_W \\frac{\\sum_i w_{y_i}\\,\\ell(W x_i, y_i)}{\\sum_i w_{y_i}}
              + \\frac{\\lambda}{2}\\lVert W\\rVert^2 .

    ``beta=0`` is :class:`ERMClassifier`; ``beta -> 1`` is inverse-frequency
    re-weighting (``MixtureBalancedClassifier(balancing='upweighting')``); in
    between, classes much larger than :math:`1/(1-\\beta)` rows are weighted
    alike and smaller ones by their inverse size. ``loss`` is the per-row
    loss the weights apply to: cross-entropy (SubpopBench's CBLoss, the
    paper's class-balanced softmax) or ``'focal'`` / a
    :class:`~skgroup.objectives.FocalLoss` (the paper's class-balanced focal
    loss, in softmax form). Group labels are not used in training.

    Defaults and why: ``beta=0.9999``, SubpopBench's default (search range
    ``1 - 10^U(-5, -2)``) and the LDAM-DRW authors' re-weighting setting;
    :class:`ERMClassifier`'s solver (full-batch L-BFGS) and ``l2_reg=1e-4``.
    Measurements: ``docs/methods/class_imbalance.rst``.

    Differences from the references: the weighted mean is normalised by the
    sum of the row weights (``docs/design.rst``), where the paper's code and
    SubpopBench average ``w_{y_i} l_i`` with the class weights summing to
    the number of classes; that rescales the loss by a constant, i.e. the
    same model at a rescaled ``l2_reg``. SubpopBench weights the groups
    (class x attribute) when the training attributes are known (its
    ``--train_attr yes``) and the classes otherwise; this estimator weights
    the classes, as the paper does (for groups, pass
    ``effective_number_weights(group_counts, beta)[g]`` to
    :class:`~skgroup.objectives.Weighted` in an objective of your own).

    Parameters
    ----------
    beta : float in [0, 1), default=0.9999
        The effective-number hyperparameter.
    {loss}
    {hidden_layer_sizes}
    {l2_reg}
    {solver}
    {max_iter}
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
    class_weight_ : ndarray of shape (n_classes,)
        The weights :math:`w_c`, normalised to sum to the number of classes.
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from skgroup import CBLossClassifier
    >>> X = np.random.RandomState(0).randn(110, 3)
    >>> y = np.r_[np.zeros(100), np.ones(10)].astype(int)
    >>> CBLossClassifier(beta=0.99, random_state=0).fit(X, y).class_weight_.round(3).tolist()
    [0.262, 1.738]
    """

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        **LOSS_CONSTRAINT,
        "beta": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        *,
        beta=0.9999,
        loss=None,
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
        self.beta = beta
        self.loss = loss
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
            For early stopping and checkpoint selection.
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _plan(self, ctx):
        self.class_counts_ = np.bincount(ctx.y, minlength=ctx.n_classes)
        self.class_weight_ = effective_number_weights(self.class_counts_, self.beta)
        objective = Objective(self._loss(ctx), Weighted(self.class_weight_[ctx.y], name="class_weight_"))
        yield Stage("class_balanced", objective, ctx.options, seed=ctx.seed(0))


def _search_space(data):
    # beta: SubpopBench's hparams_registry.py samples 1 - 10^U(-5, -2) (0.99 to 0.99999, default
    # 0.9999); one point per decade of 1 - beta. The loss stays
    # cross-entropy, as in SubpopBench's CBLoss. L2: ERM's weak default and a strong one
    return {"beta": [0.99, 0.999, 0.9999, 0.99999], "l2_reg": [1e-4, 1e-2]}


register_method(MethodSpec(
    CBLossClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 50},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500),
    quick_grid={"beta": [0.999, 0.9999], "max_iter": [50]},
))
