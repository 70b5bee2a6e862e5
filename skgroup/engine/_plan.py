"""Methods as plans of training stages, run the same way on heads and backbones.

A method (ERM, JTT, Group DRO, ...) is written once, as a generator over a
:class:`FitContext`: it yields a :class:`Stage` (objective, sampler, options,
where to start from) and receives the trained :class:`StageResult`, from
which it may compute what the next stage needs (JTT's error set from the
identification model's predictions, GradTune's gradient norms). An
*executor* trains the stages: :class:`~skgroup.engine.HeadExecutor` on
cached features, the fine-tuning executor on a whole backbone. So a method
is implemented once and both paths run it::

    def _plan(self, ctx):
        ident = yield Stage("identification", Objective(), ctx.options.replace(max_iter=T), seed=ctx.seed(0))
        errors = ident.predict() != ctx.y
        yield Stage("final", Objective(), ctx.options, sampler=RepeatSampler(1 + 9 * errors), seed=ctx.seed(1))
"""

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Stage", "StageResult", "FitContext", "run_plan"]


@dataclass
class Stage:
    """One training run of a method.

    Attributes
    ----------
    name : str
        Unique within the plan (checkpoints are named after it).
    objective : skgroup.objectives.Objective
    options : skgroup.engine.TrainOptions
    sampler : sampler or None
        The epochs' order for minibatch solvers; None: every row of
        ``rows`` once, shuffled.
    rows : array of int or None
        Training rows the stage trains on (L-BFGS, or the default sampler).
    init : 'fresh', StageResult or torch.nn.Module
        Start from a new model (the executor's initialisation) or from a
        copy of an earlier stage's / a given module's weights.
    trainable : {'all', 'head'}
        'head' trains the last linear layer only (the rest frozen).
    validate : bool
        Watch the validation data (and early-stop, when the fit asks for
        it) during this stage.
    seed : int
    callbacks : list of Callback
        Stage-specific callbacks (e.g. Group DRO's history).
    penalty : callable or None
        ``penalty(module) -> scalar tensor`` added to the objective (see
        :class:`~skgroup.engine.Trainer`), e.g. AFR's
        :class:`~skgroup.engine.ProximalPenalty` toward the first stage's
        last layer.
    batch_transform : callable or None
        ``batch_transform(xb, yb, idx) -> (xb, targets)`` applied to every
        training minibatch before the forward pass (Mixup, LISA); targets
        may be :class:`~skgroup.objectives.MixedTargets`. Minibatch solvers
        only. Its ``where`` attribute says what it transforms (see
        :class:`~skgroup.engine.Trainer`): 'inputs' (the default), or
        'auto': the inputs when they are a floating-point tensor, else the
        input of the module's head (token ids cannot be mixed; their pooled
        features can).
    capture_features : bool
        Give the objective the module's penultimate features too (a
        :class:`~skgroup.objectives.FeatureOutput`): penalties that align
        representations across groups read them.
    """

    name: str
    objective: object
    options: object
    sampler: object = None
    rows: object = None
    init: object = "fresh"
    trainable: str = "all"
    validate: bool = True
    seed: int = 0
    callbacks: list = field(default_factory=list)
    penalty: object = None
    batch_transform: object = None
    capture_features: bool = False


@dataclass
class StageResult:
    """A trained stage: its module, history and how to evaluate it on the training rows."""

    name: str
    module: object
    history: list
    best: object
    converged: bool
    stopped_early: bool
    executor: object = field(repr=False, default=None)
    objective: object = field(repr=False, default=None)
    #: (encoded predictions on every training row, the parameters they were computed at), from the
    #: optimizer's last evaluation (see :meth:`final_predictions`)
    optimizer_predictions: object = field(repr=False, default=None)

    @property
    def n_iter(self):
        return len(self.history)

    def final_predictions(self, parameters=None):
        """Encoded predictions on every training row that the optimizer computed at the model's weights
        (full-batch L-BFGS of a linear head ends at its last evaluation), or None: a statistic of the fit
        without another pass over X. ``parameters``: the tensors of the model whose predictions are wanted
        (as ``module.parameters()`` orders them); default: the module's current ones. They come from the
        float64 iterate, so a row whose logits tie to within float32 rounding may differ from :meth:`predict`."""
        if self.optimizer_predictions is None:
            return None
        pred, params = self.optimizer_predictions
        current = list(self.module.parameters() if parameters is None else parameters)
        if len(current) != len(params) or not all(
                a.shape == b.shape and torch.equal(a, b.detach().cpu()) for a, b in zip(params, current)):
            return None  # another module (a plan's replacement) or weights restored since
        return pred

    def logits(self, rows=None):
        """Logits on the training rows (all, or ``rows``), float numpy (n, K)."""
        return self.executor.logits(self.module, rows)

    def predict(self, rows=None):
        """Encoded class predictions on the training rows."""
        return self.logits(rows).argmax(axis=1)

    def features(self, rows=None):
        """Inputs of the last linear layer on the training rows."""
        return self.executor.features(self.module, rows)


@dataclass
class FitContext:
    """What a plan may read about the data it is fitted on (the training rows only)."""

    y: np.ndarray
    n_classes: int
    options: object
    seed_base: int
    groups: object = None
    sample_weight: object = None
    executor: object = field(repr=False, default=None)
    #: positions of the training rows in the data given to ``fit`` (a
    #: validation fraction held out of it is not among them)
    rows: object = None

    @property
    def n_samples(self):
        return self.y.shape[0]

    def seed(self, offset=0):
        """A stage's seed: the estimator's ``random_state`` plus a fixed offset."""
        return (self.seed_base + int(offset)) % (2**32)


def run_plan(plan, executor):
    """Train every stage ``plan`` yields; return the last stage's result.

    A plan may ``return`` a :class:`StageResult` of its own, which then
    replaces the last stage's: LfF trains a biased and a debiased model as
    one module and returns the debiased one (``dataclasses.replace(result,
    module=...)``), so that the estimator and the fine-tuning path store a
    model of the usual shape.
    """
    result = None
    try:
        stage = next(plan)
        while True:
            result = executor.train(stage)
            stage = plan.send(result)
    except StopIteration as stop:
        if stop.value is not None:
            if not isinstance(stop.value, StageResult):
                raise TypeError(f"a plan returns a StageResult or nothing; got {type(stop.value).__name__}.")
            result = stop.value
    if result is None:
        raise RuntimeError("the method's plan trained no stage")
    return result
