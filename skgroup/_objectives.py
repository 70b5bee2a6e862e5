"""Training objectives, written over a batch of (logits, labels, row indices).

Every method in skgroup differs from ERM by how it turns per-sample losses
into the scalar it minimises. An objective sees the logits of a batch, the
labels and the *training-row indices* of the batch, so per-row state (sample
weights, group membership) is looked up by index; it never sees the model.
That is what lets the same objectives drive a linear head on cached features
and a whole backbone in the fine-tuning path (:mod:`skgroup.engine`).

``online`` objectives change state at each call (Group DRO's q), so they
need a minibatch optimizer; the others also run under full-batch L-BFGS.
``separable`` objectives are a (weighted) sum of per-sample terms, so a full
batch can be evaluated in row blocks. State that training changes (q) is
saved and restored with ``state_dict`` / ``load_state_dict``, so a killed
run resumes exactly.

Most objectives read plain logits. :class:`MultitaskLoss` reads a
:class:`MultitaskOutput` instead: a module trained with it returns that
structure in training mode (logits, an auxiliary prediction and its target,
the shared representations) and plain logits in eval mode, which is the mode
the engine validates and predicts in.
"""

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Objective",
    "MeanLoss",
    "WeightedLoss",
    "GroupDROLoss",
    "CVaRLoss",
    "cvar_of_losses",
    "MultitaskOutput",
    "MultitaskLoss",
]


