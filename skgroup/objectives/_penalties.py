"""Invariance and alignment penalties across environments (IRM, V-REx, CORAL, MMD).

Each penalty reads the batch's rows by environment: ``environments`` holds
one environment id (0 .. E-1) per training row, looked up by the batch's row
indices like a reduction's per-row state, so the same penalty drives a head
on cached features and a whole backbone. The per-environment statistics are
computed with a one-hot (rows x environments) matrix, without a host
synchronisation, and an environment absent from a batch (or too small in it
for the statistic) is left out of that batch's penalty.

The formulas are those of DomainBed (Gulrajani & Lopez-Paz, 2021,
``domainbed/algorithms.py``) and SubpopBench (Yang et al., 2023,
``subpopbench/learning/algorithms.py``), which compute them on one minibatch
per environment (DomainBed) or on the rows of each attribute value in one
minibatch (SubpopBench); here, as in SubpopBench, on the rows of each
environment in one minibatch.

* :class:`IRMPenalty` (Arjovsky et al., 2019, IRMv1): per environment, the
  product of the gradients of the risk with respect to a dummy scale ``w``
  on the logits, at ``w = 1``, on the two halves of the environment's rows
  (rows 0, 2, 4, ... and 1, 3, 5, ... in batch order), averaged over the
  environments; an unbiased estimate of the squared gradient.
* :class:`VRExPenalty` (Krueger et al., 2021): the variance of the
  environments' mean risks.
* :class:`CORALPenalty` (Sun & Saenko, 2016): for every pair of
  environments, the mean squared difference of the penultimate features'
  means plus that of their covariances, averaged over the pairs.
* :class:`MMDPenalty`: the squared maximum mean discrepancy between every
  pair of environments' penultimate features under a sum of Gaussian kernels
  ``sum_g exp(-g ||x - x'||^2)``, ``g`` in {1e-3, ..., 1e3}, averaged over
  the pairs.
* :class:`EnvironmentMean`: the reduction IRM and V-REx pair with their
  penalty: the mean over the batch's environments of each one's mean loss.

CORAL and MMD read the module's penultimate features, which the engine hands
over for a stage with ``capture_features=True``
(:class:`~skgroup.objectives.FeatureOutput`).
"""

import numpy as np
import torch
import torch.nn.functional as F

from ._losses import as_float
from ._objective import FeatureOutput, Penalty
from ._reductions import Reduction

__all__ = [
    "EnvironmentMean",
    "IRMPenalty",
    "VRExPenalty",
    "CORALPenalty",
    "MMDPenalty",
    "MMD_GAMMAS",
    "coral_distance",
    "gaussian_mmd",
]

#: The bandwidths of DomainBed's and SubpopBench's Gaussian kernel (``gaussian_kernel``'s ``gamma``).
MMD_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def _check_environments(environments):
    env = np.asarray(environments)
    if env.ndim != 1 or env.size == 0 or not np.issubdtype(env.dtype, np.integer) or env.min() < 0:
        raise ValueError("environments must be a non-empty 1-D array of environment ids 0 .. E-1, one per "
                         "training row.")
    return torch.as_tensor(env.astype(np.int64)), int(env.max()) + 1


class _Environments:
    """Per-row environment ids and the batch's one-hot membership."""

    def __init__(self, environments):
        self.environments, self.n_environments = _check_environments(environments)

    def to(self, device, dtype):
        self.environments = self.environments.to(device)
        return self

    def onehot(self, idx, dtype):
        """(m, E) 0/1 matrix of the batch's rows and its column sums (rows per environment)."""
        member = F.one_hot(self.environments[idx], self.n_environments).to(dtype)
        return member, member.sum(dim=0)

    def fingerprint_arrays(self):
        return {"environments": self.environments}


class EnvironmentMean(_Environments, Reduction):
    """``(1 / E_b) sum_e mean_{i in e} l_i``: the mean of the environments' mean losses in the batch.

    The risk IRM and V-REx minimise (DomainBed's ``nll``, SubpopBench's IRM
    average over attribute values); ``E_b`` counts the environments present
    in the batch.
    """

    separable = False

    def __init__(self, environments):
        _Environments.__init__(self, environments)

    def __call__(self, losses, idx):
        member, count = self.onehot(idx, losses.dtype)
        present = count > 0
        means = (member.T @ losses) / count.clamp_min(1)
        return (means * present).sum() / present.sum()

    def config(self):
        return {"n_environments": self.n_environments}


