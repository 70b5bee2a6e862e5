"""Optimizers, learning-rate schedules and the penalties, in one place.

Two kinds of regularisation coexist on purpose:

* ``l2_reg``: the penalty ``l2_reg / 2 * sum ||W||^2`` over the weight
  tensors (parameters with two or more dimensions; biases and norm scales
  are not penalised) added to the loss. It is the coupled ``weight_decay``
  of the papers' SGD code and what the heads use: for a linear softmax head
  with mean cross-entropy it is multinomial logistic regression with
  ``C = 1 / (l2_reg * n)`` (``2 / (l2_reg * n)`` for two classes).
* ``weight_decay``: the optimizer's own (decoupled for AdamW), per parameter
  group, as fine-tuning recipes state it.

A stage may add any other penalty of the weights as a callable
``penalty(module) -> scalar tensor`` (:class:`~skgroup.engine.Stage`'s and
:class:`~skgroup.engine.Trainer`'s ``penalty``); :class:`ProximalPenalty`,
the pull toward given weights that AFR uses, is one.
"""

import math

import torch

__all__ = ["make_optimizer", "Schedule", "l2_penalty", "penalised_parameters", "ProximalPenalty"]


def penalised_parameters(module):
    """The weight tensors the L2 penalty covers: trainable parameters with ndim >= 2."""
    return [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]


def l2_penalty(params):
    """Sum of squared entries of ``params`` (a scalar tensor)."""
    return sum((p**2).sum() for p in params)


class ProximalPenalty:
    """``strength * sum ||p - p_0||^2`` over the trainable parameters that ``reference`` names.

    A penalty for :class:`~skgroup.engine.Stage` (``penalty=``): it pulls the
    trained parameters toward fixed ones, e.g. AFR's last layer toward the
    first stage's (Qiu et al., 2023: ``lambda * ||W - W_1||^2``, bias
    included as in their code). ``reference`` is a module or a state dict;
    its tensors are copied (later changes to it do not move the anchor).
    Parameters absent from ``reference`` or frozen (``requires_grad=False``)
    are not penalised, so with a stage's ``trainable='head'`` only the last
    layer is. No ``1/2``: the factor is the papers'.
    """

    def __init__(self, reference, strength):
        if strength < 0:
            raise ValueError(f"strength must be >= 0; got {strength}.")
        state = reference.state_dict() if isinstance(reference, torch.nn.Module) else reference
        self.reference = {k: torch.as_tensor(v).detach().clone() for k, v in state.items()}
        self.strength = float(strength)

    def __call__(self, module):
        total = None
        for name, p in module.named_parameters():
            if not p.requires_grad or name not in self.reference:
                continue
            ref = self.reference[name]
            if ref.shape != p.shape:
                raise ValueError(
                    f"ProximalPenalty: parameter {name!r} has shape {tuple(p.shape)} but the "
                    f"reference has {tuple(ref.shape)}; anchor to a module of the same architecture."
                )
            if ref.device != p.device or ref.dtype != p.dtype:
                ref = self.reference[name] = ref.to(device=p.device, dtype=p.dtype)
            term = ((p - ref) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return self.strength * total


def make_optimizer(name, param_groups, *, learning_rate, weight_decay=0.0, momentum=0.9):
    """AdamW or SGD (with momentum) over ``param_groups``.

    ``param_groups`` is a list of parameters or of dicts in torch's format;
    a group's own ``lr`` / ``weight_decay`` (e.g. a backbone at a tenth of
    the head's rate) override the defaults given here.
    """
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"solver must be 'lbfgs', 'adamw' or 'sgd'; got {name!r}.")


class Schedule:
    """Learning-rate factor per step: linear warm-up, then constant, cosine or linear decay.

    ``factor(step)`` multiplies each parameter group's initial rate. Warm-up
    rises linearly from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps``
    steps (a value in (0, 1) is a fraction of ``total_steps``, as fine-tuning
    recipes state it); the decay then runs over the remaining steps to zero (cosine) or
    linearly to zero. The schedule is a pure function of the step, so its
    state is the step counter the engine saves.
    """

    KINDS = ("constant", "cosine", "linear")

    def __init__(self, kind="constant", total_steps=1, warmup_steps=0):
        if kind not in self.KINDS:
            raise ValueError(f"lr_schedule must be one of {self.KINDS}; got {kind!r}.")
        self.kind = kind
        self.total_steps = max(int(total_steps), 1)
        if 0 < warmup_steps < 1:
            warmup_steps = round(warmup_steps * self.total_steps)
        self.warmup_steps = max(int(warmup_steps), 0)

    def factor(self, step):
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    def apply(self, optimizer, step):
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    @staticmethod
    def remember_initial(optimizer):
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
