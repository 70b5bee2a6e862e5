"""Learning from Failure (Nam et al., NeurIPS 2020): a biased model trained with generalized cross-entropy
and a debiased model trained on the rows the biased one finds hard, trained together."""

import dataclasses
from numbers import Real
from typing import NamedTuple

import torch
import torch.nn.functional as F
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..engine import Callback, HeadExecutor, Stage
from ..objectives import GeneralizedCrossEntropy, MixedTargets, Objective
from ..objectives._losses import as_float
from ..utils import fill_doc
from ._base import LOSS_CONSTRAINT, BaseHeadClassifier
from ._spec import MethodSpec, register_method, scaled_epochs

__all__ = ["LfFClassifier", "LfFObjective", "LfFOutput", "BiasedDebiasedPair", "LfFHistory"]

#: the authors' guard against 0 / 0 in W = L_b / (L_b + L_d + eps) (train.py)
_EPS = 1e-8


class LfFOutput(NamedTuple):
    """What :class:`BiasedDebiasedPair` returns in training mode (eval mode: ``logits`` alone)."""

    logits: torch.Tensor  # the debiased model's
    biased_logits: torch.Tensor


class BiasedDebiasedPair(torch.nn.Module):
    """LfF's two models as one module: both logits in training mode, the debiased model's in eval mode.

    The engine then trains both with one optimizer (per-parameter, as two
    optimizers of the same settings would), validates and predicts with the
    debiased model, and checkpoints both. For fine-tuning, ``body`` and
    ``head`` list both models' backbones and heads (the executor's
    parameter groups).
    """

    def __init__(self, biased, debiased):
        super().__init__()
        self.biased = biased
        self.debiased = debiased

    def forward(self, x):
        logits = self.debiased(x)
        if not self.training:
            return logits
        return LfFOutput(logits, self.biased(x))

    @property
    def body(self):
        return torch.nn.ModuleList([self.biased.body, self.debiased.body])

    @property
    def head(self):
        return torch.nn.ModuleList([self.biased.head, self.debiased.head])


