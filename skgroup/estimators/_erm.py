"""Empirical risk minimisation: the reference every robust method is compared with."""

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight

from ..objectives import Objective, Weighted
from ..engine import HeadExecutor, Stage
from ..utils import fill_doc
from ._base import BaseHeadClassifier, LOSS_CONSTRAINT
from ._spec import MethodSpec, register_method

__all__ = ["ERMClassifier", "stage_estimator"]


@fill_doc
class ERMClassifier(BaseHeadClassifier):
    """Softmax head trained by (weighted) empirical risk minimisation.

    .. math:: \\min_W \\frac{\\sum_i w_i\\,\\ell(W x_i, y_i)}{\\sum_i w_i} + \\frac{\\lambda}{2}\\lVert W\\rVert^2

    (``w_i = 1`` without sample or class weights; integer weights are the
    same as repeating rows.) With a linear head and the default full-batch
    L-BFGS it is multinomial logistic regression: on the same features it
    reaches the model of :class:`sklearn.linear_model.LogisticRegression` at
    the equivalent regularisation (see ``l2_reg``). Group labels are not
    used in training.

    Defaults: full-batch L-BFGS to the gradient tolerance ``tol`` with the
    weak penalty ``l2_reg=1e-4`` (scikit-learn's ``C=1`` at 20,000 rows for
    two classes).

    Parameters
    ----------
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, as in scikit-learn;
        'balanced' uses ``n_samples / (n_classes * bincount(y))``.
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
    coef_ : ndarray of shape (n_classes, n_features)
        Weights of a linear head, one row per class (also for two classes).
    intercept_ : ndarray of shape (n_classes,)
    coefs_, intercepts_ : lists of ndarray
        Weights of every layer (``coefs_[i]`` has shape (fan_in, fan_out)).
    n_iter_ : int
        L-BFGS iterations or epochs run.
    loss_curve_ : list of float
        Training objective after each L-BFGS iteration or epoch.
    history_ : dict of ndarray
        Per-epoch (iteration) records: ``train_loss``, ``step``, and the
        ``val_*`` scores when validating.
    validation_scores_ : dict of ndarray or None
        Every validation score per epoch (``accuracy``, ``loss``,
        ``worst_class_accuracy``, and ``worst_group_accuracy`` /
        ``bias_unsupervised`` when their data exists); None without validation.
    best_iteration_ : int or None
        The epoch (1-based) whose weights were kept, with validation.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import ERMClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(500, random_state=0)
    >>> ERMClassifier(random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """

    _reference_learning_rate = 1e-3
    _compare_to_erm = False  # it is the reference
    # ERM aims at average accuracy: stopping on a worst-class or worst-group score trades it away
    _auto_monitor = "loss"

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        **LOSS_CONSTRAINT,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        *,
        class_weight=None,
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
        self.class_weight = class_weight
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
    def fit(self, X, y, sample_weight=None, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample loss weights, multiplied with the class weights.
        group_labels : array-like, default=None
            Not used in training; only to stratify the internal validation
            split and to score it (``monitor='worst_group_accuracy'``).
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and checkpoint selection.
        """
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val, sample_weight=sample_weight)

    def _plan(self, ctx):
        weights = ctx.sample_weight
        if self.class_weight is not None:
            cw = compute_sample_weight(self.class_weight, self.classes_[ctx.y])
            weights = cw if weights is None else weights * cw
        reduction = None if weights is None else Weighted(weights)
        objective = Objective(self._loss(ctx), reduction)
        yield Stage("erm", objective, ctx.options, seed=ctx.seed(0))


def _search_space(data):
    # L2 from weak (the default, sklearn's C=1 at 20,000 rows) to strong: strong L2 is what
    # Sagawa et al. (2020) show matters for worst-group generalisation; with early stopping
    # on the validation split this is also the ERM baseline of Kulkarni et al.'s model selection
    return {"l2_reg": [1e-4, 1e-2, 1.0]}


register_method(MethodSpec(
    ERMClassifier,
    search_space=_search_space,
    fast_params={},
    check_params=dict(dtype="float64", tol=1e-10, max_iter=500),
    benchmark_grid={"l2_reg": [1e-5, 1e-4, 1e-3, 1e-2]},
    quick_grid={"l2_reg": [1e-4, 1e-2]},
))


def stage_estimator(ctx, result, options, seed):
    """A trained stage as a user sees it (JTT's identification model, AFR's first stage).

    On cached features: a fitted :class:`ERMClassifier` holding the stage's
    head; while fine-tuning (another executor): the StageResult itself, whose
    module is the whole backbone.
    """
    executor = ctx.executor
    if not isinstance(executor, HeadExecutor):
        return result
    est = ERMClassifier(hidden_layer_sizes=executor.hidden_layer_sizes, l2_reg=options.l2_reg,
                        solver=options.solver, max_iter=options.max_iter, batch_size=options.batch_size,
                        learning_rate=options.learning_rate, lr_schedule=options.lr_schedule, tol=options.tol,
                        device=options.device, dtype=options.dtype, random_state=seed)
    est.classes_ = executor.classes
    est.n_features_in_ = executor.X.shape[1]
    est._store_result(result, validated=False)
    return est
