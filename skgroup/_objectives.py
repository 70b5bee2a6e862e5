"""Training objectives, written over a batch of (logits, labels, row indices).

Every method in skgroup differs from ERM by how it turns per-sample losses
into the scalar it minimises. An objective sees the logits of a batch, the
labels and the *training-row indices* of the batch, so per-row state (sample
weights, group membership) is looked up by index; it never sees the model.
That is what lets the same objectives drive the linear-head loop here and a
full fine-tuning loop over a backbone.

``online`` objectives change state at each call (Group DRO's q), so they
need a minibatch optimizer; the others also run under full-batch L-BFGS.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Objective", "MeanLoss", "WeightedLoss", "GroupDROLoss", "CVaRLoss", "cvar_of_losses"]


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
        return self.reduce(F.cross_entropy(logits, y, reduction="none"), idx)

    def reduce(self, losses, idx):
        return losses.mean()

    def to(self, device, dtype):
        """Move per-row state to the training device; returns self."""
        return self

    def end_epoch(self):
        """Hook called after each epoch (history bookkeeping)."""


MeanLoss = Objective


class WeightedLoss(Objective):
    """Weighted mean loss sum_i w_i l_i / sum_i w_i.

    A minibatch computes (1/m) sum_b w_i l_i / mean(w), an unbiased estimate
    of the full-batch value. Normalising by the weights' sum makes integer
    weights exactly equivalent to repeating rows (scikit-learn's
    sample-weight contract), and makes JTT's upweighting the mean over its
    upsampled epoch.
    """

    separable = True  # w is normalised over all rows, so a block's mean is its share of the sum

    def __init__(self, sample_weight):
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.sum() <= 0:
            raise ValueError("sample_weight must have a positive sum.")
        self.sample_weight = torch.as_tensor(w / w.mean())

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
    """

    online = True

    def __init__(self, membership, *, eta=0.01, adjustment=0.0, record_history=False):
        membership = np.asarray(membership, dtype=bool)
        self.membership = torch.as_tensor(membership)
        counts = membership.sum(axis=0).astype(np.float64)
        if np.any(counts == 0):
            raise ValueError("Every group needs at least one training sample.")
        self.eta = float(eta)
        self.adjust = torch.as_tensor(adjustment / np.sqrt(counts))
        self.q = torch.full((membership.shape[1],), 1.0 / membership.shape[1], dtype=torch.float64)
        self.record_history = record_history
        self.history = {"q": [], "group_loss": []}
        self._epoch_loss = torch.zeros(membership.shape[1], dtype=torch.float64)
        self._epoch_count = torch.zeros(membership.shape[1], dtype=torch.float64)

    def to(self, device, dtype):
        self.membership = self.membership.to(device)
        self.adjust = self.adjust.to(device=device, dtype=torch.float64)
        self.q = self.q.to(device)
        self._epoch_loss = self._epoch_loss.to(device)
        self._epoch_count = self._epoch_count.to(device)
        return self

    def group_losses(self, losses, idx):
        """Mean loss and count of each group in the batch."""
        member = self.membership[idx].to(losses.dtype)
        count = member.sum(dim=0)
        group_loss = (member.T @ losses) / count.clamp_min(1)
        return group_loss, count

    def reduce(self, losses, idx):
        group_loss, count = self.group_losses(losses, idx)
        with torch.no_grad():
            present = count > 0
            step = self.eta * (group_loss.detach().double() + self.adjust)
            q = self.q * torch.exp(torch.where(present, step, torch.zeros_like(step)))
            self.q = q / q.sum()
            if self.record_history:
                self._epoch_loss += group_loss.detach().double() * count
                self._epoch_count += count.double()
        return (self.q.to(losses.dtype) * group_loss).sum()

    def end_epoch(self):
        if self.record_history:
            self.history["q"].append(self.q.cpu().numpy().copy())
            mean = self._epoch_loss / self._epoch_count.clamp_min(1)
            mean[self._epoch_count == 0] = float("nan")
            self.history["group_loss"].append(mean.cpu().numpy())
            self._epoch_loss.zero_()
            self._epoch_count.zero_()


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

    def __init__(self, alpha):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1]; got {alpha}.")
        self.alpha = float(alpha)

    def reduce(self, losses, idx):
        return cvar_of_losses(losses, self.alpha)