class IRMPenalty(_Environments, Penalty):
    """IRMv1 (Arjovsky, Bottou, Gulrajani & Lopez-Paz, 2019, eq. IRMv1), as DomainBed computes it.

    .. math:: P = \\frac{1}{E_b}\\sum_e \\nabla_{w} R^e_1(w \\cdot z)\\big|_{w=1}
              \\cdot \\nabla_{w} R^e_2(w \\cdot z)\\big|_{w=1}

    where :math:`R^e_1`, :math:`R^e_2` are the mean losses of the first and
    second half of environment e's rows in the batch (rows 0, 2, 4, ... and
    1, 3, 5, ... in batch order, DomainBed's ``logits[::2]`` and
    ``logits[1::2]``). The product of two independent halves' gradients is
    an unbiased estimate of the squared gradient of the environment's risk.
    Any per-row loss: each row's derivative with respect to its own scale is
    taken by autograd (with ``create_graph``, so the penalty is
    differentiable). Environments with fewer than two rows in the batch are
    left out (in the reference code their empty half makes the loss NaN).
    """

    def __init__(self, environments, weight=1.0):
        _Environments.__init__(self, environments)
        self.weight = float(weight)

    def __call__(self, terms):
        logits = as_float(terms.logits)
        member, count = self.onehot(terms.idx, logits.dtype)
        scale = torch.ones(logits.shape[0], 1, dtype=logits.dtype, device=logits.device, requires_grad=True)
        losses = terms.loss(logits * scale, terms.y)
        grad = torch.autograd.grad(losses.sum(), scale, create_graph=True)[0].squeeze(1)
        # 1-based position of each row among its environment's rows of the batch: odd -> first half
        position = (member.cumsum(dim=0) * member).sum(dim=1)
        first = member * (position % 2 == 1).unsqueeze(1).to(member.dtype)
        second = member - first
        n1, n2 = first.sum(dim=0), second.sum(dim=0)
        g1 = (first.T @ grad) / n1.clamp_min(1)
        g2 = (second.T @ grad) / n2.clamp_min(1)
        valid = (n2 > 0).to(logits.dtype)  # two rows or more
        return (valid * g1 * g2).sum() / valid.sum().clamp_min(1)

    def config(self):
        return {"n_environments": self.n_environments, "weight": self.weight}


class VRExPenalty(_Environments, Penalty):
    """V-REx (Krueger et al., "Out-of-Distribution Generalization via Risk Extrapolation", ICML 2021).

    .. math:: P = \\frac{1}{E_b}\\sum_e \\big(R^e - \\bar R\\big)^2, \\qquad
              \\bar R = \\frac{1}{E_b}\\sum_e R^e

    the (population) variance of the environments' mean losses in the batch,
    as DomainBed's ``VREx`` computes it.
    """

    def __init__(self, environments, weight=1.0):
        _Environments.__init__(self, environments)
        self.weight = float(weight)

    def __call__(self, terms):
        losses = as_float(terms.losses)
        member, count = self.onehot(terms.idx, losses.dtype)
        present = (count > 0).to(losses.dtype)
        n_present = present.sum()
        risks = (member.T @ losses) / count.clamp_min(1)
        mean = (present * risks).sum() / n_present
        return (present * (risks - mean) ** 2).sum() / n_present

    def config(self):
        return {"n_environments": self.n_environments, "weight": self.weight}


def _features(terms, name):
    if not isinstance(terms.output, FeatureOutput):
        raise TypeError(
            f"{name} reads the penultimate features: train the stage with Stage(..., capture_features=True), "
            f"which passes the objective a FeatureOutput; got {type(terms.output).__name__}."
        )
    return as_float(terms.output.features)


def coral_distance(x, z):
    """DomainBed's ``mmd`` with ``kernel_type='mean_cov'``: ``mean (mu_x - mu_z)^2 + mean (C_x - C_z)^2``.

    The means over the feature coordinates of the squared differences of the
    two samples' means and of their (unbiased) covariance matrices. Each
    sample needs two rows or more.
    """
    mx, mz = x.mean(0, keepdim=True), z.mean(0, keepdim=True)
    cx, cz = x - mx, z - mz
    cov_x = cx.T @ cx / (x.shape[0] - 1)
    cov_z = cz.T @ cz / (z.shape[0] - 1)
    return (mx - mz).pow(2).mean() + (cov_x - cov_z).pow(2).mean()


def _sq_dists(x, z):
    # DomainBed's my_cdist: ||x||^2 + ||z||^2 - 2 x.z, floored at 1e-30
    return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ z.T + z.pow(2).sum(-1, keepdim=True).T).clamp_min(1e-30)


def _kernel(x, z, gammas):
    d = _sq_dists(x, z)
    g = torch.as_tensor(gammas, dtype=d.dtype, device=d.device).view(-1, 1, 1)
    return torch.exp(-g * d.unsqueeze(0)).sum(dim=0)


