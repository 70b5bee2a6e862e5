"""Focal loss (Lin et al., ICCV 2017): SubpopBench's Focal."""

from numbers import Real

from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ..engine import Stage
from ..objectives import FocalLoss, Objective
from ..utils import fill_doc
from ._base import BaseHeadClassifier
from ._spec import MethodSpec, register_method

__all__ = ["FocalClassifier"]


@fill_doc
class FocalClassifier(BaseHeadClassifier):
    """Softmax head trained with the focal loss.

    T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal Loss for
    Dense Object Detection", ICCV 2017 (eq. 4, in its softmax form), one of
    SubpopBench's class-imbalance baselines (Yang et al., "Change is Hard: A
    Closer Look at Subpopulation Shift", ICML 2023):

    .. math:: \\min_W \\frac{1}{n}\\sum_i -(1 - p_{y_i}(x_i))^{\\gamma} \\log p_{y_i}(x_i)
              + \\frac{\\lambda}{2}\\lVert W\\rVert^2 ,\\qquad p(x) = \\mathrm{softmax}(W x + b).

    The factor :math:`(1 - p_y)^\\gamma` shrinks the loss of rows the model
    already fits, so training concentrates on the hard ones, which under
    class imbalance are mostly the minority class's. ``gamma=0`` is
    :class:`ERMClassifier`. Neither class nor group labels enter the loss;
    group labels are not used in training.

    Defaults and why: ``gamma=1.0``, SubpopBench's default (its search
    range is ``0.5 * 10^U(0, 1)``, i.e. 0.5 to 5; Lin et al. use 2 for
    detection); otherwise :class:`ERMClassifier`'s: full-batch L-BFGS to
    the gradient tolerance ``tol`` (the loss is smooth, so L-BFGS applies;
    it differentiates the focal loss by autograd on the logits) and
    ``l2_reg=1e-4``. SubpopBench fine-tunes whole networks with SGD and
    selects the checkpoint on validation; ``early_stopping`` does the latter
    on frozen features, and :class:`skgroup.finetune.FineTuneClassifier`
    (``method=FocalClassifier()``) the former. Measurements:
    ``docs/methods/class_imbalance.rst``.

    Parameters
    ----------
    gamma : float >= 0, default=1.0
        The focusing exponent.
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
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier`.

    Examples
    --------
    >>> from skgroup import FocalClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(500, random_state=0)
    >>> FocalClassifier(gamma=2.0, random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        "gamma": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        gamma=1.0,
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
        yield Stage("focal", Objective(FocalLoss(self.gamma)), ctx.options, seed=ctx.seed(0))


def _search_space(data):
    # gamma: SubpopBench's hparams_registry.py samples 0.5 * 10^U(0, 1) (0.5 to 5, default 1);
    # four points over that range. L2: ERM's weak default and a strong one (as ERM's space)
    return {"gamma": [0.5, 1.0, 2.0, 5.0], "l2_reg": [1e-4, 1e-2]}


register_method(MethodSpec(
    FocalClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 50},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500),
    quick_grid={"gamma": [1.0, 2.0], "max_iter": [50]},
))
