"""Class balancing as LaBonte et al. (2024) do it: subsetting, upsampling,
upweighting, and their mixture."""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..objectives import Objective, Weighted
from .._samplers import BalancedSampler, RepeatSampler, balanced_weights
from ..engine import Stage, resolve_batch_size
from ..utils import fill_doc
from ._base import BaseHeadClassifier, LOSS_CONSTRAINT
from ._spec import MethodSpec, register_method

__all__ = ["MixtureBalancedClassifier", "class_balanced_subset"]

_MINIBATCH_BALANCING = ("upsampling", "mixture")

#: Minibatch defaults (see the class docstring, "Defaults").
_AUTO_MIN_EPOCHS = 10
_AUTO_MIN_STEPS = 1500
_LBFGS_MAX_ITER = 200


def class_balanced_subset(y, cap, rng):
    """Indices (sorted) of a subset holding at most ``cap`` rows of each class.

    Rows of a class larger than ``cap`` are dropped uniformly at random
    (``cap`` kept without replacement); smaller classes are kept whole.
    """
    y = np.asarray(y)
    keep = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if rows.shape[0] > cap:
            rows = rng.choice(rows, size=cap, replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def auto_epochs(n_rows, batch_size):
    """Epochs of the minibatch default: at least 10, and at least 1,500 steps."""
    steps_per_epoch = max(1, math.ceil(n_rows / batch_size))
    return max(_AUTO_MIN_EPOCHS, math.ceil(_AUTO_MIN_STEPS / steps_per_epoch))


@fill_doc
class MixtureBalancedClassifier(BaseHeadClassifier):
    """Softmax head trained with class balancing (LaBonte et al., 2024).

    T. LaBonte, J. C. Hill, X. Zhang, V. Muthukumar, A. Kumar, "The Group
    Robustness is in the Details: Revisiting Finetuning under Spurious
    Correlations", NeurIPS 2024. Group labels are not used in training
    (only classes).

    With classes c = 1..K of sizes n_c, n_min = min_c n_c, n_max = max_c n_c:

    * ``'subsetting'``: drop rows of every larger class uniformly at random,
      once, until each class has n_min rows; train ERM on that subset.
    * ``'upsampling'``: each draw picks a class uniformly, then a row within
      it, so minibatches are class-balanced in expectation.
    * ``'upweighting'``: the loss of class c is multiplied by its imbalance
      ratio w_c = n_max / n_c (``class_weight_``):

      .. math:: \\min_W \\frac{\\sum_i w_{y_i}\\,\\ell(W x_i, y_i)}{\\sum_i w_{y_i}}
                + \\frac{\\lambda}{2}\\lVert W\\rVert^2

      normalised by the sum of the weights as the reference code's weighted
      ``F.cross_entropy`` is (exactly under full-batch L-BFGS; a minibatch
      takes the unbiased (1/m) sum_b w_i l_i / mean(w)). It is
      ``ERMClassifier(class_weight='balanced')``.
    * ``'mixture'`` (the paper's proposal): first drop rows of the larger
      classes uniformly at random until no class exceeds
      ``floor(mixture_ratio * n_min)`` rows, then upsample that subset to
      class balance. ``mixture_ratio=1`` is subsetting; ``mixture_ratio >=
      n_max / n_min`` keeps every row and is upsampling.
    * ``'none'``: plain ERM.

    Upsampling's expected objective is the upweighted one, so for a convex
    (linear) head both reach the same minimiser; they differ in the noise of
    the path, which is what the paper studies for deep networks.

    Defaults and why: ``balancing='mixture'`` with ``mixture_ratio=2`` (the
    paper's proposal and the first ratio its code runs on CelebA and
    Waterbirds). Training runs to completion, as in the paper:
    ``solver='auto'`` is full-batch L-BFGS (to the gradient tolerance
    ``tol``) for 'none', 'subsetting' and 'upweighting', and AdamW over
    class-balanced minibatches for 'upsampling' and 'mixture', annealed to
    zero by a cosine schedule as the paper's CelebA runs are (AdamW, cosine),
    with ``batch_size=1024``, ``learning_rate=0.03`` and ``max(10, ceil(1500
    / steps per epoch))`` epochs: enough steps for the annealed run to reach
    the minimum of the expected objective. ``l2_reg=1e-4`` as
    :class:`ERMClassifier`. Measurements: ``docs/methods/mixture.rst``.

    Differences from the reference implementation
    (github.com/tmlabonte/revisiting-finetuning): the paper fine-tunes whole
    networks with SGD; here a head on frozen features. The mixture cap is
    ``floor(mixture_ratio * n_min)`` (the reference keeps ``ceil`` for
    non-integer products), so the ratio never exceeds ``mixture_ratio``.
    ``solver='lbfgs'`` with 'upsampling' or 'mixture' replaces the draws by
    their expectation (class-balanced loss weights on the kept rows): the
    same objective in expectation, no sampling noise.

    Parameters
    ----------
    balancing : {'none', 'subsetting', 'upsampling', 'upweighting', 'mixture'}, default='mixture'
        How the classes are balanced (see above).
    mixture_ratio : float >= 1, default=2.0
        Largest class-imbalance ratio (to the smallest class) kept by
        'mixture' before upsampling. Ignored by the other balancings.
    {loss}
    {hidden_layer_sizes}
    {l2_reg}
    solver : {'auto', 'lbfgs', 'adamw', 'sgd'}, default='auto'
        'auto': 'adamw' for 'upsampling' and 'mixture', else 'lbfgs'.
        'lbfgs': full-batch L-BFGS; 'adamw' / 'sgd' (momentum 0.9): minibatches.
    max_iter : int or None, default=None
        None: 200 L-BFGS iterations, or max(10, ceil(1500 / steps per
        epoch)) epochs for the minibatch solvers. Otherwise: L-BFGS
        iterations, or epochs for the minibatch solvers.
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
    subset_indices_ : ndarray of int
        Sorted indices of the training rows kept (all rows unless
        'subsetting' or 'mixture' removed some).
    class_counts_ : ndarray of shape (n_classes,)
        Training rows per class before balancing.
    class_counts_subset_ : ndarray of shape (n_classes,)
        Rows per class in ``subset_indices_``.
    class_weight_ : ndarray of shape (n_classes,)
        Loss weight of each class: n_max / n_c for 'upweighting', ones
        otherwise.
    solver_ : str
        The solver used ('auto' resolved).
    coef_, intercept_, coefs_, intercepts_, n_iter_, loss_curve_, history_, validation_scores_, best_iteration_, n_features_in_
        As in :class:`ERMClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup import MixtureBalancedClassifier
    >>> X, y, g = make_spurious_features(600, random_state=0)
    >>> rows = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:50]]
    >>> clf = MixtureBalancedClassifier(mixture_ratio=2, random_state=0).fit(X[rows], y[rows])
    >>> clf.class_counts_.tolist(), clf.class_counts_subset_.tolist()
    ([290, 50], [100, 50])
    """

    _reference_learning_rate = 0.03

    _parameter_constraints = {
        **BaseHeadClassifier._parameter_constraints,
        **LOSS_CONSTRAINT,
        "balancing": [StrOptions({"none", "subsetting", "upsampling", "upweighting", "mixture"})],
        "mixture_ratio": [Interval(Real, 1, None, closed="left")],
        "solver": [StrOptions({"auto", "lbfgs", "adamw", "sgd"})],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        balancing="mixture",
        mixture_ratio=2.0,
        loss=None,
        hidden_layer_sizes=(),
        l2_reg=1e-4,
        solver="auto",
        max_iter=None,
        batch_size=1024,
        learning_rate=0.03,
        lr_schedule="cosine",
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
        self.balancing = balancing
        self.mixture_ratio = mixture_ratio
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
        """Balance the classes of (X, y) as ``balancing`` says and fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used in training; only to stratify the internal validation
            split and to score it (``monitor='worst_group_accuracy'``).
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and checkpoint selection.
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _options(self, X=None, **overrides):
        # 'auto' resolves here so that a plan run by the fine-tuning path, whose options
        # are its own, never sees it; max_iter=None is resolved by the plan (it needs the subset)
        solver = self.solver
        if solver == "auto":
            solver = "adamw" if self.balancing in _MINIBATCH_BALANCING else "lbfgs"
        return super()._options(X, solver=solver, **overrides)

    def _plan(self, ctx):
        y = ctx.y
        n_classes = ctx.n_classes
        counts = np.bincount(y, minlength=n_classes)
        rng = np.random.default_rng(ctx.seed(1))

        keep = np.arange(y.shape[0])
        if self.balancing == "subsetting":
            keep = class_balanced_subset(y, counts.min(), rng)
        elif self.balancing == "mixture":
            cap = max(int(math.floor(self.mixture_ratio * counts.min() + 1e-9)), 1)
            keep = class_balanced_subset(y, cap, rng)
        self.subset_indices_ = keep
        self.class_counts_ = counts
        self.class_counts_subset_ = np.bincount(y[keep], minlength=n_classes)
        self.class_weight_ = (
            counts.max() / counts if self.balancing == "upweighting" else np.ones(n_classes)
        )

        solver = self.solver_ = ctx.options.solver
        loss = self._loss(ctx)
        all_rows = keep.shape[0] == y.shape[0]
        mask = None if all_rows else np.isin(np.arange(y.shape[0]), keep)

        if solver == "lbfgs":
            # full batch on the kept rows, with the sampling's expectation as weights
            rows = None if all_rows else keep
            if self.balancing in _MINIBATCH_BALANCING:
                objective = Objective(loss, Weighted(balanced_weights(y, mask), rows=rows))
            elif self.balancing == "upweighting":
                objective = Objective(loss, Weighted(self.class_weight_[y]))
            else:
                objective = Objective(loss)
            options = ctx.options.replace(max_iter=ctx.options.max_iter or _LBFGS_MAX_ITER)
            yield Stage("balanced", objective, options, rows=rows, seed=ctx.seed(2))
            return

        # minibatch solvers index X through the sampler: subsets are never copied
        objective, sampler = Objective(loss), None
        if self.balancing in _MINIBATCH_BALANCING:
            sampler = BalancedSampler(y, subset=mask)
        elif self.balancing == "subsetting" and not all_rows:
            sampler = RepeatSampler(mask.astype(np.int64))
        elif self.balancing == "upweighting":
            objective = Objective(loss, Weighted(self.class_weight_[y]))
        batch_size = resolve_batch_size(ctx.options.batch_size, keep.shape[0])
        options = ctx.options.replace(max_iter=ctx.options.max_iter or auto_epochs(keep.shape[0], batch_size))
        yield Stage("balanced", objective, options, sampler=sampler, seed=ctx.seed(2))


def _search_space(data):
    # The four class-balancing schemes of LaBonte et al. (2024), with their proposed
    # mixture at ratio 2; upsampling's expected objective is upweighting's (the same
    # minimiser for a linear head), so upweighting stands for both.
    return [{"balancing": ["subsetting", "upweighting"]}, {"balancing": ["mixture"], "mixture_ratio": [2.0]}]


register_method(MethodSpec(
    MixtureBalancedClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 5},
    check_params=dict(dtype="float64", max_iter=10),
    benchmark_grid=[
        {"balancing": ["subsetting", "upsampling", "upweighting"], "l2_reg": [1e-5, 1e-4]},
        {"balancing": ["mixture"], "mixture_ratio": [2.0, 4.0], "l2_reg": [1e-5, 1e-4]},
    ],
    quick_grid={"balancing": ["subsetting", "mixture"], "max_iter": [10]},
))
