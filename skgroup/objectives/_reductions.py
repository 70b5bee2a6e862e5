"""Reductions: how a batch's per-row losses become the scalar a method minimises.

``reduction(losses, idx) -> scalar``: ``losses`` are the per-row values of
the batch, ``idx`` the rows' positions among the stage's training rows, by
which per-row state (weights, group membership) is looked up. A reduction
never sees the model or the logits, so the same one drives a linear head on
cached features and a whole backbone.

Two properties tell the engine what it may do:

* ``online``: the reduction changes state at every call (Group DRO's q), so
  it needs a minibatch solver;
* ``separable``: the value over all rows is the size-weighted mean of its
  values over any split of them (a mean or weighted mean), so full-batch
  L-BFGS may evaluate it in row blocks.

A linear reduction (``sum_i w_i l_i`` with weights that do not depend on the
losses) also gives its weights (``row_weights``): full-batch L-BFGS then
needs no autograd through it.
"""

import functools
import math

import numpy as np
import torch

__all__ = ["Reduction", "Mean", "Weighted", "CVaR", "GroupDRO", "cvar_of_losses"]


def _world_size():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class Reduction:
    """Base class. A subclass declares ``separable = True`` only when its value is a mean over rows
    (the safe default lets L-BFGS see every row at once)."""

    online = False
    separable = False

    def __call__(self, losses, idx):  # pragma: no cover - abstract
        raise NotImplementedError

    def row_weights(self, idx, m):
        """The weights ``w`` (float64 tensor of shape (m,)) of a linear reduction of ``m`` losses at rows
        ``idx``: ``self(losses, idx) == w @ losses`` for any losses; None for any other reduction (the
        default). A subclass that changes ``__call__`` changes this too."""
        return None

    def to(self, device, dtype):
        """Move per-row state to the training device; returns self."""
        return self

    def state_dict(self):
        """What training changes (empty for stateless reductions)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load; got keys {sorted(state)}.")

    def config(self):
        """The settings that shape training, tensors and arrays left out (see ``fingerprint_arrays``)."""
        return {k: v for k, v in vars(self).items()
                if not isinstance(v, (torch.Tensor, np.ndarray)) and not k.startswith("last_")}

    def fingerprint_arrays(self):
        """The per-row state that shapes training (weights, membership), for checkpoints' fingerprints."""
        return {k: v for k, v in vars(self).items()
                if isinstance(v, (torch.Tensor, np.ndarray)) and k not in self.state_dict()}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class Mean(Reduction):
    """The mean of the batch's losses (ERM)."""

    separable = True

    def __call__(self, losses, idx):
        return losses.mean()

    def row_weights(self, idx, m):
        return torch.full((m,), 1.0 / m, dtype=torch.float64) if type(self).__call__ is Mean.__call__ else None


class Weighted(Reduction):
    """Weighted mean ``sum_i w_i l_i / sum_i w_i`` over the rows trained on.

    A minibatch computes ``(1/m) sum_b w_i l_i / mean(w)``, an unbiased
    estimate of the full-batch value. Normalising by the weights' sum makes
    integer weights exactly equivalent to repeating rows (scikit-learn's
    sample-weight contract), and makes JTT's upweighting the mean over its
    upsampled epoch. ``rows``: the training rows a stage visits, when not
    all (the mean weight is taken over them).
    """

    separable = True

    def __init__(self, sample_weight, rows=None, *, name="sample_weight"):
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1 or not np.isfinite(w).all() or np.any(w < 0):
            raise ValueError(f"{name} must be a 1-D array of finite, non-negative weights.")
        mean = w.mean() if rows is None else w[np.asarray(rows)].mean()
        if mean <= 0:
            raise ValueError(f"{name} must have a positive sum over the rows trained on.")
        self.sample_weight = torch.as_tensor(w / mean)

    def to(self, device, dtype):
        self.sample_weight = self.sample_weight.to(device=device, dtype=dtype)
        return self

    def __call__(self, losses, idx):
        return (self.sample_weight[idx] * losses).mean()

    def row_weights(self, idx, m):
        if type(self).__call__ is not Weighted.__call__:
            return None
        return self.sample_weight[idx].detach().to("cpu", torch.float64) / m


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
    count = whole + 1 if frac > 1e-12 and whole < m else whole
    top = torch.topk(losses, count).values
    # one product with the losses' weights (1/k each, frac/k for the partial one) instead of a slice, a sum,
    # an index and two scalings: at frozen-feature batch sizes each tensor operation costs as much as the rest
    return top @ _cvar_weights(count, whole, frac, k, top.dtype, top.device)


