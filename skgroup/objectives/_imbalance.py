"""Losses for class imbalance: focal, LDAM, logit-adjusted (Balanced Softmax), and
class-balanced (effective-number) weights.

The losses are per-row :class:`~skgroup.objectives.Loss` objects, so each
composes with any reduction (focal loss under Group DRO, LDAM under
class-balanced weights); the class-balanced weights of Cui et al. are a
reduction's weights (:func:`effective_number_weights`, then
:class:`~skgroup.objectives.Weighted`), so they compose with any loss.
Losses with constants from the class counts (LDAM's margins, the log priors
of logit adjustment) compute them in :meth:`~skgroup.objectives.Loss.bind`
from the training labels and hold them in float64; a call casts them to the
logits' dtype.

Every loss here reads a row's logits only through softmax after a per-class
offset, so each is ``softmax_only``: full-batch L-BFGS multiplies X with K - 1
weight differences and differentiates the loss by autograd on the logits.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ._losses import Loss, as_float, register_loss

__all__ = ["FocalLoss", "LDAMLoss", "LogitAdjustedLoss", "effective_number_weights", "class_counts"]


def class_counts(y, n_classes):
    """Training rows per class (encoded labels ``y`` in ``[0, n_classes)``), float64."""
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"y must be 1-D encoded labels in [0, {n_classes}).")
    return np.bincount(y.astype(np.int64), minlength=n_classes).astype(np.float64)


def _given_counts(counts, n_classes, owner):
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (n_classes,) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{owner}: class_counts must be {n_classes} finite non-negative numbers, one per class; "
                         f"got {counts.tolist()!r}.")
    return counts


class _CountedLoss(Loss):
    """A loss with constants from the class counts, computed at bind time (kept out of its config)."""

    softmax_only = True

    def config(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def effective_number_weights(counts, beta):
    """Class-balanced weights of Cui et al. (CVPR 2019, eq. 4 and Sec. 4): ``(1 - beta) / (1 - beta^n_c)``.

    Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss
    Based on Effective Number of Samples". ``(1 - beta^n) / (1 - beta)`` is
    the expected volume ("effective number") covered by n samples; a class
    is weighted by its inverse. ``beta = 0`` weighs every class 1 (no
    re-weighting); ``beta -> 1`` approaches inverse class frequency
    ``1 / n_c``; a class of ``n_c << 1 / (1 - beta)`` rows is weighted about
    ``1 / n_c``, one of ``n_c >> 1 / (1 - beta)`` rows about ``1 - beta``.

    Parameters
    ----------
    counts : array-like of shape (n_classes,)
        Training rows per class (or per group).
    beta : float in [0, 1)

    Returns
    -------
    ndarray of shape (n_classes,)
        Normalised, as the paper and its code do, to sum to the number of
        classes with rows; a class without rows gets 0 (SubpopBench's
        treatment of an empty group).
    """
    beta = float(beta)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1); got {beta}.")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("counts must be a 1-D array of finite, non-negative class sizes.")
    present = counts > 0
    if not present.any():
        raise ValueError("counts: no class has a training row.")
    weights = np.zeros_like(counts)
    if beta == 0:
        weights[present] = 1.0
    else:
        # 1 - beta^n = -expm1(n log beta): accurate for beta near 1, where beta^n rounds near 1
        weights[present] = (1.0 - beta) / -np.expm1(counts[present] * np.log(beta))
    return weights * (present.sum() / weights.sum())


@register_loss("focal")
class FocalLoss(Loss):
    """Focal loss (Lin et al., ICCV 2017, eq. 4, softmax form): ``-(1 - p_y)^gamma log p_y``.

    T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal Loss for
    Dense Object Detection". ``p_y`` is the softmax probability of the true
    class; the factor ``(1 - p_y)^gamma`` down-weights rows the model
    already fits, so the rarer, harder rows carry more of the gradient.
    ``gamma = 0`` is cross-entropy. The paper's alpha balancing is a class
    weight, i.e. a reduction here (:func:`effective_number_weights` with
    :class:`~skgroup.objectives.Weighted`).

    Parameters
    ----------
    gamma : float >= 0, default=1.0
        SubpopBench's default (and the LDAM-DRW authors' for their focal
        baseline); Lin et al. use 2 for detection.
    """

    softmax_only = True

    def __init__(self, gamma=1.0):
        gamma = float(gamma)
        if not gamma >= 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0; got {gamma}.")
        self.gamma = gamma

    def __call__(self, logits, y):
        ce = F.cross_entropy(as_float(logits), y, reduction="none")
        if self.gamma == 0:
            return ce
        # 1 - p = -expm1(-ce) without cancellation; at 1 - p = 0 (exactly fitted rows) the clamp stops
        # the gradient of the factor, whose true limit (1 - p)^(gamma - 1) * ce -> 0 autograd would make 0 * inf
        one_minus_p = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
        return one_minus_p**self.gamma * ce


@register_loss("ldam")
class LDAMLoss(_CountedLoss):
    """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019, eq. 13).

    K. Cao, C. Wei, A. Gaidon, N. Arechiga, T. Ma, "Learning Imbalanced
    Datasets with Label-Distribution-Aware Margin Loss".

    .. math:: \\ell(z, y) = -\\log \\frac{e^{s (z_y - \\Delta_y)}}{e^{s (z_y - \\Delta_y)}
              + \\sum_{j \\neq y} e^{s z_j}}, \\qquad \\Delta_c = \\frac{C}{n_c^{1/4}}

    with C such that the largest margin (the rarest class's) is
    ``max_margin``: the true class must win by a margin that grows as its
    class shrinks. ``scale`` is s.

    Parameters
    ----------
    max_margin : float > 0, default=0.5
        The rarest class's margin (the paper's and SubpopBench's ``max_m``).
    scale : float > 0, default=30.0
        The logits' scale s (the authors' ``s=30``, SubpopBench's default).
    class_counts : array-like of shape (n_classes,) or None, default=None
        The n_c; None counts the training labels when a fit binds the loss.
        A class with no rows gets margin 0 (it is never a target).
    """

    softmax_only = True

    def __init__(self, max_margin=0.5, scale=30.0, class_counts=None):
        if not float(max_margin) > 0 or not float(scale) > 0:
            raise ValueError(f"LDAMLoss: max_margin and scale must be > 0; got {max_margin} and {scale}.")
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.class_counts = None if class_counts is None else tuple(float(c) for c in np.ravel(class_counts))
        self._margins = None
        if self.class_counts is not None:
            counts = _given_counts(self.class_counts, len(self.class_counts), "LDAMLoss")
            self._margins = torch.as_tensor(self.margins(counts), dtype=torch.float64)

    def margins(self, counts):
        """``max_margin * (n_c / n_min)^(-1/4)`` per class (0 for an empty class), float64."""
        counts = np.asarray(counts, dtype=np.float64)
        present = counts > 0
        if not present.any():
            raise ValueError("LDAMLoss: no class has a training row.")
        m = np.zeros_like(counts)
        m[present] = counts[present] ** -0.25
        return m * (self.max_margin / m.max())

    def bind(self, y, n_classes):
        counts = (class_counts(y, n_classes) if self.class_counts is None
                  else _given_counts(self.class_counts, n_classes, "LDAMLoss"))
        bound = copy.copy(self)
        bound._margins = torch.as_tensor(self.margins(counts), dtype=torch.float64)
        return bound

    def to(self, device, dtype):
        if self._margins is not None:
            self._margins = self._margins.to(device)
        return self

    def __call__(self, logits, y):
        if self._margins is None:
            raise RuntimeError("LDAMLoss needs the class counts: pass class_counts=, or call bind(y, n_classes).")
        logits = as_float(logits)
        margin = self._margins.to(device=logits.device, dtype=logits.dtype)[y]
        shifted = logits - F.one_hot(y, logits.shape[1]).to(logits.dtype) * margin[:, None]
        return F.cross_entropy(self.scale * shifted, y, reduction="none")


@register_loss("logit_adjusted")
class LogitAdjustedLoss(_CountedLoss):
    """Logit-adjusted cross-entropy (Menon et al., ICLR 2021, eq. 10); ``tau=1`` is Balanced Softmax.

    A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar,
    "Long-tail learning via logit adjustment"; J. Ren, C. Yu, S. Sheng,
    X. Ma, H. Zhao, S. Yi, H. Li, "Balanced Meta-Softmax for Long-Tailed
    Visual Recognition", NeurIPS 2020 (eq. 4).

    .. math:: \\ell(z, y) = -\\log \\frac{e^{z_y + \\tau \\log \\pi_y}}{\\sum_j e^{z_j + \\tau \\log \\pi_j}}

    with :math:`\\pi_c = n_c / n` the training class priors. Training on the
    prior-shifted logits and predicting with the plain ones (``argmax_c
    z_c``) makes the head estimate the class-balanced posterior; ``tau = 1``
    is Fisher consistent for the balanced error and equals Ren et al.'s
    Balanced Softmax (``z_c + log n_c`` differs from ``z_c + log pi_c`` by a
    constant per row). Menon et al.'s *post-hoc* adjustment (train with
    cross-entropy, predict ``argmax_c z_c - tau log pi_c``) is a different
    method and not this loss.

    Parameters
    ----------
    tau : float >= 0, default=1.0
    class_counts : array-like of shape (n_classes,) or None, default=None
        The n_c (any scale: only the priors n_c / sum n matter); None counts
        the training labels when a fit binds the loss.
    """

    softmax_only = True

    def __init__(self, tau=1.0, class_counts=None):
        if not float(tau) >= 0:
            raise ValueError(f"LogitAdjustedLoss: tau must be >= 0; got {tau}.")
        self.tau = float(tau)
        self.class_counts = None if class_counts is None else tuple(float(c) for c in np.ravel(class_counts))
        self._offsets = None
        if self.class_counts is not None:
            counts = _given_counts(self.class_counts, len(self.class_counts), "LogitAdjustedLoss")
            self._offsets = torch.as_tensor(self.offsets(counts), dtype=torch.float64)

    def offsets(self, counts):
        """``tau * log(n_c / n)`` per class, float64."""
        counts = np.asarray(counts, dtype=np.float64)
        if np.any(counts <= 0):
            empty = np.flatnonzero(counts <= 0).tolist()
            raise ValueError(
                f"LogitAdjustedLoss: classes {empty} (encoded) have no training rows, so their log prior is "
                "-inf; pass class_counts= with positive counts for every class."
            )
        return self.tau * np.log(counts / counts.sum())

    def bind(self, y, n_classes):
        counts = (class_counts(y, n_classes) if self.class_counts is None
                  else _given_counts(self.class_counts, n_classes, "LogitAdjustedLoss"))
        bound = copy.copy(self)
        bound._offsets = torch.as_tensor(self.offsets(counts), dtype=torch.float64)
        return bound

    def to(self, device, dtype):
        if self._offsets is not None:
            self._offsets = self._offsets.to(device)
        return self

    def __call__(self, logits, y):
        if self._offsets is None:
            raise RuntimeError("LogitAdjustedLoss needs the class counts: pass class_counts=, or call "
                               "bind(y, n_classes).")
        logits = as_float(logits)
        return F.cross_entropy(logits + self._offsets.to(device=logits.device, dtype=logits.dtype), y,
                               reduction="none")
