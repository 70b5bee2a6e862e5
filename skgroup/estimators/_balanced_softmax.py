"""Balanced Softmax (Ren et al., NeurIPS 2020) and the logit-adjusted loss (Menon et al., ICLR 2021):
SubpopBench's BSoftmax."""

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from ..engine import Stage
from ..objectives import LogitAdjustedLoss, Objective
from ..utils import fill_doc
from ._base import BaseHeadClassifier
from ._spec import MethodSpec, register_method

__all__ = ["BalancedSoftmaxClassifier"]


@fill_doc
class BalancedSoftmaxClassifier(BaseHeadClassifier):
    """Softmax head trained with Balanced Softmax, the logit-adjusted loss.

    J. Ren, C. Yu, S. Sheng, X. Ma, H. Zhao, S. Yi, H. Li, "Balanced
    Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020 (eq. 4),
    SubpopBench's ``BSoftmax`` (Yang et al., ICML 2023); with ``tau``, the
    logit-adjusted loss of A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain,
    A. Veit, S. Kumar, "Long-tail learning via logit adjustment", ICLR 2021
    (eq. 10). With the training class priors :math:`\\pi_c = n_c / n`,

    .. math:: \\min_W \\frac{1}{n}\\sum_i -\\log
              \\frac{e^{z_{y_i}(x_i) + \\tau \\log \\pi_{y_i}}}{\\sum_c e^{z_c(x_i) + \\tau \\log \\pi_c}}
              + \\frac{\\lambda}{2}\\lVert W\\rVert^2 ,\\qquad z(x) = W x + b,

    and prediction by the plain logits, :math:`\\arg\\max_c z_c(x)`. The
    training softmax models the skewed training distribution through the
    prior offsets, so the plain logits estimate the class-balanced
    posterior: the minority class is no longer under-predicted. ``tau=1`` is
    Balanced Softmax (its ``z_c + log n_c`` differs from ``z_c + log pi_c``
    by a constant per row) and is Fisher consistent for the balanced error;
    ``tau=0`` is :class:`ERMClassifier`. Group labels are not used in
    training.

    This is the logit adjustment *in the loss*. Menon et al.'s *post-hoc*
    logit adjustment (train by cross-entropy, predict
    :math:`\\arg\\max_c z_c(x) - \\tau \\log \\pi_c`) is a different method and
    is not implemented as such. They coincide here in one case: the last
    layer's intercepts are free (skgroup's L2 penalty leaves them out), so
    the offsets can be absorbed into them, and the objective is ERM's in
    :math:`b' = b + \\tau \\log \\pi`; trained to its optimum (a linear head
    under L-BFGS), the model is ERM's with the intercepts moved by
    :math:`-\\tau \\log \\pi_c`, i.e. post-hoc adjusted ERM. They differ where
    training stops before the optimum (minibatch epochs, early stopping),
    for non-convex heads (the path starts from other intercepts), and where
    the intercepts are penalised (the papers' SGD weight decay).

    Defaults and why: ``tau=1.0`` (SubpopBench has no parameter: its
    BSoftmax is ``tau=1``; Menon et al.'s default); :class:`ERMClassifier`'s
    solver (full-batch L-BFGS) and ``l2_reg=1e-4``. Measurements:
    ``docs/methods/class_imbalance.rst``.

    Parameters
    ----------
    tau : float >= 0, default=1.0
        Strength of the prior offsets.
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
    class_prior_ : ndarray of shape (n_classes,)
        The training class priors :math:`\\pi_c`.
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from skgroup import BalancedSoftmaxClassifier
    >>> X = np.random.RandomState(0).randn(100, 3)
    >>> y = np.r_[np.zeros(80), np.ones(20)].astype(int)
    >>> BalancedSoftmaxClassifier(random_state=0).fit(X, y).class_prior_.tolist()
    [0.8, 0.2]
    """

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        "tau": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        tau=1.0,
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
        self.tau = tau
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
        counts = np.bincount(ctx.y, minlength=ctx.n_classes)
        self.class_prior_ = counts / counts.sum()
        loss = LogitAdjustedLoss(self.tau).bind(ctx.y, ctx.n_classes)
        yield Stage("balanced_softmax", Objective(loss), ctx.options, seed=ctx.seed(0))


def _search_space(data):
    # SubpopBench's BSoftmax has no hyperparameter of its own (tau = 1, hparams_registry.py);
    # Menon et al. (2021) vary tau around their default 1 (Sec. 6), hence 0.5, 1, 2. L2: ERM's
    # weak default and a strong one
    return {"tau": [0.5, 1.0, 2.0], "l2_reg": [1e-4, 1e-2]}


register_method(MethodSpec(
    BalancedSoftmaxClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 50},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500),
    quick_grid={"tau": [1.0], "l2_reg": [1e-4, 1e-2]},
))
