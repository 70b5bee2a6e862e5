"""Running a method's plan on a whole backbone: the fine-tuning executor.

The same plans the head estimators run (:mod:`skgroup.engine`), trained on a
:class:`~skgroup.finetune._model.BackboneClassifier` over raw inputs through
a ``DataLoader``: ERM, JTT's two runs, Group DRO, CVaR, class balancing and
GradTune all fine-tune end to end with the objectives, samplers and loop
of the head path. A stage that trains the last layer only (GradTune's
second stage) runs on the backbone's features, computed once, with the head
executor.

With an auxiliary task (:mod:`skgroup.finetune._auxiliary`, Kulkarni et
al., TMLR 2024) every stage that trains the whole backbone trains a
:class:`~skgroup.finetune._mtl_model.MultitaskBackboneClassifier` on
task-heterogeneous batches, with the stage's objective as the end-task
term of :class:`~skgroup.objectives.MultitaskLoss`: one loop, whatever
the method. Head-only stages train the head alone, as without it (the
body is frozen there, so there is no shared representation to shape).
"""

import copy

import numpy as np
import torch

from ..objectives import MultitaskLoss
from .._samplers import RepeatSampler, WeightedSampler
from ..engine import (
    HeadExecutor,
    LoaderBatches,
    ProximalPenalty,
    Stage,
    StageResult,
    Trainer,
    ValidationData,
    stage_callbacks,
)
from ..estimators._mtl import MultitaskHistory
from ._auxiliary import AuxBatch, AuxiliaryCollate, AuxiliaryDataset
from ._inputs import BackboneDataset
from ._model import BackboneClassifier, resolve_head, trainable_backbone
from ._mtl_model import MultitaskBackboneClassifier, _is_efficientnet, image_parts, make_auxiliary_head

__all__ = ["FineTuneExecutor", "SubsetInputs"]


class SubsetInputs:
    """Rows ``rows`` of an :class:`~skgroup.finetune._inputs.Inputs`."""

    def __init__(self, inputs, rows):
        self.inputs = inputs
        self.rows = np.asarray(rows, dtype=np.int64)
        self.modality = inputs.modality

    def __len__(self):
        return self.rows.shape[0]

    def fingerprint(self):
        from ..engine._fingerprint import describe

        return {"inputs": describe(self.inputs), "rows": describe(self.rows)}

    def get(self, i):
        return self.inputs.get(int(self.rows[i]))

    def describe(self, i):
        return self.inputs.describe(int(self.rows[i]))