@functools.lru_cache(maxsize=64)
def _cvar_weights(count, whole, frac, k, dtype, device):
    w = torch.full((count,), 1.0 / k, dtype=dtype, device=device)
    if count > whole:
        w[whole] = frac / k
    return w


class CVaR(Reduction):
    """CVaR DRO (Levy et al., 2020): the batch's top-alpha mean loss."""

    separable = False

    def __init__(self, alpha):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1]; got {alpha}.")
        self.alpha = float(alpha)

    def __call__(self, losses, idx):
        return cvar_of_losses(losses, self.alpha)


class GroupDRO(Reduction):
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
        self.adjustment = float(adjustment)
        self.adjust = torch.as_tensor(adjustment / np.sqrt(counts))
        self.q = torch.full((membership.shape[1],), 1.0 / membership.shape[1], dtype=torch.float64)
        # the last batch's global per-group mean losses and counts (for history callbacks)
        self.last_group_loss = None
        self.last_count = None

    def to(self, device, dtype):
        self.membership = self.membership.to(device)
        self.adjust = self.adjust.to(device=device, dtype=torch.float64)
        self.q = self.q.to(device)
        self.__dict__.pop("_member", None)  # the membership in the losses' dtype, made at the next step
        return self

    def __call__(self, losses, idx):
        # A torch call costs several microseconds (tens with cold caches after a wide batch), as
        # much as a step's whole work on narrow features. On the CPU the batch's membership and
        # the q update of a few groups are numpy's (views of the same memory, no copies); only
        # the weighted sum the gradient flows through is torch's. On a GPU everything stays
        # there (no synchronisation per step), and data parallel runs all-reduce torch tensors.
        world = _world_size()
        member = getattr(self, "_member", None)
        if member is None or member.dtype != losses.dtype or member.device != losses.device:
            member = self._member = self.membership.to(device=losses.device, dtype=losses.dtype)
        if losses.device.type == "cpu" and world == 1:
            rows = member.numpy()[idx.numpy()]
            sums = torch.from_numpy(rows).T @ losses
            with torch.no_grad():
                g_sum, g_count = sums.detach().double().numpy(), rows.sum(axis=0, dtype=np.float64)
                weight = self._update(g_sum, g_count, np, self.q.numpy(), self.adjust.numpy())
                weight = torch.from_numpy(weight).to(losses.dtype)
        else:
            member = member[idx]
            sums = member.T @ losses
            with torch.no_grad():
                stats = torch.cat([sums.detach(), member.sum(dim=0)]).double()
                if world > 1:
                    torch.distributed.all_reduce(stats)
                g_sum, g_count = stats.split(sums.shape[0])
                weight = (world * self._update(g_sum, g_count, torch, self.q, self.adjust)).to(losses.dtype)
        return torch.dot(weight, sums)

    def _update(self, g_sum, g_count, xp, q, adjust):
        """The q step from the batch's per-group loss sums and counts (numpy or torch arrays, ``xp``
        their module); sets ``q`` and ``last_*`` (torch) and returns ``q / count``, d loss / d sums."""
        denom = g_count.clip(min=1)
        group_loss = g_sum / denom
        # absent groups keep their q (up to the normalisation)
        q = q * xp.exp(xp.where(g_count > 0, self.eta * (group_loss + adjust), 0.0))
        q = q / q.sum()
        as_torch = torch.from_numpy if xp is np else (lambda t: t)
        self.q, self.last_group_loss, self.last_count = as_torch(q), as_torch(group_loss), as_torch(g_count)
        return q / denom

    def state_dict(self):
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state):
        q = torch.as_tensor(state["q"], dtype=torch.float64)
        if q.shape != self.q.shape:
            raise ValueError(f"q has shape {tuple(q.shape)}; this objective has {tuple(self.q.shape)} groups.")
        self.q = q.to(self.q.device)

    def fingerprint_arrays(self):
        return {"membership": self.membership}
