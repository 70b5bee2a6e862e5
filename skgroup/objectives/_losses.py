"""Per-row losses: ``loss(logits, y) -> (m,)`` tensor, one value per row.

A loss knows nothing of groups, weights or batches; a reduction
(:mod:`skgroup.objectives._reductions`) turns its values into the scalar a
method minimises. A loss with data-dependent constants (LDAM's margins from
the class counts, logit adjustment's priors) gets them from :meth:`Loss.bind`,
which returns a bound copy, so the object an estimator holds as a parameter
is never changed by a fit.
"""

import torch
import torch.nn.functional as F

__all__ = ["Loss", "CrossEntropy", "GeneralizedCrossEntropy", "as_float", "LOSSES", "make_loss", "register_loss"]


def as_float(t):
    """At least float32 (losses are computed in float32 also under bf16/fp16 autocast)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class Loss:
    """Base class of per-row losses.

    ``softmax_only``: the loss reads a row's logits only through softmax
    (adding a constant to every logit of a row changes nothing); full-batch
    L-BFGS then multiplies X with K - 1 weight differences only. Margin and
    prior offsets per class keep this property; a loss of raw logits does
    not. A subclass declares it (the safe default is False).
    """

    softmax_only = False

    def __call__(self, logits, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, y, n_classes):
        """A copy with the constants that depend on the training labels ``y`` (encoded, numpy)."""
        return self

    def to(self, device, dtype):
        """Move tensors the loss holds; returns self."""
        return self

    def config(self):
        """The settings that shape training (for checkpoints' fingerprints and reprs)."""
        return {k: v for k, v in vars(self).items() if not isinstance(v, torch.Tensor)}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class CrossEntropy(Loss):
    """Cross-entropy ``-log softmax(z)_y``: the loss of every method in the papers implemented here."""

    softmax_only = True

    def __call__(self, logits, y):
        return F.cross_entropy(as_float(logits), y, reduction="none")


#: Losses by name, for the estimators' ``loss`` parameter.
LOSSES = {"cross_entropy": CrossEntropy}


def register_loss(name):
    """Class decorator: make a loss available by ``name`` to the estimators' ``loss`` parameter."""

    def decorate(cls):
        if name in LOSSES and LOSSES[name] is not cls:
            raise ValueError(f"a loss named {name!r} exists already ({LOSSES[name].__name__}).")
        LOSSES[name] = cls
        return cls

    return decorate


def make_loss(loss, y, n_classes):
    """The bound loss of an estimator's ``loss`` parameter: None or a name (its defaults) or a Loss."""
    if loss is None:
        loss = CrossEntropy()
    elif isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not a known loss; choose from {sorted(LOSSES)} or pass a Loss object.")
        loss = LOSSES[loss]()
    elif not isinstance(loss, Loss):
        raise TypeError(f"loss must be None, a name in {sorted(LOSSES)} or a skgroup.objectives.Loss; "
                        f"got {type(loss).__name__}.")
    return loss.bind(y, n_classes)


@register_loss("generalized_cross_entropy")
class GeneralizedCrossEntropy(Loss):
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018, eq. 6): ``(1 - p_y^q) / q``.

    Z. Zhang and M. R. Sabuncu, "Generalized Cross Entropy Loss for Training
    Deep Neural Networks with Noisy Labels". The negative Box-Cox
    transformation of the probability of the true class: ``q -> 0`` is
    cross-entropy ``-log p_y``, ``q = 1`` the mean absolute error ``1 - p_y``.
    Its gradient is ``p_y^q`` times cross-entropy's, so rows the model
    already fits confidently weigh more: Learning from Failure (Nam et al.,
    NeurIPS 2020) trains its intentionally biased model with it (``q=0.7``,
    the default here, Zhang & Sabuncu's and LfF's).

    The authors of LfF (and SubpopBench's ``LfF.GCE2``) write the loss as
    ``q * p_y^q.detach() * CE``, whose gradient is ``q`` times this loss's:
    the same direction, a step ``q`` times as long.

    Parameters
    ----------
    q : float in (0, 1], default=0.7
    """

    softmax_only = True

    def __init__(self, q=0.7):
        q = float(q)
        if not 0 < q <= 1:
            raise ValueError(f"GeneralizedCrossEntropy: q must be in (0, 1]; got {q}.")
        self.q = q

    def __call__(self, logits, y):
        log_p = -F.cross_entropy(as_float(logits), y, reduction="none")
        # 1 - p^q = -expm1(q log p): exact for p near 1, where 1 - exp(.) would round to 0
        return -torch.expm1(self.q * log_p) / self.q