class LfFObjective(Objective):
    """LfF's objective: GCE for the biased model plus relative-difficulty-weighted loss for the debiased one.

    For the batch's rows i (Nam et al., 2020, Algorithm 1, with the
    authors' ``train.py``): the per-row cross-entropies of both models
    update exponential moving averages, ``E_i <- alpha E_i + (1 - alpha)
    CE_i`` (``E_i = CE_i`` at a row's first visit); each average is divided
    by its maximum over the training rows of the row's class; the relative
    difficulty is ``W_i = E^b_i / (E^b_i + E^d_i + 1e-8)`` (no gradient),
    and the value is

    .. math:: \\frac{1}{m}\\sum_i W_i\\,\\ell(z^d_i, y_i)
              + \\frac{1}{m}\\sum_i \\frac{1 - p^b_{i,y_i}(z^b_i)^q}{q}

    (``ell``: ``loss``, cross-entropy by default). The averages are per
    training row and resume with a checkpoint (``state_dict``). A class
    whose averages are all 0 (every loss underflowed) gives its rows W = 0
    where the authors' code stops on a NaN.

    Parameters
    ----------
    y : array of int (n,)
        Encoded labels of the training rows (the classes of the maxima).
    n_classes : int
    q : float, default=0.7
    ema_alpha : float, default=0.7
    loss : Loss or None
        The debiased model's per-row loss.

    Attributes
    ----------
    last_terms : tensor (2,)
        The last batch's weighted debiased loss and GCE, detached.
    last_weights : tensor (m,)
        The last batch's W.
    """

    def __init__(self, y, n_classes, *, q=0.7, ema_alpha=0.7, loss=None):
        super().__init__(loss)
        if not 0 <= ema_alpha < 1:
            raise ValueError(f"ema_alpha must be in [0, 1); got {ema_alpha}.")
        self.gce = GeneralizedCrossEntropy(q)
        self.ema_alpha = float(ema_alpha)
        self.y = torch.as_tensor(y, dtype=torch.int64)
        self.n_classes = int(n_classes)
        n = self.y.shape[0]
        self.ema_b = torch.zeros(n, dtype=torch.float32)
        self.ema_d = torch.zeros(n, dtype=torch.float32)
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.last_weights = None

    online = True  # the averages change at every step: minibatch solvers only

    @property
    def separable(self):
        return False

    @property
    def per_row_cross_entropy(self):
        return False

    def to(self, device, dtype):
        super().to(device, dtype)
        self.y = self.y.to(device)
        self.ema_b = self.ema_b.to(device=device, dtype=dtype)
        self.ema_d = self.ema_d.to(device=device, dtype=dtype)
        self.seen = self.seen.to(device)
        return self

    def update(self, loss_b, loss_d, idx):
        """Fold the batch's per-row losses into the averages; returns W of the batch's rows."""
        loss_b, loss_d = loss_b.to(self.ema_b.dtype), loss_d.to(self.ema_d.dtype)
        # the batch's losses in the order of its distinct rows (a row drawn twice: the mean of its losses)
        rows, inverse = torch.unique(idx, return_inverse=True)
        count = torch.bincount(inverse, minlength=rows.shape[0]).to(loss_b.dtype)
        loss_b = torch.zeros_like(count).index_add_(0, inverse, loss_b) / count
        loss_d = torch.zeros_like(count).index_add_(0, inverse, loss_d) / count
        seen, a = self.seen[rows], self.ema_alpha
        self.ema_b[rows] = torch.where(seen, a * self.ema_b[rows] + (1 - a) * loss_b, loss_b)
        self.ema_d[rows] = torch.where(seen, a * self.ema_d[rows] + (1 - a) * loss_d, loss_d)
        self.seen[rows] = True
        return self.weights(idx)

    def weights(self, idx):
        """``W = E^b / (E^b + E^d + 1e-8)`` of rows ``idx``, each average over its class's maximum."""
        y = self.y[idx]
        max_b = self.ema_b.new_zeros(self.n_classes).scatter_reduce(0, self.y, self.ema_b, "amax")
        max_d = self.ema_d.new_zeros(self.n_classes).scatter_reduce(0, self.y, self.ema_d, "amax")
        lb = _safe_ratio(self.ema_b[idx], max_b[y])
        ld = _safe_ratio(self.ema_d[idx], max_d[y])
        return lb / (lb + ld + _EPS)

    def __call__(self, output, y, idx):
        if not isinstance(output, LfFOutput):
            raise TypeError(f"LfFObjective needs the module to return an LfFOutput in training mode (a "
                            f"BiasedDebiasedPair); got {type(output).__name__}.")
        if isinstance(y, MixedTargets):
            raise TypeError("LfFObjective scores plain labels; a batch transform that mixes rows does not apply.")
        z_d, z_b = as_float(output.logits), as_float(output.biased_logits)
        with torch.no_grad():
            ce_b = F.cross_entropy(z_b, y, reduction="none")
            ce_d = F.cross_entropy(z_d, y, reduction="none")
            b_all, d_all, idx_all = _gather_batch(ce_b, ce_d, idx)
            self.update(b_all, d_all, idx_all)
            w = self.weights(idx).to(z_d.dtype)
        debiased = (w * self.loss(z_d, y)).mean()
        biased = self.gce(z_b, y).mean()
        self.last_terms = torch.stack([debiased.detach(), biased.detach()])
        self.last_weights = w
        return debiased + biased

    def state_dict(self):
        return {"ema_b": self.ema_b.detach().cpu().clone(), "ema_d": self.ema_d.detach().cpu().clone(),
                "seen": self.seen.cpu().clone()}

    def load_state_dict(self, state):
        state = dict(state)
        for key in ("ema_b", "ema_d", "seen"):
            value = torch.as_tensor(state.pop(key))
            ours = getattr(self, key)
            if value.shape != ours.shape:
                raise ValueError(f"{key} has shape {tuple(value.shape)}; this objective has {tuple(ours.shape)} "
                                 "training rows.")
            setattr(self, key, value.to(device=ours.device, dtype=ours.dtype))
        if state:
            raise ValueError(f"LfFObjective has no state {sorted(state)}.")

    def __repr__(self):
        return f"LfFObjective(q={self.gce.q!r}, ema_alpha={self.ema_alpha!r}, loss={self.loss!r})"