def _world_size():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class Objective:
    """Mean cross-entropy; subclasses change :meth:`reduce`."""

    online = False
    # What the full-batch linear evaluator (skgroup._lbfgs) may exploit. softmax_only: each
    # row's logits count only through softmax (a constant added to a row changes nothing).
    # separable: the value over all rows is the size-weighted mean of its values over any
    # split of them. A subclass overriding __call__ (reduce) drops them unless it sets them.
    softmax_only = True
    separable = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "__call__" in own:
            cls.softmax_only = own.get("softmax_only", False)
        if "__call__" in own or "reduce" in own:
            cls.separable = own.get("separable", False)

    def __call__(self, logits, y, idx):
        # cross-entropy in at least float32, also under bf16/fp16 autocast
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return self.reduce(F.cross_entropy(logits, y, reduction="none"), idx)

    def reduce(self, losses, idx):
        return losses.mean()

    def to(self, device, dtype):
        """Move per-row state to the training device; returns self."""
        return self

    def state_dict(self):
        """What training changes (empty for stateless objectives)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load; got keys {sorted(state)}.")


MeanLoss = Objective


class WeightedLoss(Objective):
    """Weighted mean loss sum_i w_i l_i / sum_i w_i over the rows trained on.

    A minibatch computes (1/m) sum_b w_i l_i / mean(w), an unbiased estimate
    of the full-batch value. Normalising by the weights' sum makes integer
    weights exactly equivalent to repeating rows (scikit-learn's
    sample-weight contract), and makes JTT's upweighting the mean over its
    upsampled epoch. ``rows``: the training rows a stage visits, when not all
    (the mean weight is taken over them).
    """

    separable = True  # w is normalised over the rows, so a block's mean is its share of the sum

    def __init__(self, sample_weight, rows=None):
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1 or not np.isfinite(w).all() or np.any(w < 0):
            raise ValueError("sample_weight must be a 1-D array of finite, non-negative weights.")
        mean = w.mean() if rows is None else w[np.asarray(rows)].mean()
        if mean <= 0:
            raise ValueError("sample_weight must have a positive sum over the rows trained on.")
        self.sample_weight = torch.as_tensor(w / mean)

    def to(self, device, dtype):
        self.sample_weight = self.sample_weight.to(device=device, dtype=dtype)
        return self

    def reduce(self, losses, idx):
        return (self.sample_weight[idx] * losses).mean()


class GroupDROLoss(Objective):
    """Online group DRO (Sagawa et al., ICLR 2020, Algorithm 1).

    At each step, for every group g present in the batch with mean loss l_g,

        q_g <- q_g * exp(eta * (l_g + C / sqrt(n_g)))   then   q <- q / sum(q)

    and the model steps on sum_g q_g l_g (with the *updated* q, as the
    reference ``loss.py`` does). Groups absent from the batch keep their q_g
    up to renormalisation; the reference code instead adds C/sqrt(n_g) to
    absent groups too when C > 0 (their batch loss counts as 0).

    ``membership`` is the (n_samples, n_groups) boolean matrix, so overlapping
    groups work too: a sample then counts in the mean of every group it
    belongs to.

    Data parallel: each rank sees its shard of the batch; the per-group loss
    sums and counts are all-reduced before the q update, so every rank
    updates q identically from the global batch, and the returned loss is
    scaled so that DDP's gradient average is the gradient of
    sum_g q_g * (global mean loss of g).
    """

    online = True
    separable = False

    def __init__(self, membership, *, eta=0.01, adjustment=0.0):
        membership = np.asarray(membership, dtype=bool)
        self.membership = torch.as_tensor(membership)
        counts = membership.sum(axis=0).astype(np.float64)
        if np.any(counts == 0):
            raise ValueError("Every group needs at least one training sample.")
        self.eta = float(eta)
        self.adjust = torch.as_tensor(adjustment / np.sqrt(counts))
        self.q = torch.full((membership.shape[1],), 1.0 / membership.shape[1], dtype=torch.float64)
        # the last batch's global per-group mean losses and counts (for history callbacks)
        self.last_group_loss = None
        self.last_count = None

    def to(self, device, dtype):
        self.membership = self.membership.to(device)
        self.adjust = self.adjust.to(device=device, dtype=torch.float64)
        self.q = self.q.to(device)
        return self

    def reduce(self, losses, idx):
        member = self.membership[idx].to(losses.dtype)
        sums = member.T @ losses
        count = member.sum(dim=0)
        world = _world_size()
        with torch.no_grad():
            stats = torch.cat([sums.detach(), count]).double()
            if world > 1:
                torch.distributed.all_reduce(stats)
            g_sum, g_count = stats.split(sums.shape[0])
            group_loss = g_sum / g_count.clamp_min(1)
            present = g_count > 0
            step = self.eta * (group_loss + self.adjust)
            q = self.q * torch.exp(torch.where(present, step, torch.zeros_like(step)))
            self.q = q / q.sum()
            self.last_group_loss, self.last_count = group_loss, g_count
        denom = g_count.clamp_min(1).to(losses.dtype)
        return world * (self.q.to(losses.dtype) * sums / denom).sum()

    def state_dict(self):
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state):
        q = torch.as_tensor(state["q"], dtype=torch.float64)
        if q.shape != self.q.shape:
            raise ValueError(f"q has shape {tuple(q.shape)}; this objective has {tuple(self.q.shape)} groups.")
        self.q = q.to(self.q.device)


def cvar_of_losses(losses, alpha):
    """Exact CVaR_alpha: mean of the worst alpha-fraction of ``losses``.

    With k = alpha * m, the top floor(k) losses count fully and the next one
    with weight k - floor(k); the sum is divided by k. alpha = 1 gives the
    mean; alpha * m < 1 gives the maximum.
    """
    m = losses.shape[0]
    k = alpha * m
    # the slack makes alpha * m = 3 - 1e-15 (float error) count 3 whole losses
    whole = min(int(math.floor(k + 1e-9)), m)
    frac = k - whole
    top = torch.topk(losses, min(whole + 1, m)).values
    total = top[:whole].sum()
    if frac > 1e-12 and whole < m:
        total = total + frac * top[whole]
    return total / k


class CVaRLoss(Objective):
    """CVaR DRO (Levy et al., 2020): minimise the batch's top-alpha mean loss."""

    separable = False

    def __init__(self, alpha):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1]; got {alpha}.")
        self.alpha = float(alpha)

    def reduce(self, losses, idx):
        return cvar_of_losses(losses, self.alpha)


