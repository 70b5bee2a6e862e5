"""GradTune: fine-tune the last layer on the held-out samples with the largest
per-sample gradient norms (Kenfack et al., 2024). No group labels in training."""

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._cache import SHARED_FITS, canonical, fingerprint
from ..objectives import Objective, Weighted
from .._samplers import BalancedSampler
from ..engine import Stage, linear_layers, torch_dtype
from ..utils import fill_doc
from ..utils._warnings import warn
from ..engine._fit import MIN_HELD_OUT_PER_CLASS, encode_labels
from ._base import BaseHeadClassifier
from ._spec import MethodSpec, register_method
from ._erm import ERMClassifier

__all__ = ["GradTuneClassifier", "last_layer_gradient_norms"]

_CHUNK = 65536  # rows per block when computing norms (bounds float64 temporaries)


def _unwrap(estimator):
    return estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator


def _check_head(estimator, what="estimator", owner="GradTuneClassifier"):
    """The fitted skgroup head inside ``estimator`` (unwrapping a FrozenEstimator)."""
    estimator = _unwrap(estimator)
    if not isinstance(estimator, BaseHeadClassifier):
        raise TypeError(
            f"{what} must be a skgroup head classifier (e.g. ERMClassifier), whose last "
            f"layer is a linear softmax layer; got {type(estimator).__name__}."
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise NotFittedError(
            f"{what} ({type(estimator).__name__}) is not fitted: fit it first, or use "
            f"prefit=False to let {owner} fit it. Note that clone() (hence "
            "GridSearchCV and select_on_validation) returns unfitted copies: wrap a fitted "
            "estimator as sklearn.frozen.FrozenEstimator(estimator) to keep it fitted."
        ) from exc
    return estimator


def _last_layer_inputs(estimator, X):
    """The inputs h of the final Linear layer (X itself for a linear head), float64."""
    h = np.asarray(X, dtype=np.float64)
    for W, b in zip(estimator.coefs_[:-1], estimator.intercepts_[:-1]):
        h = np.maximum(h @ W.astype(np.float64) + b.astype(np.float64), 0.0)
    return h


def _norms_from_inputs(H, W, b, y_enc):
    """Last-layer gradient norms and ||h||^2 of rows with last-layer inputs H (float64)."""
    z = H @ W + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(p.shape[0]), y_enc] -= 1.0  # softmax(z) - onehot(y)
    sq = np.einsum("ij,ij->i", H, H)
    return np.linalg.norm(p, axis=1) * np.sqrt(sq + 1.0), sq


def _stage_norms(result, rows, y_enc):
    """Norms of the training rows ``rows`` under a stage's module (features from its executor)."""
    last = linear_layers(result.module)[-1]
    W = last.weight.detach().double().numpy().T
    b = last.bias.detach().double().numpy()
    norms = np.empty(rows.shape[0])
    sq = np.empty(rows.shape[0])
    for start in range(0, rows.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        H = result.features(rows[sl])
        norms[sl], sq[sl] = _norms_from_inputs(H, W, b, y_enc[rows[sl]])
    return norms, sq


def _scan(estimator, X, y_enc, rows=None):
    """Gradient norms and ||h||^2 of ``X[rows]``, in blocks (h is never whole in memory)."""
    rows = np.arange(X.shape[0]) if rows is None else rows
    W = estimator.coefs_[-1].astype(np.float64)
    b = estimator.intercepts_[-1].astype(np.float64)
    norms = np.empty(rows.shape[0], dtype=np.float64)
    sq = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        H = _last_layer_inputs(estimator, X[rows[sl]])
        norms[sl], sq[sl] = _norms_from_inputs(H, W, b, y_enc[rows[sl]])
    return norms, sq


def last_layer_gradient_norms(estimator, X, y):
    """Per-sample norm of the cross-entropy gradient w.r.t. the last layer.

    For the final Linear layer (weights W and bias b) of a fitted skgroup
    head, with h the layer's input (X for a linear head, the last hidden
    ReLU activation for an MLP head) and z = W h + b,

    .. math:: \\lVert \\nabla_{(W, b)}\\, \\ell(z, y) \\rVert_F
              = \\lVert \\mathrm{softmax}(z) - e_y \\rVert_2\\,\\sqrt{\\lVert h\\rVert^2 + 1},

    since the gradient is (softmax(z) - e_y) [h; 1]^T. The L2 penalty is not
    included. Computed in float64, vectorised, in blocks of rows.

    Parameters
    ----------
    estimator : fitted skgroup head classifier (e.g. ERMClassifier)
        Or a ``FrozenEstimator`` wrapping one.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Labels among ``estimator.classes_``.

    Returns
    -------
    norms : ndarray of shape (n_samples,)
    """
    estimator = _check_head(estimator)
    X = validate_data(estimator, X, dtype=[np.float64, np.float32], reset=False)
    y_enc = encode_labels(estimator.classes_, y)
    if y_enc.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y_enc.shape[0]}.")
    return _scan(estimator, X, y_enc)[0]


