"""The training engine every skgroup method runs on, for heads and whole backbones.

* :class:`Trainer`: the loop (minibatch AdamW/SGD, or full-batch L-BFGS);
* batch sources: :class:`ArrayBatches` (cached features), :class:`LoaderBatches`
  (any dataset through a ``DataLoader``);
* :class:`TrainOptions`, :class:`Schedule`, :func:`make_optimizer`: how to step;
  a stage's ``penalty`` callable (e.g. :class:`ProximalPenalty`) adds a term
  of the weights to the objective;
* callbacks: :class:`ValidationScoring`, :class:`EarlyStopping`,
  :class:`Checkpoint`, :class:`ProgressBar`, :class:`GroupDROHistory`,
  :class:`EpochCallback`;
* plans: a method is a generator of :class:`Stage` objects that an executor
  (:class:`HeadExecutor` here, the fine-tuning executor for backbones) trains.

See ``docs/design.rst``.
"""

from ._batches import ArrayBatches, LoaderBatches, as_tensor, to_device
from ._callbacks import (
    MONITORS,
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochCallback,
    GroupDROHistory,
    JSONLLogger,
    PrintEpochs,
    ProgressBar,
    ValidationScoring,
    validation_metrics,
)
from ._head import HeadExecutor, ValidationData, linear_layers, make_head, stage_callbacks, train_head
from ._loop import CheckpointMismatchError, Trainer, TrainOptions, resolve_batch_size, torch_dtype
from ._optim import ProximalPenalty, Schedule, l2_penalty, make_optimizer, penalised_parameters
from ._plan import FitContext, Stage, StageResult, run_plan
from ._state import load_checkpoint, save_checkpoint

__all__ = [
    "MONITORS",
    "ArrayBatches",
    "Callback",
    "Checkpoint",
    "CheckpointMismatchError",
    "EarlyStopping",
    "EpochCallback",
    "FitContext",
    "GroupDROHistory",
    "HeadExecutor",
    "JSONLLogger",
    "LoaderBatches",
    "PrintEpochs",
    "ProgressBar",
    "ProximalPenalty",
    "Schedule",
    "Stage",
    "StageResult",
    "TrainOptions",
    "Trainer",
    "ValidationData",
    "ValidationScoring",
    "as_tensor",
    "l2_penalty",
    "linear_layers",
    "load_checkpoint",
    "make_head",
    "make_optimizer",
    "penalised_parameters",
    "resolve_batch_size",
    "run_plan",
    "save_checkpoint",
    "stage_callbacks",
    "to_device",
    "train_head",
    "torch_dtype",
    "validation_metrics",
]
