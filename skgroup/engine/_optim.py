"""Optimizers, learning-rate schedules and the L2 penalty, in one place.

Two kinds of regularisation coexist on purpose:

* ``l2_reg``: the penalty ``l2_reg / 2 * sum ||W||^2`` over the weight
  tensors (parameters with two or more dimensions; biases and norm scales
  are not penalised) added to the loss. It is the coupled ``weight_decay``
  of the papers' SGD code and what the heads use: for a linear softmax head
  with mean cross-entropy it is multinomial logistic regression with
  ``C = 1 / (l2_reg * n)`` (``2 / (l2_reg * n)`` for two classes).
* ``weight_decay``: the optimizer's own (decoupled for AdamW), per parameter
  group, as fine-tuning recipes state it.
"""

import math

import torch

__all__ = ["make_optimizer", "Schedule", "l2_penalty", "penalised_parameters"]


def penalised_parameters(module):
    """The weight tensors the L2 penalty covers: trainable parameters with ndim >= 2."""
    return [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]


def l2_penalty(params):
    """Sum of squared entries of ``params`` (a scalar tensor)."""
    return sum((p**2).sum() for p in params)


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