def gaussian_mmd(x, z, gammas=MMD_GAMMAS):
    """``mean K(x, x) + mean K(z, z) - 2 mean K(x, z)``, ``K = sum_g exp(-g ||.-.||^2)`` (DomainBed's ``mmd``)."""
    return _kernel(x, x, gammas).mean() + _kernel(z, z, gammas).mean() - 2 * _kernel(x, z, gammas).mean()


class CORALPenalty(_Environments, Penalty):
    """Deep CORAL (Sun & Saenko, ECCV 2016 workshops), as DomainBed and SubpopBench compute it.

    .. math:: P = \\binom{E_b}{2}^{-1} \\sum_{e < f}
              \\overline{(\\mu_e - \\mu_f)^2} + \\overline{(C_e - C_f)^2}

    over the pairs of environments with two rows or more in the batch;
    :math:`\\mu_e`, :math:`C_e` are the mean and unbiased covariance of the
    environment's penultimate features, the bars means over coordinates.
    (The paper's loss is :math:`\\lVert C_e - C_f\\rVert_F^2 / (4 d^2)`
    between a source and a target domain; the reference implementations add
    the means and average over coordinates, which is what is done here.)
    """

    def __init__(self, environments, weight=1.0):
        _Environments.__init__(self, environments)
        self.weight = float(weight)

    def __call__(self, terms):
        feats = _features(terms, "CORALPenalty")
        member, count = self.onehot(terms.idx, feats.dtype)
        means = (member.T @ feats) / count.clamp_min(1).unsqueeze(1)
        # covariances compared through the rows' Gram matrix (m x m, not E x d x d): with Z the rows
        # centred on their environment's mean, <C_e, C_f>_F = sum_{i in e, j in f} (z_i . z_j)^2
        # / ((n_e - 1)(n_f - 1)), so ||C_e - C_f||_F^2 = <C_e, C_e> + <C_f, C_f> - 2 <C_e, C_f>
        centred = feats - member @ means
        blocks = member.T @ (centred @ centred.T).pow(2) @ member
        denom = (count - 1).clamp_min(1)
        inner = blocks / (denom.unsqueeze(1) * denom.unsqueeze(0))
        diag = torch.diagonal(inner)
        d = feats.shape[1]
        cov_diff = (diag.unsqueeze(1) + diag.unsqueeze(0) - 2 * inner) / d**2
        mean_diff = (means.unsqueeze(1) - means.unsqueeze(0)).pow(2).mean(dim=2)
        valid = (count >= 2).to(feats.dtype)
        pairs = torch.triu(valid.unsqueeze(1) * valid.unsqueeze(0), diagonal=1)
        return (pairs * (mean_diff + cov_diff)).sum() / pairs.sum().clamp_min(1)

    def config(self):
        return {"n_environments": self.n_environments, "weight": self.weight}


class MMDPenalty(_Environments, Penalty):
    """Gaussian-kernel MMD between environments' penultimate features (DomainBed's and SubpopBench's ``MMD``).

    .. math:: P = \\binom{E_b}{2}^{-1} \\sum_{e < f} \\overline{K_{ee}} + \\overline{K_{ff}}
              - 2\\,\\overline{K_{ef}}, \\qquad K(x, x') = \\sum_{g} e^{-g \\lVert x - x'\\rVert^2}

    over the pairs of environments present in the batch, the bars the means
    of the kernel over the two environments' rows (the biased estimate, the
    diagonal included, as in the reference), ``g`` in :data:`MMD_GAMMAS`.
    The kernel is evaluated once over the batch and summed by blocks.
    """

    def __init__(self, environments, weight=1.0, gammas=MMD_GAMMAS):
        _Environments.__init__(self, environments)
        self.weight = float(weight)
        self.gammas = tuple(float(g) for g in gammas)

    def __call__(self, terms):
        feats = _features(terms, "MMDPenalty")
        member, count = self.onehot(terms.idx, feats.dtype)
        block = member.T @ _kernel(feats, feats, self.gammas) @ member  # sums of K over pairs of environments
        n = count.clamp_min(1)
        mean = block / (n.unsqueeze(1) * n.unsqueeze(0))
        diag = torch.diagonal(mean)
        mmd = diag.unsqueeze(1) + diag.unsqueeze(0) - 2 * mean
        present = (count > 0).to(feats.dtype)
        pairs = torch.triu(present.unsqueeze(1) * present.unsqueeze(0), diagonal=1)
        return (pairs * mmd).sum() / pairs.sum().clamp_min(1)

    def config(self):
        return {"n_environments": self.n_environments, "weight": self.weight, "gammas": self.gammas}
