"""GradTune: fine-tune the last layer on the held-out samples with the largest
per-sample gradient norms (Kenfack et al., 2024). No group labels anywhere."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._objectives import MeanLoss
from .._samplers import BalancedSampler
from .._training import make_head, torch_dtype
from ._base import BaseHeadClassifier
from ._erm import ERMClassifier

__all__ = ["GradTuneClassifier", "last_layer_gradient_norms"]

_CHUNK = 65536  # rows per block when computing norms (bounds float64 temporaries)


def _unwrap(estimator):
    return estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator


def _check_head(estimator, what="estimator"):
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
            "prefit=False to let GradTuneClassifier fit it. Note that clone() (hence "
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
        z = H @ W + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(p.shape[0]), y_enc[rows[sl]]] -= 1.0  # softmax(z) - onehot(y)
        sq[sl] = np.einsum("ij,ij->i", H, H)
        norms[sl] = np.linalg.norm(p, axis=1) * np.sqrt(sq[sl] + 1.0)
    return norms, sq


def _encode(estimator, y):
    y = column_or_1d(y, warn=True)
    classes = estimator.classes_
    pos = np.searchsorted(classes, y)
    pos = np.clip(pos, 0, len(classes) - 1)
    unknown = classes[pos] != y
    if np.any(unknown):
        raise ValueError(
            f"y holds labels the estimator was not fitted on: {np.unique(y[unknown])[:5].tolist()}; "
            f"its classes_ are {classes.tolist()}."
        )
    return pos


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
    y_enc = _encode(estimator, y)
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
        warnings.warn(
            f"Only {positive.shape[0]} of the remaining held-out rows have a non-zero "
            f"gradient norm, fewer than the {n_draw} to draw: the others are drawn "
            "uniformly among the zero-norm rows.",
            UserWarning,
            stacklevel=3,
        )
        zeros = rest[weights <= 0]
        fill = rng.choice(zeros, size=n_draw - positive.shape[0], replace=False)
        drawn = np.concatenate([positive, fill])
    return np.concatenate([top, drawn])


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

    Held-out data follows the ``prefit`` pattern of fairlearn's
    ``ThresholdOptimizer``: with ``prefit=True``, ``estimator`` is an
    already fitted head and ``fit(X, y)`` receives the held-out rows (phases
    2-3 only). With ``prefit=False``, ``fit`` holds out a class-stratified
    ``holdout_fraction`` of its rows and fits a clone of ``estimator`` on the
    rest.

    Defaults and where they come from: M' = 500, k = 400, 500 epochs,
    ``holdout_fraction=0.5`` (the paper fine-tunes on half of the
    validation set) and fine-tuning from the ERM weights (the paper).
    The step is SGD (momentum 0.9) with ``learning_rate='auto'`` =
    ``lr_scale / median(||h||^2 + 1)`` over the held-out rows: METHOD-NOTES
    found that a fixed SGD step diverged on standardized one-hot features
    (||h||^2 up to 1e4) and that this scaling fixed it. 500 epochs on 500
    hard rows fit them and forget the rest unless the step is small: the
    step times the epochs is what matters (a minibatch of 100 with a 5x
    smaller step gives the same models as the full batch), so
    ``batch_size=None`` takes one full class-balanced batch an epoch (500
    steps, a fraction of a second). ``lr_scale=0.005`` is the conservative
    side of the validation-selected constant on CelebA attributes (test
    worst-group accuracy 0.47 -> 0.62 at 0.005 and 0.64 at 0.007, average
    accuracy 0.77 and 0.75; 0.01 costs 7 points of average accuracy, and
    1.0 ends at 0.54 / 0.25): the best constant depends on the data (about
    0.1 on :func:`~skgroup.datasets.make_spurious_features`), so tune
    ``lr_scale`` on validation worst-group accuracy. ``l2_reg=0``: the
    fixed epoch budget from the ERM weights is the regulariser.

    Differences from the paper: it fine-tunes the last layer of deep
    networks on image and text features, and its optimiser settings beyond
    the epochs and set sizes are not all published; the step scaling is
    METHOD-NOTES'. Norms are computed once, with the ERM head, not
    recomputed during fine-tuning.

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
        Fraction of ``fit``'s rows held out (class-stratified) when
        ``prefit=False``.
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
    device : str, default='cpu'
    dtype : {'float32', 'float64'}, default='float32'
        Fine-tuning precision (the norms are computed in float64).
    random_state : int, RandomState instance or None, default=None
        Seeds the hold-out split, the ERM clone (if its own is None), the
        draw of the fine-tuning set and the epochs' draws.
    verbose : int, default=0

    Attributes
    ----------
    estimator_ : fitted ERM head (``estimator`` itself when ``prefit=True``)
    classes_ : ndarray of shape (n_classes,)
    holdout_indices_ : ndarray of int
        Rows of ``fit``'s X that were held out (all rows when ``prefit``).
    gradient_norms_ : ndarray of shape (n_holdout,)
        Last-layer gradient norms of the held-out rows, in the order of
        ``holdout_indices_``.
    finetune_indices_ : ndarray of int
        Rows of ``fit``'s X in the fine-tuning set: the top-k first (by
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
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.estimators import ERMClassifier, GradTuneClassifier
    >>> X, y, g = make_spurious_features(2000, random_state=0)
    >>> erm = ERMClassifier(class_weight="balanced").fit(X[:1000], y[:1000])
    >>> clf = GradTuneClassifier(estimator=erm, prefit=True, random_state=0)
    >>> clf.fit(X[1000:], y[1000:]).finetune_indices_.shape
    (500,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "prefit": ["boolean"],
        "holdout_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_top": [Interval(Integral, 0, None, closed="left")],
        "n_finetune": [Interval(Integral, 1, None, closed="left")],
        "reset": ["boolean"],
        "l2_reg": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"sgd", "adamw"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "lr_scale": [Interval(Real, 0, None, closed="neither")],
        "device": [str],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # -- phase 1 ----------------------------------------------------------
    def _heldout_and_erm(self, X, y):
        """(estimator_, X, y_encoded, holdout_indices): the held-out rows are X[holdout_indices]."""
        if self.prefit:
            if self.estimator is None:
                raise ValueError(
                    "prefit=True needs a fitted estimator: pass "
                    "GradTuneClassifier(estimator=ERMClassifier(...).fit(X_train, y_train), prefit=True)."
                )
            head = _check_head(self.estimator)
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
            if X.shape[1] != head.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features but the prefit estimator was fitted on "
                    f"{head.n_features_in_}."
                )
            check_classification_targets(y)
            y_enc = _encode(head, y)
            self.classes_ = head.classes_
            return head, X, y_enc, np.arange(X.shape[0])

        if self.estimator is None:
            estimator = ERMClassifier(class_weight="balanced")
        else:
            estimator = clone(self.estimator)
        if not isinstance(_unwrap(estimator), BaseHeadClassifier):
            raise TypeError(
                "estimator must be a skgroup head classifier (e.g. ERMClassifier), whose last "
                f"layer is a linear softmax layer; got {type(estimator).__name__}."
            )
        X, y_enc = self._validate_fit_data(X, y)
        counts = np.bincount(y_enc)
        if counts.min() < 2:
            raise ValueError(
                f"The class {self.classes_[counts.argmin()]!r} has {counts.min()} sample: the "
                "stratified hold-out split needs at least 2 per class. Add samples, or fit "
                "the ERM model yourself and use prefit=True."
            )
        n = y_enc.shape[0]
        n_hold = int(round(self.holdout_fraction * n))
        if n_hold < len(counts) or n - n_hold < len(counts):
            raise ValueError(
                f"holdout_fraction={self.holdout_fraction} of {n} rows leaves too few rows "
                f"on one side for {len(counts)} classes; choose a fraction nearer 0.5."
            )
        train_idx, hold_idx = train_test_split(
            np.arange(n), test_size=n_hold, stratify=y_enc, random_state=self._seed(0) % (2**32)
        )
        hold_idx = np.sort(hold_idx)
        if "random_state" in estimator.get_params() and estimator.get_params()["random_state"] is None:
            estimator.set_params(random_state=self._seed(1))
        train_idx = np.sort(train_idx)
        estimator = _check_head(estimator.fit(X[train_idx], self.classes_[y_enc[train_idx]]))
        if not np.array_equal(estimator.classes_, self.classes_):
            raise ValueError(
                f"The ERM estimator's classes_ {estimator.classes_.tolist()} differ from y's "
                f"classes {self.classes_.tolist()}."
            )
        return estimator, X, y_enc, hold_idx

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit (or take) the ERM head, score the held-out rows, fine-tune.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The held-out rows with ``prefit=True``; otherwise all rows (a
            ``holdout_fraction`` of them is held out).
        y : array-like of shape (n_samples,)
        """
        if self.n_top > self.n_finetune:
            raise ValueError(
                f"n_top (k={self.n_top}) cannot exceed n_finetune (M'={self.n_finetune}): the "
                "fine-tuning set holds the top-k rows plus M' - k drawn ones."
            )
        estimator, X, y_enc, hold_idx = self._heldout_and_erm(X, y)
        self.estimator_ = estimator
        self.holdout_indices_ = hold_idx

        # phase 2: gradient norms of the held-out rows
        norms, sq_norms = _scan(estimator, X, y_enc, hold_idx)
        self.gradient_norms_ = norms

        # phase 3: the fine-tuning set
        n = norms.shape[0]
        n_finetune, n_top = self.n_finetune, self.n_top
        if n_finetune > n:
            warnings.warn(
                f"n_finetune (M'={n_finetune}) and n_top (k={n_top}) exceed the {n} held-out "
                f"rows: capped to M'={n}, k={min(n_top, n)}; every held-out row is fine-tuned on.",
                UserWarning,
                stacklevel=2,
            )
            n_finetune, n_top = n, min(n_top, n)
        rng = np.random.default_rng(self._seed(2))
        chosen = select_finetune_set(norms, n_top, n_finetune, rng)
        self.finetune_indices_ = hold_idx[chosen]
        y_ft = y_enc[self.finetune_indices_]
        H_ft = np.ascontiguousarray(
            _last_layer_inputs(estimator, X[self.finetune_indices_]), dtype=np.dtype(self.dtype)
        )
        missing = np.setdiff1d(np.arange(len(self.classes_)), y_ft)
        if missing.size:
            warnings.warn(
                f"The fine-tuning set holds no sample of class(es) {self.classes_[missing].tolist()}; "
                "the class-balanced draws then ignore them. Raise n_finetune or hold out more rows.",
                UserWarning,
                stacklevel=2,
            )

        if self.learning_rate != "auto":
            lr = float(self.learning_rate)
        elif self.solver == "sgd":
            lr = self.lr_scale / float(np.median(sq_norms + 1.0))
        else:
            lr = 1e-3
        self.learning_rate_ = lr

        dtype = torch_dtype(self.dtype)
        init = None
        if not self.reset:
            init = make_head(H_ft.shape[1], len(self.classes_), (), dtype, torch.Generator())
            with torch.no_grad():
                init[0].weight.copy_(torch.from_numpy(estimator.coefs_[-1].T.copy()))
                init[0].bias.copy_(torch.from_numpy(estimator.intercepts_[-1].copy()))
        options = self._options(
            solver=self.solver,
            hidden_layer_sizes=(),
            learning_rate=lr,
            max_iter=self.max_iter,
            batch_size=self.batch_size or chosen.shape[0],
        )
        self._train(
            H_ft, y_ft, MeanLoss(), sampler=BalancedSampler(y_ft), options=options,
            seed=self._seed(3), init=init,
        )
        if len(estimator.coefs_) > 1:  # frozen hidden layers in front of the new last layer
            self.coefs_ = [W.copy() for W in estimator.coefs_[:-1]] + self.coefs_
            self.intercepts_ = [b.copy() for b in estimator.intercepts_[:-1]] + self.intercepts_
            for name in ("coef_", "intercept_"):
                if hasattr(self, name):
                    delattr(self, name)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
