"""An objective: a per-row loss, a reduction of it, and penalties of the batch.

.. math:: L(\\text{batch}) = R\\big(\\ell(z_i, y_i)_{i \\in \\text{batch}}\\big) + \\sum_k P_k(\\text{batch})

The engine calls ``objective(output, y, idx)`` on every minibatch (and on
all rows under full-batch L-BFGS). ``output`` is what the module returns:
logits, or in training mode a structured output with a ``logits`` field
and whatever a penalty reads (a multitask module's auxiliary prediction and
representations, the penultimate features); modules return plain logits in
eval mode, the mode the engine validates and predicts in.

The pieces compose: focal loss under Group DRO is
``Objective(FocalLoss(2.0), GroupDRO(membership))``, an auxiliary task on
top of it adds a penalty. Properties the engine may exploit follow from the
pieces: ``online`` (some piece changes state every step: minibatch solvers
only), ``separable`` (the reduction is a mean and there is no penalty: row
blocks under L-BFGS), ``softmax_only`` (see :class:`~skgroup.objectives.Loss`).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._losses import CrossEntropy, Loss, as_float
from ._reductions import Mean, Reduction

__all__ = ["Objective", "Penalty", "BatchTerms", "MixedTargets", "FeatureOutput", "MultitaskOutput", "AuxiliaryLoss",
           "RepresentationL1", "MultitaskLoss"]


class MixedTargets(NamedTuple):
    """The labels of mixed inputs (Mixup, LISA): row i is ``lam_i`` parts ``y_a[i]``, ``1 - lam_i`` parts ``y_b[i]``.

    A stage's batch transform returns it in place of the labels; an
    objective then scores each row as ``lam * loss(z, y_a) + (1 - lam) *
    loss(z, y_b)``, with any loss (Zhang et al., 2018, eq. 1 for
    cross-entropy).
    """

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: torch.Tensor


class FeatureOutput(NamedTuple):
    """A module's output with its penultimate features (the input of its last linear layer), which the engine
    captures for a stage with ``capture_features=True`` (penalties that align representations read them)."""

    logits: torch.Tensor
    features: torch.Tensor


class BatchTerms(NamedTuple):
    """What a penalty may read about a batch."""

    output: object
    logits: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    losses: torch.Tensor
    loss: Loss


class Penalty:
    """Base class of batch penalties: ``weight * penalty(terms: BatchTerms)``.

    ``__call__`` returns the unweighted term (a scalar tensor), which the
    objective multiplies by ``weight`` and records in ``last_terms``; a
    penalty of weight 0 is not evaluated. ``online``, ``state_dict`` and
    ``load_state_dict`` as for reductions; ``softmax_only``: the penalty
    reads the logits only through softmax.
    """

    online = False
    softmax_only = False
    weight = 1.0

    def __call__(self, terms):  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device, dtype):
        return self

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load; got keys {sorted(state)}.")

    def config(self):
        return {k: v for k, v in vars(self).items() if not isinstance(v, torch.Tensor)}


class Objective:
    """``reduction(loss(logits, y), idx) + sum_k weight_k * penalty_k(batch)``.

    Parameters
    ----------
    loss : Loss, default=CrossEntropy()
    reduction : Reduction, default=Mean()
    penalties : sequence of Penalty, default=()

    Attributes
    ----------
    last_terms : tensor or None
        With penalties: the last batch's reduced loss and each penalty's
        unweighted value, detached (for history callbacks).
    """

    def __init__(self, loss=None, reduction=None, penalties=()):
        self.loss = CrossEntropy() if loss is None else loss
        self.reduction = Mean() if reduction is None else reduction
        self.penalties = list(penalties)
        if not isinstance(self.loss, Loss):
            raise TypeError(f"loss must be a skgroup.objectives.Loss; got {type(self.loss).__name__}.")
        if not isinstance(self.reduction, Reduction):
            raise TypeError(f"reduction must be a skgroup.objectives.Reduction; got {type(self.reduction).__name__}.")
        self.last_terms = None

    @property
    def online(self):
        return self.reduction.online or any(p.online for p in self.penalties)

    @property
    def separable(self):
        return self.reduction.separable and not self.penalties

    @property
    def softmax_only(self):
        return self.loss.softmax_only and all(p.softmax_only for p in self.penalties)

    @property
    def per_row_cross_entropy(self):
        """Plain cross-entropy then a reduction: full-batch L-BFGS computes the losses in numpy."""
        return type(self.loss) is CrossEntropy and not self.penalties

    def __call__(self, output, y, idx):
        logits = getattr(output, "logits", output)
        if isinstance(y, MixedTargets):
            losses = y.lam * self.loss(logits, y.y_a) + (1 - y.lam) * self.loss(logits, y.y_b)
        else:
            losses = self.loss(logits, y)
        value = self.reduction(losses, idx)
        if not self.penalties:
            return value
        terms = BatchTerms(output, logits, y, idx, losses, self.loss)
        zero = value.new_zeros(())
        values = [as_float(p(terms)) if p.weight else zero for p in self.penalties]
        self.last_terms = torch.stack([value.detach(), *(v.detach().to(value.dtype) for v in values)])
        for p, v in zip(self.penalties, values):
            if p.weight:
                value = value + p.weight * v
        return value

    def reduce(self, losses, idx):
        """The reduction alone (full-batch L-BFGS differentiates it given numpy cross-entropies)."""
        return self.reduction(losses, idx)

    def to(self, device, dtype):
        self.loss.to(device, dtype)
        self.reduction.to(device, dtype)
        for p in self.penalties:
            p.to(device, dtype)
        return self

    def state_dict(self):
        """The reduction's state, and each stateful penalty's under ``penalty<i>.``."""
        state = dict(self.reduction.state_dict())
        for i, p in enumerate(self.penalties):
            state.update({f"penalty{i}.{k}": v for k, v in p.state_dict().items()})
        return state

    def load_state_dict(self, state):
        state = dict(state)
        for i, p in enumerate(self.penalties):
            prefix = f"penalty{i}."
            p.load_state_dict({k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)})
        self.reduction.load_state_dict(state)

    def __repr__(self):
        extra = f", penalties={self.penalties!r}" if self.penalties else ""
        return f"Objective({self.loss!r}, {self.reduction!r}{extra})"


class MultitaskOutput(NamedTuple):
    """What a multitask module returns in training mode (eval mode: ``logits`` alone).

    Its fields: ``logits`` (m, K), the end-task logits of the clean inputs;
    ``reconstruction`` and ``target`` (m, d) or None, the auxiliary head's
    prediction and what it should predict (the clean inputs, for denoising
    reconstruction), None without an auxiliary task; ``h_end`` and ``h_aux``
    (m, width) or None, the shared trunk's outputs, the inputs of the
    end-task and auxiliary heads, whose L1 norm is penalised; ``aux_loss``, a
    scalar or None: the auxiliary loss computed by the module itself when it
    is not a squared reconstruction error (masked language modelling's
    cross-entropy on the selected tokens, masked image modelling's L1 on the
    masked pixels, :mod:`skgroup.finetune`, whose masks only the module
    holds); when given, it is ``L_aux`` and ``reconstruction`` / ``target``
    are ignored.
    """

    logits: torch.Tensor
    reconstruction: torch.Tensor = None
    target: torch.Tensor = None
    h_end: torch.Tensor = None
    h_aux: torch.Tensor = None
    aux_loss: torch.Tensor = None


def _multitask_output(output):
    if not isinstance(output, MultitaskOutput):
        raise TypeError(
            f"MultitaskLoss needs the module to return a MultitaskOutput in training mode; got "
            f"{type(output).__name__}. Build the module with skgroup.estimators.MultitaskHead."
        )
    return output


class AuxiliaryLoss(Penalty):
    """``L_aux``: the module's own auxiliary loss, else the mean squared reconstruction error."""

    def __init__(self, weight=1.0):
        self.weight = float(weight)

    def __call__(self, terms):
        out = _multitask_output(terms.output)
        if out.aux_loss is not None:
            return as_float(out.aux_loss)
        if out.reconstruction is None:
            raise ValueError("alpha_aux > 0 but the module has no auxiliary head: build it with one.")
        return F.mse_loss(as_float(out.reconstruction), as_float(out.target))


