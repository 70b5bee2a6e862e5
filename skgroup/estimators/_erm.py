"""Empirical risk minimisation: the reference every robust method is compared with."""

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight

from .._objectives import MeanLoss, WeightedLoss
from ._base import HEAD_PARAMS_DOC, BaseHeadClassifier

__all__ = ["ERMClassifier"]


class ERMClassifier(BaseHeadClassifier):
    __doc__ = (
        """Softmax head trained by (weighted) empirical risk minimisation.

    .. math:: \\min_W \\frac{\\sum_i w_i\\,\\ell(W x_i, y_i)}{\\sum_i w_i} + \\frac{\\lambda}{2}\\lVert W\\rVert^2

    (``w_i = 1`` without sample or class weights; integer weights are the
    same as repeating rows.)

    With a linear head and the default full-batch L-BFGS it is multinomial
    logistic regression: on the same features it reaches the accuracy of
    :class:`sklearn.linear_model.LogisticRegression` at the equivalent
    regularisation (see ``l2_reg``). Group labels are not used.

    Parameters
    ----------
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, as in scikit-learn;
        'balanced' uses ``n_samples / (n_classes * bincount(y))``.
"""
        + HEAD_PARAMS_DOC.format(
            l2_reg=1e-4, solver="lbfgs", max_iter=200, batch_size="auto", learning_rate=1e-3
        )
        + """
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
        Objective at the start and after each L-BFGS iteration, or per epoch.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import ERMClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(500, random_state=0)
    >>> ERMClassifier(random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """
    )

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        *,
        class_weight=None,
        hidden_layer_sizes=(),
        l2_reg=1e-4,
        solver="lbfgs",
        max_iter=200,
        batch_size="auto",
        learning_rate=1e-3,
        tol=1e-5,
        device="cpu",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.class_weight = class_weight
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l2_reg = l2_reg
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample loss weights, multiplied with the class weights.
        """
        X, y_enc = self._validate_fit_data(X, y)
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.class_weight is not None:
            cw = compute_sample_weight(self.class_weight, self.classes_[y_enc])
            weights = cw if weights is None else weights * cw
        objective = MeanLoss() if weights is None else WeightedLoss(weights)
        self._train(X, y_enc, objective)
        return self