class MultitaskOutput(NamedTuple):
    """What a multitask module returns in training mode (eval mode: ``logits`` alone).

    Attributes
    ----------
    logits : tensor (m, K)
        End-task logits of the clean inputs.
    reconstruction, target : tensors (m, d) or None
        The auxiliary head's prediction and what it should predict (the clean
        inputs, for denoising reconstruction); None without an auxiliary task.
    h_end, h_aux : tensors (m, width) or None
        The shared trunk's outputs, the inputs of the end-task and auxiliary
        heads, whose L1 norm is penalised.
    aux_loss : scalar tensor or None
        The auxiliary loss computed by the module itself, when it is not a
        squared reconstruction error: masked language modelling's
        cross-entropy on the selected tokens, masked image modelling's L1
        on the masked pixels (:mod:`skgroup.finetune`), whose masks only
        the module holds. When given, it is ``L_aux`` and ``reconstruction``
        / ``target`` are ignored.
    """

    logits: torch.Tensor
    reconstruction: torch.Tensor = None
    target: torch.Tensor = None
    h_end: torch.Tensor = None
    h_aux: torch.Tensor = None
    aux_loss: torch.Tensor = None


def _at_least_float32(t):
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class MultitaskLoss(Objective):
    """Regularized multitask learning (Kulkarni et al., TMLR 2024, eq. 9).

    .. math:: L = L_{end} + \\alpha_{aux} L_{aux}
              + \\alpha_{reg}\\,(\\overline{|h_{end}|} + \\overline{|h_{aux}|})

    ``L_end`` is the ``end`` objective (mean cross-entropy by default; any
    objective over logits, e.g. a weighted one) of ``output.logits``;
    ``L_aux`` the mean squared error of ``output.reconstruction`` against
    ``output.target`` (averaged over rows and coordinates, like the mean
    over tokens of a masked-LM loss), or ``output.aux_loss`` when the
    module computed its auxiliary loss itself (the fine-tuning path's
    masked language / image modelling); the penalty is the L1 norm of each
    representation divided by its number of entries (rows x width), as the
    authors' code normalises it, so ``alpha_reg`` does not depend on the
    batch size or the width. Without an auxiliary output (a module built
    without an auxiliary head, as the estimator builds it at
    ``alpha_aux=0``) only ``h_end`` is penalised: the paper's
    end-task-plus-L1 ablation.

    The last batch's three terms are kept, detached, in ``last_terms``
    (end, aux, L1) for :class:`skgroup.estimators.MultitaskHistory`.
    Attributes the wrapper lacks are read from ``end`` (Group DRO's ``q``
    and batch statistics, which its history callback reads).
    """

    separable = False

    def __init__(self, alpha_aux=1.0, alpha_reg=0.0, end=None):
        if alpha_aux < 0 or alpha_reg < 0:
            raise ValueError(f"alpha_aux and alpha_reg must be >= 0; got {alpha_aux} and {alpha_reg}.")
        self.alpha_aux = float(alpha_aux)
        self.alpha_reg = float(alpha_reg)
        self.end = MeanLoss() if end is None else end
        self.online = self.end.online
        self.last_terms = None

    def __call__(self, output, y, idx):
        if not isinstance(output, MultitaskOutput):
            raise TypeError(
                f"MultitaskLoss needs the module to return a MultitaskOutput in training mode; got "
                f"{type(output).__name__}. Build the module with skgroup.estimators.MultitaskHead."
            )
        end = self.end(output.logits, y, idx)
        zero = torch.zeros((), dtype=end.dtype, device=end.device)
        aux = zero
        if self.alpha_aux and output.aux_loss is not None:
            aux = _at_least_float32(output.aux_loss)
        elif self.alpha_aux:
            if output.reconstruction is None:
                raise ValueError("alpha_aux > 0 but the module has no auxiliary head: build it with one.")
            aux = F.mse_loss(_at_least_float32(output.reconstruction), _at_least_float32(output.target))
        l1 = zero
        for h in (output.h_end, output.h_aux):
            if h is not None:
                l1 = l1 + _at_least_float32(h).abs().mean()
        self.last_terms = torch.stack([end.detach(), aux.detach().to(end.dtype), l1.detach().to(end.dtype)])
        return end + self.alpha_aux * aux + self.alpha_reg * l1

    def __getattr__(self, name):
        # only called for attributes not found normally; "end" absent means a half-built object
        end = self.__dict__.get("end")
        if end is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(end, name)

    def to(self, device, dtype):
        self.end.to(device, dtype)
        return self

    def state_dict(self):
        return self.end.state_dict()

    def load_state_dict(self, state):
        self.end.load_state_dict(state)