class RepresentationL1(Penalty):
    """``mean|h_end| + mean|h_aux|``: the L1 norm of each shared representation per entry."""

    def __init__(self, weight=0.0):
        self.weight = float(weight)

    def __call__(self, terms):
        out = _multitask_output(terms.output)
        l1 = terms.losses.new_zeros(())
        for h in (out.h_end, out.h_aux):
            if h is not None:
                l1 = l1 + as_float(h).abs().mean()
        return l1


def MultitaskLoss(alpha_aux=1.0, alpha_reg=0.0, end=None):
    """Regularized multitask learning (Kulkarni et al., TMLR 2024, eq. 9) as an objective.

    .. math:: L = L_{end} + \\alpha_{aux} L_{aux}
              + \\alpha_{reg}\\,(\\overline{|h_{end}|} + \\overline{|h_{aux}|})

    ``L_end`` is the ``end`` objective (mean cross-entropy by default; any
    objective, e.g. Group DRO's) of ``output.logits``; ``L_aux`` the mean
    squared error of ``output.reconstruction`` against ``output.target``
    (averaged over rows and coordinates, like the mean over tokens of a
    masked-LM loss), or ``output.aux_loss`` when the module computed its
    auxiliary loss itself (the fine-tuning path's masked language / image
    modelling); the penalty is the L1 norm of each representation divided by
    its number of entries (rows x width), as the authors' code normalises
    it, so ``alpha_reg`` does not depend on the batch size or the width.
    Without an auxiliary output only ``h_end`` is penalised: the paper's
    end-task-plus-L1 ablation. The returned :class:`Objective`'s
    ``last_terms`` holds the last batch's three terms, unweighted (a term of
    weight 0 is 0: the module need not have an auxiliary head).
    """
    if alpha_aux < 0 or alpha_reg < 0:
        raise ValueError(f"alpha_aux and alpha_reg must be >= 0; got {alpha_aux} and {alpha_reg}.")
    end = Objective() if end is None else end
    return Objective(end.loss, end.reduction, [*end.penalties, AuxiliaryLoss(alpha_aux), RepresentationL1(alpha_reg)])