def _safe_ratio(num, den):
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _gather_batch(loss_b, loss_d, idx):
    """The global batch's losses and rows under data parallelism (each rank holds a shard), so that
    every rank updates the same averages; the local batch otherwise."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return loss_b, loss_d, idx
    world = dist.get_world_size()
    n = torch.tensor([idx.shape[0]], device=idx.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    packed = torch.zeros(3, width, dtype=torch.float64, device=idx.device)
    packed[0, : idx.shape[0]] = loss_b.double()
    packed[1, : idx.shape[0]] = loss_d.double()
    packed[2, : idx.shape[0]] = idx.double()  # row indices are exact in float64 below 2^53
    parts = [torch.zeros_like(packed) for _ in range(world)]
    dist.all_gather(parts, packed)
    out = torch.cat([p[:, : int(s.item())] for p, s in zip(parts, sizes)], dim=1)
    return out[0].to(loss_b.dtype), out[1].to(loss_d.dtype), out[2].to(torch.int64)


class LfFHistory(Callback):
    """Add the epoch's mean weighted debiased loss and the biased model's GCE to each record
    (keys ``debiased_loss`` and ``biased_loss``; ``train_loss`` is their sum)."""

    def on_epoch_begin(self, trainer):
        self._sum, self._n = None, 0

    def on_batch_end(self, trainer, loss):
        terms = trainer.objective.last_terms
        if terms is not None:
            self._sum = terms.clone() if self._sum is None else self._sum + terms
            self._n += 1

    def on_epoch_end(self, trainer):
        if self._sum is not None:
            debiased, biased = (self._sum / self._n).tolist()
            trainer.record.update(debiased_loss=debiased, biased_loss=biased)
        return False


@fill_doc
class LfFClassifier(BaseHeadClassifier):
    """Learning from Failure: a debiased head trained on what an intentionally biased head gets wrong.

    Nam, Cha, Ahn, Lee & Shin, "Learning from Failure: Training Debiased
    Classifier from Biased Classifier", NeurIPS 2020 (Algorithm 1). Two
    heads of the same architecture train together on the same minibatches.
    The biased head :math:`f_B` minimises the generalized cross-entropy
    (Zhang & Sabuncu, 2018)

    .. math:: \\mathrm{GCE}(p(x), y) = \\frac{1 - p_y(x)^q}{q},

    whose gradient is cross-entropy's times :math:`p_y^q`: it emphasises
    the rows it already fits, so it learns the easy (spurious) rule and
    fails on the rows that contradict it. The debiased head :math:`f_D`
    minimises cross-entropy weighted per row by the relative difficulty

    .. math:: W(x) = \\frac{\\mathrm{CE}(f_B(x), y)}{\\mathrm{CE}(f_B(x), y)
              + \\mathrm{CE}(f_D(x), y)},

    large where the biased head fails and the debiased one does not yet
    succeed. As in the authors' code, each row's two cross-entropies enter
    W as exponential moving averages over the epochs (``ema_alpha``),
    each divided by its maximum over the training rows of the row's class,
    and the minibatch objective is :math:`\\frac{1}{m}\\sum_i W_i
    \\mathrm{CE}(f_D(x_i), y_i) + \\frac{1}{m}\\sum_i \\mathrm{GCE}(f_B(x_i),
    y_i)` (plus the L2 term of both heads). No group labels are used.
    Prediction, validation and the stored weights are the debiased head's.

    Defaults and why: ``q=0.7`` and ``ema_alpha=0.7``, the paper's and the
    authors' code's (SubpopBench's default q is 0.7 too); AdamW (the
    authors' Adam) for 10 epochs at batch ``'auto'``, learning rate
    ``'auto'`` from JTT's reference rate 1e-2 (the two heads must drift
    apart within the run: on CelebA attributes 10 epochs at 1e-3 leave the
    debiased head at ERM's worst-group accuracy, at 1e-2 they reach 0.51),
    weak L2. The debiased head's worst class swings from epoch to epoch, so
    without ``X_val`` ``early_stopping='auto'`` holds out
    ``validation_fraction`` of the rows (when that gives every class at
    least 20 of them) and keeps the epoch with the best
    worst-class (with ``group_labels``: worst-group) accuracy there; on the
    law-school table (89 % one class) the last of 10 epochs is below the
    majority class (accuracy 0.25, balanced accuracy 0.44), the chosen one
    is not. Measurements and differences from the reference code (the
    authors' and SubpopBench's disagree on the moving averages and on the
    GCE's scale): ``docs/methods/lff.rst``.

    Parameters
    ----------
    q : float in (0, 1], default=0.7
        Exponent of the biased head's generalized cross-entropy: near 0 it
        is cross-entropy, at 1 the mean absolute error of p (the most
        biased).
    ema_alpha : float in [0, 1), default=0.7
        Weight of the past in the moving averages of the per-row losses (0:
        the current batch's losses alone).
    loss : str, skgroup.objectives.Loss or None, default=None
        The debiased head's per-row loss, weighted by W: None or
        'cross_entropy' (the paper's), or another name in
        ``skgroup.objectives.LOSSES`` or a Loss object. W itself is always
        computed from both heads' cross-entropies.
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
    biased_coefs_, biased_intercepts_ : lists of ndarray
        The biased head's weights (of the kept epoch with validation); not
        set by the fine-tuning path, which keeps the debiased model only.
    sample_weights_ : ndarray of shape (n_training_rows,)
        W of every training row (the rows of ``X``, less those of an
        internal ``validation_fraction`` split) from the moving averages as
        they stood at the end of training (at the kept epoch with
        validation): the relative difficulty of the paper's Fig. 3. Rows
        never visited have W = 0.
    coef_ : ndarray of shape (n_classes, n_features)
        The debiased head's weights (a linear head).
    intercept_ : ndarray of shape (n_classes,)
    coefs_, intercepts_ : lists of ndarray
    learning_rate_ : float
        The learning rate used (with ``learning_rate='auto'``).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
    history_ : dict of ndarray
        Per-epoch records, with ``debiased_loss`` and ``biased_loss`` (the
        two terms of the objective) beside ``train_loss`` and the ``val_*``
        scores.
    validation_scores_, best_iteration_ :
        As in :class:`ERMClassifier`.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import LfFClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = LfFClassifier(max_iter=3, random_state=0).fit(X, y)
    >>> clf.sample_weights_.shape
    (1000,)
    """

    _reference_learning_rate = 1e-2

    # the debiased head's last epoch is unreliable (its worst class swings from epoch to epoch on data
    # whose majority class is the easy rule): without X_val, 'auto' chooses the epoch on held-out rows
    _auto_validation_split = True

    _parameter_constraints = {
        **{k: v for k, v in BaseHeadClassifier._parameter_constraints.items() if k != "tol"},
        **LOSS_CONSTRAINT,
        "solver": [StrOptions({"adamw", "sgd"})],
        "q": [Interval(Real, 0, 1, closed="right")],
        "ema_alpha": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        *,
        q=0.7,
        ema_alpha=0.7,
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
        self.q = q
        self.ema_alpha = ema_alpha
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
        """Fit both heads; the debiased one predicts.

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
        # two independently initialised models, as the authors' get_model twice
        pair = BiasedDebiasedPair(ctx.executor.new_module(ctx.seed(1)), ctx.executor.new_module(ctx.seed(0)))
        objective = LfFObjective(ctx.y, ctx.n_classes, q=self.q, ema_alpha=self.ema_alpha, loss=self._loss(ctx))
        result = yield Stage("lff", objective, ctx.options, init=pair, seed=ctx.seed(0), callbacks=[LfFHistory()])
        rows = torch.arange(ctx.n_samples, device=objective.y.device)
        self.sample_weights_ = objective.weights(rows).cpu().numpy().astype(float)
        if isinstance(ctx.executor, HeadExecutor):  # (fine-tuning keeps the debiased backbone only)
            linears = [m for m in result.module.biased.modules() if isinstance(m, torch.nn.Linear)]
            self.biased_coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
            self.biased_intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        return dataclasses.replace(result, module=result.module.debiased)


def _search_space(data):
    # q: SubpopBench's range U(0.05, 0.95) (hparams_registry.py, "LfF_q") around the paper's 0.7;
    # L2 weak and strong, as for ERM; epochs: the default 10 CelebA epochs at equal steps
    return {"q": [0.3, 0.5, 0.7, 0.9], "l2_reg": [1e-4, 1e-2], "max_iter": [scaled_epochs(10, data)]}


register_method(MethodSpec(
    LfFClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 3, "batch_size": 64},
    benchmark_grid={"q": [0.1, 0.3, 0.5, 0.7, 0.9], "l2_reg": [1e-4, 1e-2]},
    quick_grid={"q": [0.5, 0.7]},
))