def select_finetune_set(norms, n_top, n_finetune, rng):
    """GradTune's fine-tuning set: the ``n_top`` largest norms, then
    ``n_finetune - n_top`` more drawn without replacement from the rest with
    probability proportional to their norm. Returns indices into ``norms``
    (the top ones first, in decreasing norm)."""
    order = np.argsort(-norms, kind="stable")
    top, rest = order[:n_top], order[n_top:]
    n_draw = n_finetune - n_top
    if n_draw <= 0:
        return top
    weights = norms[rest]
    positive = rest[weights > 0]
    if positive.shape[0] >= n_draw:
        p = weights[weights > 0]
        drawn = rng.choice(positive, size=n_draw, replace=False, p=p / p.sum())
    else:
        warn(
            f"Only {positive.shape[0]} of the remaining held-out rows have a non-zero "
            f"gradient norm, fewer than the {n_draw} to draw: the others are drawn "
            "uniformly among the zero-norm rows.",
            UserWarning,
        )
        zeros = rest[weights <= 0]
        fill = rng.choice(zeros, size=n_draw - positive.shape[0], replace=False)
        drawn = np.concatenate([positive, fill])
    return np.concatenate([top, drawn])


@fill_doc
class GradTuneClassifier(BaseHeadClassifier):
    """Last-layer fine-tuning on high-gradient-norm held-out samples.

    P. J. Kenfack, S. Ebrahimi Kahou, U. Aïvodji, "GradTune" (ICLR 2024
    workshop, openreview.net/forum?id=WL9Sxi3iat): ERM models have larger
    last-layer gradient norms on minority-group samples, so fine-tuning the
    last layer on the held-out samples with the largest norms improves the
    worst group without any group label.

    1. An ERM head with class balancing (``estimator``; default
       ``ERMClassifier(class_weight='balanced')``) is fitted on the training
       rows.
    2. On the held-out rows, the per-sample norm of the cross-entropy gradient
       w.r.t. the last layer (:func:`last_layer_gradient_norms`):
       ``||softmax(z_i) - e_{y_i}|| * sqrt(||h_i||^2 + 1)``.
    3. The fine-tuning set S (the paper's M' = ``n_finetune`` rows): the
       k = ``n_top`` largest norms, plus M' - k rows drawn without
       replacement from the rest with probability proportional to their
       norm. The last layer, starting from the ERM head's weights (or from
       zero with ``reset=True``), is then trained for ``max_iter`` epochs on

       .. math:: \\min_{W, b}\\; \\mathbb{E}_{c \\sim U(\\text{classes})}\\,
                 \\mathbb{E}_{i \\sim U(S_c)}\\, \\ell(W h_i + b, y_i)
                 + \\frac{\\lambda}{2}\\lVert W\\rVert^2

       i.e. minibatches drawn class-balanced (a class uniformly, then a row
       of S within it), ``n_finetune`` draws an epoch. Hidden layers of an
       MLP head stay frozen.

    Where the held-out rows come from:

    * ``prefit=True``: ``estimator`` is an already fitted head and ``fit(X,
      y)`` receives the held-out rows (phases 2-3 only), the ``prefit``
      pattern of fairlearn's ``ThresholdOptimizer``;
    * ``X_val`` given (the paper's protocol): the ERM head is fitted on all of
      ``X`` and the held-out rows are a ``holdout_fraction`` of the
      validation rows (stratified by ``group_labels_val`` when given, else by
      class); the rest of the validation rows serve early stopping;
    * otherwise a class-stratified ``holdout_fraction`` of ``fit``'s rows is
      held out and a clone of ``estimator`` is fitted on the rest; with
      ``early_stopping='auto'`` the held-out rows then play the paper's
      validation set: half of them (stratified) are scored and fine-tuned
      on, the other half choose the epoch (worst-group accuracy with
      ``group_labels``, else worst-class accuracy), when that half holds 20
      rows of every class. ``early_stopping=False``
      runs every epoch on all held-out rows; ``True`` holds out
      ``validation_fraction`` of them.

    Defaults and why: M' = 500, k = 400, 500 epochs, half of the held-out
    data (the paper fine-tunes on half of the validation set), fine-tuning
    from the ERM weights (the paper). The step is SGD (momentum 0.9) with
    ``learning_rate='auto'`` = ``lr_scale / median(||h||^2 + 1)`` over the
    held-out rows: a fixed step diverges on features with large norms
    (standardised one-hot features reach ||h||^2 of 1e4), and this scaling
    makes the step invariant to the features' scale. 500 epochs on 500 hard
    rows fit them and forget the rest unless the step is small; the step
    times the epochs is what matters, so ``batch_size=None`` takes one full
    class-balanced batch an epoch. ``lr_scale=0.005`` is the conservative
    side of what validation selects on CelebA attributes; the best constant
    depends on the data, so tune ``lr_scale`` on validation (and pass
    validation data, so that the epoch is selected too). ``l2_reg=0``: the
    fixed epoch budget from the ERM weights is the regulariser.
    Measurements: ``docs/methods/gradtune.rst``.

    Differences from the paper: it fine-tunes the last layer of deep
    networks on image and text features, and its optimiser settings beyond
    the epochs and set sizes are not all published; the step scaling is
    ours. Norms are computed once, with the ERM head, not recomputed during
    fine-tuning.

    Parameters
    ----------
    estimator : skgroup head classifier or None, default=None
        The ERM model. None: ``ERMClassifier(class_weight='balanced')``.
        With ``prefit=True`` it must be fitted (it is not modified); inside
        ``GridSearchCV`` or :func:`~skgroup.model_selection.select_on_validation`,
        which clone (and so unfit) their estimator's parameters, pass
        ``sklearn.frozen.FrozenEstimator(fitted_head)``.
    prefit : bool, default=False
        Whether ``estimator`` is already fitted; then ``fit`` gets held-out
        data only.
    holdout_fraction : float in (0, 1), default=0.5
        Fraction of the validation rows (with ``X_val``), else of ``fit``'s
        rows, held out for phases 2-3 (unused with ``prefit=True``).
    n_top : int, default=400
        k: held-out rows with the largest norms always in the fine-tuning set.
    n_finetune : int, default=500
        M': size of the fine-tuning set (>= ``n_top``). Both are capped, with
        a warning, at the number of held-out rows.
    reset : bool, default=False
        Start the last layer from zero (retraining) instead of from the ERM
        weights (fine-tuning).
    l2_reg : float, default=0.0
        L2 penalty on the last layer's weights during fine-tuning.
    solver : {'sgd', 'adamw'}, default='sgd'
        Fine-tuning optimiser (SGD with momentum 0.9, or AdamW).
    max_iter : int, default=500
        Fine-tuning epochs.
    batch_size : int or None, default=None
        Minibatch size of the fine-tuning draws; None: the whole fine-tuning
        set (one step an epoch).
    learning_rate : float or 'auto', default='auto'
        Fine-tuning step. 'auto': ``lr_scale / median(||h||^2 + 1)`` (h the
        last layer's input on the held-out rows) for SGD, 1e-3 for AdamW.
    lr_scale : float, default=0.005
        Multiplier of the 'auto' SGD step; the hyperparameter to tune.
    {lr_schedule}
    {early_stopping}
    {validation_fraction}
    {monitor}
    {n_iter_no_change}
    {restore_best}
    {callbacks}
    {device}
    dtype : {'float32', 'float64'}, default='float32'
        Fine-tuning precision (the norms are computed in float64).
    random_state : int, RandomState instance or None, default=None
        Seeds the hold-out split, the ERM clone (if its own is None), the
        draw of the fine-tuning set and the epochs' draws.
    {verbose}

    Attributes
    ----------
    estimator_ : fitted ERM head (``estimator`` itself when ``prefit=True``)
    classes_ : ndarray of shape (n_classes,)
    holdout_source_ : {'X', 'X_val'}
        Which data the held-out rows were taken from.
    holdout_indices_ : ndarray of int
        Rows of that data held out (all rows when ``prefit``).
    gradient_norms_ : ndarray of shape (n_holdout,)
        Last-layer gradient norms of the held-out rows, in the order of
        ``holdout_indices_``.
    finetune_indices_ : ndarray of int
        Rows of that data in the fine-tuning set: the top-k first (by
        decreasing norm), then the drawn ones.
    learning_rate_ : float
        The fine-tuning step used.
    coef_, intercept_ : ndarray
        Fine-tuned weights of a linear head.
    coefs_, intercepts_ : lists of ndarray
        Every layer (the hidden ones copied from ``estimator_``).
    n_iter_ : int
        Fine-tuning epochs run.
    loss_curve_ : list of float
        Fine-tuning loss per epoch.
    history_, validation_scores_, best_iteration_ :
        Of the fine-tuning, as in :class:`ERMClassifier`.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup import ERMClassifier, GradTuneClassifier
    >>> X, y, g = make_spurious_features(2000, random_state=0)
    >>> erm = ERMClassifier(class_weight="balanced").fit(X[:1000], y[:1000])
    >>> clf = GradTuneClassifier(estimator=erm, prefit=True, random_state=0)
    >>> clf.fit(X[1000:], y[1000:]).finetune_indices_.shape
    (500,)
    """

    # X_val is also the source of the held-out rows (see above), not only validation
    _x_val_is_heldout = True
    # without X_val, early_stopping='auto' chooses the epoch on part of the rows held out of X
    _selects_on_heldout = True

    _parameter_constraints = {
        **{k: v for k, v in BaseHeadClassifier._parameter_constraints.items()
           if k not in ("hidden_layer_sizes", "tol")},
        "estimator": [HasMethods(["fit", "predict"]), None],
        "prefit": ["boolean"],
        "holdout_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_top": [Interval(Integral, 0, None, closed="left")],
        "n_finetune": [Interval(Integral, 1, None, closed="left")],
        "reset": ["boolean"],
        "solver": [StrOptions({"sgd", "adamw"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "lr_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        estimator=None,
        prefit=False,
        holdout_fraction=0.5,
        n_top=400,
        n_finetune=500,
        reset=False,
        l2_reg=0.0,
        solver="sgd",
        max_iter=500,
        batch_size=None,
        learning_rate="auto",
        lr_scale=0.005,
        lr_schedule="constant",
        early_stopping="auto",
        validation_fraction=0.1,
        monitor="auto",
        n_iter_no_change=None,
        restore_best=True,
        callbacks=None,
        device="cpu",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.prefit = prefit
        self.holdout_fraction = holdout_fraction
        self.n_top = n_top
        self.n_finetune = n_finetune
        self.reset = reset
        self.l2_reg = l2_reg
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_scale = lr_scale
        self.lr_schedule = lr_schedule
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

    def _check_params(self):
        if self.n_top > self.n_finetune:
            raise ValueError(
                f"n_top (k={self.n_top}) cannot exceed n_finetune (M'={self.n_finetune}): the "
                "fine-tuning set holds the top-k rows plus M' - k drawn ones."
            )
    def _erm_reference(self, X, y_enc):
        # its own base model: fine-tuning that loses accuracy without a gain is what to flag
        return self.estimator_

    def _shared_fit_signature(self):
        """The settings the base model depends on besides the data (see JTTClassifier's)."""
        if self.prefit:
            return None
        return canonical((self.estimator, self.holdout_fraction, self.random_state))

    # -- phase 1 ----------------------------------------------------------
    def _fit_base(self, X, y):
        """Clone ``estimator`` (default: class-balanced ERM) and fit it on (X, y)."""
        estimator = ERMClassifier(class_weight="balanced") if self.estimator is None else clone(self.estimator)
        if not isinstance(_unwrap(estimator), BaseHeadClassifier):
            raise TypeError(
                "estimator must be a skgroup head classifier (e.g. ERMClassifier), whose last "
                f"layer is a linear softmax layer; got {type(estimator).__name__}."
            )
        params = estimator.get_params()
        if "random_state" in params and params["random_state"] is None:
            estimator.set_params(random_state=self._seed(1))
        # the base model does not depend on what a search varies (lr_scale, n_top, ...): fit it once
        key = None
        if self._reuses_shared_fits() and not isinstance(estimator, FrozenEstimator):
            key = SHARED_FITS.key("gradtune_base", fingerprint(X, y), canonical(estimator))
        return _check_head(SHARED_FITS.get_or_fit(key, lambda: estimator.fit(X, y)))

    def _holdout(self, y, strata, seed, what, fraction=None):
        """Sorted (kept, held-out) rows: a stratified ``fraction`` (default ``holdout_fraction``) of ``y``'s rows."""
        fraction = self.holdout_fraction if fraction is None else fraction
        n = y.shape[0]
        n_hold = int(round(fraction * n))
        n_classes = np.unique(y).shape[0]
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise ValueError(
                f"The class {classes[counts.argmin()]!r} of {what} has {counts.min()} sample: the "
                "stratified hold-out split needs at least 2 per class. Add samples, or fit the ERM "
                "model yourself and use prefit=True."
            )
        if n_hold < n_classes or n - n_hold < n_classes:
            raise ValueError(
                f"holdout_fraction={fraction} of {n} rows of {what} leaves too few "
                f"rows on one side for {n_classes} classes; choose a fraction nearer 0.5."
            )
        _, inv = np.unique(strata, return_inverse=True)
        if np.bincount(inv).min() < 2:
            strata = y
        keep, hold = train_test_split(np.arange(n), test_size=n_hold, stratify=strata, random_state=seed)
        return np.sort(keep), np.sort(hold)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fit (or take) the ERM head, score the held-out rows, fine-tune.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The held-out rows with ``prefit=True``; otherwise the training
            rows (a ``holdout_fraction`` of them is held out unless
            ``X_val`` is given).
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used in training; only to stratify splits and to score the
            validation rows (``monitor='worst_group_accuracy'``).
        X_val, y_val, group_labels_val : validation rows, default=None
            Without ``prefit``: the source of the held-out rows (see above).
            With ``prefit``: early stopping only.
        """
        self._check_params()
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val (validation features and labels), or neither.")
        val = dict(X_val=X_val, y_val=y_val, group_labels_val=group_labels_val)
        if self.prefit and self.estimator is None:
            raise ValueError(
                "prefit=True needs a fitted estimator: pass "
                "GradTuneClassifier(estimator=ERMClassifier(...).fit(X_train, y_train), prefit=True)."
            )
        base = _check_head(self.estimator) if self.prefit else None
        if base is not None:
            # the held-out columns must be the prefit head's: same count, and same names if it has them
            validate_data(base, X, dtype=[np.float32, np.float64], reset=False)
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        if self.prefit:
            self.holdout_source_ = "X"
            self.holdout_indices_ = np.arange(X.shape[0])
            return self._finetune(base, X, y, group_labels, val)

        if X_val is not None:
            # the paper's protocol: ERM on every training row, held-out rows from validation
            base = self._fit_base(X, y)
            X_val = validate_data(self, X_val, dtype=X.dtype, reset=False)
            yv = np.asarray(y_val)
            strata = yv if group_labels_val is None else _strata(group_labels_val, yv)
            rest, hold = self._holdout(yv, strata, self._seed(0), "the validation rows (y_val)")
            self.holdout_source_ = "X_val"
            self.holdout_indices_ = hold
            gv = None if group_labels_val is None else _rows(group_labels_val, hold)
            val = {}
            if self.early_stopping is not False:
                val = dict(X_val=X_val[rest], y_val=yv[rest],
                           group_labels_val=None if group_labels_val is None else _rows(group_labels_val, rest))
            return self._finetune(base, X_val[hold], yv[hold], gv, val)

        strata = y if group_labels is None else _strata(group_labels, y)
        keep, hold = self._holdout(y, strata, self._seed(0), "y")
        base = self._fit_base(X[keep], y[keep])
        self.holdout_source_ = "X"
        per_class = np.bincount(np.unique(y[hold], return_inverse=True)[1]).min()
        if self.early_stopping == "auto" and per_class >= 2 * MIN_HELD_OUT_PER_CLASS:
            # the held-out rows play the paper's validation set: half to fine-tune on, half to choose
            # the epoch (500 unmonitored epochs on the hardest rows can end below the majority class),
            # when that half holds MIN_HELD_OUT_PER_CLASS rows of every class
            part, select = self._holdout(y[hold], strata[hold], self._seed(3), "the held-out rows", fraction=0.5)
            select, hold = hold[select], hold[part]
            val = dict(X_val=X[select], y_val=y[select],
                       group_labels_val=None if group_labels is None else _rows(group_labels, select))
        self.holdout_indices_ = hold
        g_hold = None if group_labels is None else _rows(group_labels, hold)
        return self._finetune(base, X[hold], y[hold], g_hold, val)

    def _finetune(self, base, X, y, group_labels, val):
        self.estimator_ = base
        return self._fit(X, y, group_labels=group_labels, classes=base.classes_, validated=True,
                         plan_kwargs={"base": base}, **val)

    # -- the method ----------------------------------------------------------
    def _plan(self, ctx, base=None):
        """Phases 2-3 on the held-out rows; without ``base`` (the fine-tuning path) phase 1 too."""
        if base is None:
            strata = ctx.groups.ids() if ctx.groups is not None and ctx.groups.disjoint else ctx.y
            keep, hold = self._holdout(ctx.y, strata, ctx.seed(0), "y")
            weights = np.zeros(ctx.n_samples)
            weights[keep] = compute_sample_weight("balanced", ctx.y[keep])
            base = yield Stage("base", Objective(reduction=Weighted(weights, rows=keep)), ctx.options, rows=keep,
                               seed=ctx.seed(1), validate=False)
            self.holdout_source_ = "X"
            self.holdout_indices_ = ctx.rows[hold]
        else:
            # cached features: the executor's rows are the held-out rows, base the fitted head
            base = ctx.executor.from_module(base._module().to(torch_dtype(ctx.options.dtype)), name="base")
            hold = np.arange(ctx.n_samples)
            # a validation fraction held out of the held-out rows leaves ctx.rows of them
            self.holdout_indices_ = self.holdout_indices_[ctx.rows]
        norms, sq_norms = _stage_norms(base, hold, ctx.y)
        self.gradient_norms_ = norms
        n = norms.shape[0]
        n_finetune, n_top = self.n_finetune, self.n_top
        if n_finetune > n:
            warn(
                f"n_finetune (M'={n_finetune}) and n_top (k={n_top}) exceed the {n} held-out "
                f"rows: capped to M'={n}, k={min(n_top, n)}; every held-out row is fine-tuned on.",
                UserWarning,
            )
            n_finetune, n_top = n, min(n_top, n)
        chosen = select_finetune_set(norms, n_top, n_finetune, np.random.default_rng(ctx.seed(2)))
        self.finetune_indices_ = self.holdout_indices_[chosen]
        rows = hold[chosen]
        missing = np.setdiff1d(np.arange(ctx.n_classes), ctx.y[rows])
        if missing.size:
            warn(
                f"The fine-tuning set holds no sample of class(es) {self.classes_[missing].tolist()}; "
                "the class-balanced draws then ignore them. Raise n_finetune or hold out more rows.",
                UserWarning,
            )
        if self.learning_rate != "auto":
            lr = float(self.learning_rate)
        elif self.solver == "sgd":
            lr = self.lr_scale / float(np.median(sq_norms + 1.0))
        else:
            lr = 1e-3
        self.learning_rate_ = lr

        init = base
        if self.reset:
            init = copy.deepcopy(base.module)
            last = linear_layers(init)[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
        mask = np.zeros(ctx.n_samples, dtype=bool)
        mask[rows] = True
        # the last layer's own schedule: GradTune's settings, also when a backbone was fine-tuned first
        options = ctx.options.replace(solver=self.solver, max_iter=self.max_iter, learning_rate=lr,
                                      batch_size=self.batch_size or rows.shape[0], l2_reg=self.l2_reg,
                                      lr_schedule=self.lr_schedule)
        yield Stage("finetune", Objective(), options, sampler=BalancedSampler(ctx.y, subset=mask), init=init,
                    trainable="head", seed=ctx.seed(3))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _rows(a, rows):
    """Rows of an array-like (numpy, pandas, list) as numpy-indexable data."""
    if hasattr(a, "iloc"):
        return a.iloc[rows]
    return np.asarray(a)[rows]


def _strata(group_labels, y):
    """Group ids to stratify by (1-D ids; classes for a membership matrix)."""
    g = np.asarray(group_labels)
    return g if g.ndim == 1 else y


def _search_space(data):
    # Kenfack et al. (2024): M' = 500, k = 400 with half of the validation set held out; a
    # search gives GradTune no validation rows to train on, so half of the training rows
    # are held out and M' is capped at half of them. lr_scale: the step constant is
    # data-dependent (docs/methods/gradtune.rst), so a decade either side of the default.
    held_out = data.n_samples // 2
    m = max(2 * data.n_classes, min(500, held_out // 2))
    return {"lr_scale": [0.005, 0.05, 0.5], "n_finetune": [m], "n_top": [int(0.8 * m)]}


register_method(MethodSpec(
    GradTuneClassifier,
    search_space=_search_space,
    fast_params={"n_top": 40, "n_finetune": 60, "max_iter": 20, "lr_scale": 0.1},
    check_params=dict(dtype="float64", max_iter=20),
    benchmark_grid={"n_top": [100, 200, 400], "lr_scale": [0.003, 0.005, 0.01]},
    quick_grid={"n_top": [100], "n_finetune": [150], "max_iter": [50]},
))
