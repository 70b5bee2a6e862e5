"""Mixup (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018): train on convex combinations of row pairs."""

import functools
from numbers import Real

import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..engine import Stage
from ..objectives import MixedTargets, Objective
from ..utils import fill_doc
from ._base import LOSS_CONSTRAINT, BaseHeadClassifier
from ._spec import MethodSpec, register_method, scaled_epochs

__all__ = ["MixupClassifier", "MixupTransform", "beta_draws", "mix_rows"]


@functools.lru_cache(maxsize=32)
def _beta(alpha, n):
    concentration = torch.full((n,), alpha, dtype=torch.float64)
    return torch.distributions.Beta(concentration, concentration, validate_args=False)


def beta_draws(alpha, n):
    """``n`` draws of Beta(alpha, alpha), float64 on the CPU, from torch's global generator.

    The training loop seeds that generator per stage and checkpoints it, so
    the draws are reproducible and a resumed run continues them exactly; on
    the CPU they do not depend on the training device. (The distribution
    object is cached: building one costs more than a draw.)
    """
    return _beta(float(alpha), int(n)).sample()


def mix_rows(x, partner, lam):
    """``lam_i * x_i + (1 - lam_i) * x_partner(i)`` row by row, for inputs of any shape (features, images).

    ``partner`` (m,) int64 and ``lam`` (m,) live on the CPU; the result has
    ``x``'s dtype and device.
    """
    lam_x = lam.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    # x_partner + lam (x - x_partner), one fused pass
    return torch.lerp(x.index_select(0, partner.to(x.device)), x, lam_x)


def mixed_targets(yb, partner, lam, dtype):
    """The labels of mixed rows: ``lam`` parts ``yb``, ``1 - lam`` parts the partner's label; ``lam`` in
    the mixed inputs' ``dtype`` (the weights the inputs were mixed with)."""
    partner = partner.to(yb.device)
    return MixedTargets(yb, yb[partner], lam.to(device=yb.device, dtype=dtype))


class MixupTransform:
    """Mixup of a whole batch, as Zhang et al. (2018) and SubpopBench's ``mixup_data`` do it.

    One ``lam ~ Beta(alpha, alpha)`` per batch and a uniformly random
    permutation ``pi`` of the batch's rows: row i becomes ``lam * x_i +
    (1 - lam) * x_pi(i)`` with label ``lam`` parts ``y_i`` and ``1 - lam``
    parts ``y_pi(i)`` (:class:`~skgroup.objectives.MixedTargets`). Groups are
    not looked at. ``where='auto'``: the engine mixes the inputs when they
    are floating point (cached features, pixels) and the head's input
    otherwise (a text backbone's pooled features: token ids cannot be
    mixed).
    """

    where = "auto"

    def __init__(self, alpha):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0; got {alpha}.")
        self.alpha = float(alpha)

    def __call__(self, xb, yb, idx):
        m = xb.shape[0]
        lam = beta_draws(self.alpha, 1).expand(m)  # the draws in SubpopBench's order: lam, then the permutation
        perm = torch.randperm(m)
        return mix_rows(xb, perm, lam), mixed_targets(yb, perm, lam, xb.dtype)

    def __repr__(self):
        return f"MixupTransform(alpha={self.alpha!r})"