class FineTuneExecutor:
    """Train each stage of a plan as a backbone + linear head.

    Parameters
    ----------
    backbone : feature_extraction.Backbone (pretrained; copied per fresh stage)
    inputs : Inputs of the training rows; y : their encoded labels.
    n_classes : int
    validation : ValidationData with ``X`` an Inputs of the validation rows, or None
    early_stopping : dict or None (see HeadExecutor)
    head_learning_rate : float or None (None: the options' learning rate)
    head_init, head_dropout : the new head's initialisation and dropout ('auto': see
        :func:`~skgroup.finetune._model.resolve_head`)
    augment : RandomResizedCropFlip or None
    num_workers, pin_memory, channels_last : DataLoader and memory-format settings
    eval_batch_size : int
    callbacks, verbose, classes : as HeadExecutor
    seed : seeds the augmentation draws (and the auxiliary rows and masks)
    auxiliary : MaskedLM, MaskedImageModeling or None
        A validated auxiliary task (regularized multitask fine-tuning).
    """

    def __init__(self, backbone, inputs, y, n_classes, *, validation=None, early_stopping=None,
                 head_learning_rate=None, head_init="auto", head_dropout="auto", augment=None, num_workers=0,
                 pin_memory=False, channels_last=False, eval_batch_size=64, callbacks=(), verbose=0, classes=None,
                 device="cpu", seed=0, auxiliary=None):
        self.backbone = backbone
        self.inputs = inputs
        self.y = np.asarray(y, dtype=np.int64)
        self.n_classes = int(n_classes)
        self.classes = np.arange(n_classes) if classes is None else np.asarray(classes)
        self.validation = validation
        self.early_stopping = early_stopping
        self.head_learning_rate = head_learning_rate
        init, std, dropout = resolve_head(backbone, head_init, head_dropout)
        self.head_options = {"init": init, "init_std": std, "dropout": dropout}
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.channels_last = bool(channels_last)
        self.eval_batch_size = int(eval_batch_size)
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.device = torch.device(device)
        self.train_view = BackboneDataset(inputs, backbone, augment=augment, seed=seed)
        self.eval_view = BackboneDataset(inputs, backbone)
        self._n_features = None
        self.auxiliary = auxiliary
        self.train_collate = backbone.collate
        if auxiliary is not None and auxiliary.alpha_aux > 0:
            # each row's auxiliary partner is drawn from the same training inputs (same augmentation)
            aux_view = BackboneDataset(inputs, backbone, augment=augment, seed=seed)
            self.train_view = AuxiliaryDataset(self.train_view, aux_view)
            self.train_collate = AuxiliaryCollate(backbone, auxiliary)

    # -- sources ---------------------------------------------------------------
    def _transfer(self, batch, device, non_blocking):
        move = self.backbone.batch_to
        if isinstance(batch, AuxBatch):
            target = batch.target
            target = ({k: v.to(device, non_blocking=non_blocking) for k, v in target.items()}
                      if isinstance(target, dict) else target.to(device, non_blocking=non_blocking))
            return AuxBatch(move(batch.end, device, non_blocking=non_blocking, channels_last=self.channels_last),
                            move(batch.aux, device, non_blocking=non_blocking, channels_last=self.channels_last),
                            target)
        return move(batch, device, non_blocking=non_blocking, channels_last=self.channels_last)

    def source(self, dataset, y, collate=None):
        return LoaderBatches(dataset, y, collate_fn=collate or self.backbone.collate, num_workers=self.num_workers,
                             pin_memory=self.pin_memory, device=self.device, transfer=self._transfer)

    @property
    def n_samples(self):
        return len(self.inputs)

    @property
    def n_features(self):
        if self._n_features is None:
            with torch.no_grad():
                self.backbone.to(self.device)
                _, xb, _ = next(self.source(self.eval_view, self.y).ordered(2, np.arange(min(2, self.n_samples))))
                self._n_features = int(self.backbone(xb).shape[1])
                self.backbone.to("cpu")
        return self._n_features

    # -- modules -----------------------------------------------------------------
    def new_module(self, seed):
        if self.auxiliary is None:
            return BackboneClassifier(trainable_backbone(self.backbone), self.n_features, self.n_classes,
                                      seed=seed, **self.head_options)
        backbone = trainable_backbone(self.backbone)
        aux_head = None
        if self.auxiliary.alpha_aux > 0:
            geometry = self._image_geometry() if self.auxiliary.modality == "image" else None
            aux_head = make_auxiliary_head(self.auxiliary, backbone, geometry=geometry, seed=seed)
        return MultitaskBackboneClassifier(backbone, self.n_features, self.n_classes, aux_head, seed=seed,
                                           **self.head_options)

    def _image_geometry(self):
        """(channels, feature-map height, input height, input width) on one training input."""
        body = self.backbone.module
        with torch.no_grad():
            _, xb, _ = next(self.source(self.eval_view, self.y).ordered(1, np.arange(1)))
            if not hasattr(body, "base_model") and not _is_efficientnet(body):
                return (0, 1) + tuple(xb.shape[2:])  # make_auxiliary_head names the problem
            # in eval mode: a training-mode pass would move batch-norm statistics before training starts
            # (and fails on one row whose feature map is 1 x 1)
            training = body.training
            body.eval()
            try:
                _, fmap = image_parts(body, xb)
            finally:
                body.train(training)
        return int(fmap.shape[1]), int(fmap.shape[2]), int(xb.shape[2]), int(xb.shape[3])

    def from_module(self, module, name="given"):
        return StageResult(name, module, [], None, True, False, executor=self)

    def _init(self, stage):
        if isinstance(stage.init, str):
            if stage.init != "fresh":
                raise ValueError(f"Stage.init must be 'fresh', a StageResult or a module; got {stage.init!r}.")
            return self.new_module(stage.seed)
        source = stage.init.module if isinstance(stage.init, StageResult) else stage.init
        module = copy.deepcopy(source)
        if self.auxiliary is not None and not isinstance(module, MultitaskBackboneClassifier):
            raise ValueError("an auxiliary task trains a multitask module; this stage starts from a plain "
                             f"{type(module).__name__}. Fit without auxiliary=, or start the stage fresh.")
        return module

    # -- training ----------------------------------------------------------------
    def train(self, stage):
        module = self._init(stage)
        if stage.trainable == "head":
            return self._train_head(stage, module)
        if stage.trainable != "all":
            raise ValueError(f"Stage.trainable must be 'all' or 'head'; got {stage.trainable!r}.")
        module.to(self.device)
        if self.channels_last:
            module.body.to(memory_format=torch.channels_last)
        head_lr = self.head_learning_rate or stage.options.learning_rate
        body = [p for p in module.body.parameters() if p.requires_grad]
        # new layers (the end head, and an auxiliary head's own parameters) at the head's rate
        new = list(module.head.parameters()) + list(getattr(module, "auxiliary_parameters", list)())
        groups = ([{"params": body}] if body else []) + [{"params": new, "lr": head_lr}]
        objective, callbacks_extra, train_collate = stage.objective, [], self.backbone.collate
        if self.auxiliary is not None:
            objective = MultitaskLoss(self.auxiliary.alpha_aux, self.auxiliary.alpha_reg, end=stage.objective)
            callbacks_extra, train_collate = [MultitaskHistory()], self.train_collate
        wrapped = module
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # text encoders carry a pooler the chosen pooling may not use
                find_unused_parameters=self.backbone.modality == "text",
            )
        val_source = None
        if self.validation is not None:
            val_source = self.source(BackboneDataset(self.validation.X, self.backbone), self.validation.y)
        # the multitask terms first, so the epoch's record holds them before early stopping and logs read it
        callbacks = callbacks_extra + stage_callbacks(stage, val_source, self.validation, self.early_stopping,
                                                      self.callbacks, self.verbose)
        trainer = Trainer(wrapped, self.source(self.train_view, self.y, train_collate), objective, stage.options,
                          sampler=stage.sampler, rows=stage.rows, callbacks=callbacks, seed=stage.seed,
                          param_groups=groups, raw_module=module, name=stage.name, penalty=stage.penalty,
                          batch_transform=stage.batch_transform, capture_features=stage.capture_features)
        trainer.fit()
        module.cpu()
        return StageResult(stage.name, module, trainer.history, trainer.best, trainer.converged,
                           trainer.stopped_early, executor=self, objective=stage.objective)

    def _train_head(self, stage, module):
        """The last layer on the backbone's features of the rows the stage can draw."""
        rows = _support(stage, self.n_samples)
        feats = np.zeros((self.n_samples, self.n_features), dtype=np.float32)
        feats[rows] = self.features(module, rows)
        validation = None
        if self.validation is not None:
            validation = ValidationData(self._features_of(module, self.validation.X), self.validation.y,
                                        membership=self.validation.membership,
                                        y_pred_biased=self.validation.y_pred_biased)
        head_exec = HeadExecutor(feats, self.y, self.n_classes, device=self.device, validation=validation,
                                 early_stopping=self.early_stopping, callbacks=self.callbacks, verbose=self.verbose,
                                 classes=self.classes)
        head_stage = Stage(stage.name, stage.objective, stage.options, sampler=stage.sampler, rows=stage.rows,
                           init=torch.nn.Sequential(copy.deepcopy(module.head)).float(), validate=stage.validate,
                           seed=stage.seed, callbacks=stage.callbacks, penalty=_head_penalty(stage.penalty))
        result = head_exec.train(head_stage)
        module.head.load_state_dict(result.module[0].state_dict())
        return StageResult(stage.name, module, result.history, result.best, result.converged,
                           result.stopped_early, executor=self, objective=stage.objective)

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def _eval(self, module, inputs, rows, what):
        module = module.to(self.device)
        was_training = module.training
        module.eval()
        dataset = BackboneDataset(inputs, self.backbone)
        out = []
        try:
            for _, xb, _ in self.source(dataset, np.zeros(len(inputs), dtype=np.int64)).ordered(
                    self.eval_batch_size, rows):
                z = module.features(xb) if what == "features" else module(xb)
                out.append(z.float().cpu())
        finally:
            module.train(was_training)
            module.cpu()
        return torch.cat(out).numpy()

    def logits(self, module, rows=None):
        return self._eval(module, self.inputs, rows, "logits")

    def features(self, module, rows=None):
        """Penultimate features (the head's input) of training rows, float32 numpy."""
        return self._eval(module, self.inputs, rows, "features")

    def _features_of(self, module, inputs):
        return self._eval(module, inputs, None, "features")


def _support(stage, n):
    """Training rows a stage can visit: its rows, its sampler's support, or all."""
    if stage.rows is not None:
        return np.unique(np.asarray(stage.rows))
    sampler = stage.sampler
    if isinstance(sampler, WeightedSampler):
        return np.flatnonzero(sampler.p > 0)
    if isinstance(sampler, RepeatSampler):
        return np.unique(sampler.indices)
    if getattr(sampler, "rows", None) is not None:
        return np.unique(sampler.rows)
    return np.arange(n)


def _head_penalty(penalty):
    """A whole-model proximal penalty restated for the head trained alone.

    The head stage trains ``Sequential(head)`` whose parameters are named
    ``0.*``; an anchor on the backbone classifier names them ``head.*``, and
    :class:`ProximalPenalty` skips names it does not hold, so without this
    the pull would silently vanish.
    """
    if not isinstance(penalty, ProximalPenalty):
        return penalty
    ref = {"0." + k[len("head."):]: v for k, v in penalty.reference.items() if k.startswith("head.")}
    if not ref:
        return penalty
    return ProximalPenalty(ref, penalty.strength)