@fill_doc
class MixupClassifier(BaseHeadClassifier):
    """Softmax head trained with mixup.

    Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk
    Minimization", ICLR 2018 (eq. 1), as SubpopBench (Yang et al., ICML
    2023, ``algorithms.Mixup``) runs it. Every minibatch is replaced by
    convex combinations of its rows with a random permutation ``pi`` of
    them, and the loss by the same combination of the two labels' losses:

    .. math:: \\tilde x_i = \\lambda x_i + (1-\\lambda) x_{\\pi(i)}, \\qquad
              \\min_W \\frac{1}{m}\\sum_i \\lambda\\,\\ell(W\\tilde x_i, y_i)
              + (1-\\lambda)\\,\\ell(W\\tilde x_i, y_{\\pi(i)})
              + \\frac{\\mu}{2}\\lVert W\\rVert^2 ,

    with one :math:`\\lambda \\sim \\mathrm{Beta}(\\alpha, \\alpha)` per
    minibatch. Rows are paired across the whole batch, whatever their
    classes and groups; no group labels are used.

    On cached features the mixed vectors are the features themselves (the
    inputs of the head). This is SubpopBench's mixup for text, which mixes
    the pooled features of the encoder, and for images it would mix pixels
    instead: :class:`~skgroup.finetune.FineTuneClassifier` with
    ``method=MixupClassifier()`` mixes pixels for image backbones and the
    pooled features (the head's input) for text backbones, as SubpopBench
    does. For an MLP head (``hidden_layer_sizes``) the inputs are mixed, not
    the hidden layer.

    Defaults and why: ``alpha=0.2``, SubpopBench's default (Zhang et al.
    use 0.2 on ImageNet and 1 on CIFAR-10); AdamW for 10 epochs at batch
    ``'auto'``, learning rate ``'auto'`` from JTT's reference rate 1e-2
    (the rate LISA and LfF share; on CelebA attributes mixup's validation
    worst-group accuracy does not depend on it between 1e-3 and 3e-2), weak
    L2 (mixup regularises by itself). Measurements and differences from the
    reference code: ``docs/methods/mixup.rst``.

    Parameters
    ----------
    alpha : float, default=0.2
        Parameter of the symmetric Beta distribution of the mixing weight;
        small alpha mixes little (lambda near 0 or 1), alpha = 1 draws it
        uniformly.
    {loss}
    {hidden_layer_sizes}
    {l2_reg}
    {solver_minibatch}
    max_iter : int, default=10
        Epochs.
    {batch_size}
    {learning_rate}
    {lr_schedule}
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
        Weights of a linear head.
    intercept_ : ndarray of shape (n_classes,)
    coefs_, intercepts_ : lists of ndarray
    learning_rate_ : float
        The learning rate used (with ``learning_rate='auto'``).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean mixed training loss per epoch.
    history_, validation_scores_, best_iteration_ :
        As in :class:`ERMClassifier`.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import MixupClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = MixupClassifier(max_iter=3, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    _reference_learning_rate = 1e-2

    _parameter_constraints = {
        **{k: v for k, v in BaseHeadClassifier._parameter_constraints.items() if k != "tol"},
        **LOSS_CONSTRAINT,
        "solver": [StrOptions({"adamw", "sgd"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        alpha=0.2,
        loss=None,
        hidden_layer_sizes=(),
        l2_reg=1e-4,
        solver="adamw",
        max_iter=10,
        batch_size="auto",
        learning_rate="auto",
        lr_schedule="constant",
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
        self.alpha = alpha
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l2_reg = l2_reg
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fit the head.

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

    def _plan(self, ctx):
        yield Stage("mixup", Objective(self._loss(ctx)), ctx.options, seed=ctx.seed(0),
                    batch_transform=MixupTransform(self.alpha))


def _search_space(data):
    # alpha: SubpopBench's range 10^U(-1, 1) (hparams_registry.py, "mixup_alpha"), its default 0.2
    # and the uniform mixing weight alpha = 1 of Zhang et al. on CIFAR; L2 weak and strong, as for
    # ERM; epochs: the default 10 CelebA epochs at equal steps
    return {"alpha": [0.1, 0.2, 1.0, 10.0], "l2_reg": [1e-4, 1e-2], "max_iter": [scaled_epochs(10, data)]}


register_method(MethodSpec(
    MixupClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 3, "batch_size": 64},
    benchmark_grid={"alpha": [0.1, 0.2, 0.5, 1.0, 2.0, 10.0], "l2_reg": [1e-4, 1e-2]},
    quick_grid={"alpha": [0.2, 1.0]},
))
