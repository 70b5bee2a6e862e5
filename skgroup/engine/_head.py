"""Running plans on cached features: a softmax head (linear or MLP) per stage."""

import copy
import math

import numpy as np
import torch

from ._batches import ArrayBatches
from ._callbacks import (
    Checkpoint,
    EarlyStopping,
    ProgressBar,
    ValidationScoring,
    copy_callbacks,
)
from ._loop import Trainer, torch_dtype
from ._plan import Stage, StageResult

__all__ = ["make_head", "HeadExecutor", "linear_layers", "ValidationData", "train_head"]


def make_head(n_features, n_classes, hidden_layer_sizes, dtype, generator):
    """Linear head, or an MLP with ReLU hidden layers.

    Weights are drawn from ``generator`` (never the global torch RNG); a
    linear head starts at zero, which makes full-batch L-BFGS fits exactly
    reproducible and is harmless for a convex objective.
    """
    sizes = [int(n_features), *(int(h) for h in hidden_layer_sizes), int(n_classes)]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out, dtype=dtype)
        if len(sizes) == 2:
            torch.nn.init.zeros_(lin.weight)
        else:
            bound = 1.0 / math.sqrt(fan_in)
            torch.nn.init.uniform_(lin.weight, -bound, bound, generator=generator)
        torch.nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def linear_layers(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


class ValidationData:
    """Validation rows for a fit: features, encoded labels and what the monitors need."""

    def __init__(self, X, y, *, membership=None, y_pred_biased=None):
        self.X = X
        self.y = np.asarray(y, dtype=np.int64)
        self.membership = membership
        self.y_pred_biased = y_pred_biased


class HeadExecutor:
    """Train each stage of a plan as a head on the feature array X.

    Parameters
    ----------
    X : array (n_samples, n_features), float32/float64, never copied whole.
    y : encoded labels.
    n_classes : int
    hidden_layer_sizes : tuple of int
    dtype : 'float32' or 'float64'
    validation : ValidationData or None
    early_stopping : dict or None
        ``monitor``, ``patience``, ``restore_best`` for stages with
        ``validate=True``; None only records the validation scores.
    callbacks : list of Callback
        The user's callbacks, copied for every stage.
    verbose : int
    """

    def __init__(self, X, y, n_classes, *, hidden_layer_sizes=(), dtype="float32", device="cpu",
                 validation=None, early_stopping=None, callbacks=(), verbose=0):
        self.X = X
        self.y = np.asarray(y, dtype=np.int64)
        self.n_classes = int(n_classes)
        self.hidden_layer_sizes = tuple(hidden_layer_sizes)
        self.dtype = dtype
        self.device = device
        self.validation = validation
        self.early_stopping = early_stopping
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.source = ArrayBatches(X, self.y, dtype=torch_dtype(dtype), device=device)
        self._val_source = None
        if validation is not None:
            self._val_source = ArrayBatches(validation.X, validation.y, dtype=torch_dtype(dtype), device=device)

    @property
    def n_samples(self):
        return self.X.shape[0]

    def fingerprint(self, with_validation=False):
        """Hash of the training rows (and of the validation rows): the data part of a shared-fit key."""
        from .._cache import fingerprint

        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = fingerprint(self.X, self.y)
        if not with_validation or self.validation is None:
            return self._fingerprint
        v = self.validation
        return self._fingerprint + fingerprint(v.X, v.y, v.membership, v.y_pred_biased)

    def new_module(self, seed):
        generator = torch.Generator().manual_seed(int(seed))
        return make_head(self.X.shape[1], self.n_classes, self.hidden_layer_sizes, torch_dtype(self.dtype), generator)

    def from_module(self, module, name="given"):
        """A StageResult for a module trained elsewhere (e.g. a prefit head)."""
        return StageResult(name, module, [], None, True, False, executor=self)

    @staticmethod
    def snapshot(result):
        """What a stage's result holds apart from its executor (to cache and restore it)."""
        return dict(name=result.name, module=result.module, history=result.history, best=result.best,
                    converged=result.converged, stopped_early=result.stopped_early)

    def restore(self, snapshot):
        """A StageResult on this executor's rows from :meth:`snapshot`."""
        return StageResult(executor=self, **snapshot)

    def as_estimator(self, result, estimator, classes):
        """``estimator`` (a head classifier) made fitted with a stage's weights."""
        estimator.classes_ = classes
        estimator.n_features_in_ = self.X.shape[1]
        estimator._store_result(result, validated=False)
        return estimator

    def _init(self, stage):
        if isinstance(stage.init, str):
            if stage.init != "fresh":
                raise ValueError(f"Stage.init must be 'fresh', a StageResult or a module; got {stage.init!r}.")
            return self.new_module(stage.seed)
        source = stage.init.module if isinstance(stage.init, StageResult) else stage.init
        return copy.deepcopy(source).to(torch_dtype(self.dtype))

    def _stage_callbacks(self, stage):
        cbs = []
        if self._val_source is not None and stage.validate:
            v = self.validation
            cbs.append(ValidationScoring(self._val_source, membership=v.membership,
                                         y_pred_biased=v.y_pred_biased,
                                         batch_size=stage.options.eval_batch_size))
            if self.early_stopping is not None:
                cbs.append(EarlyStopping(**self.early_stopping))
        cbs += list(stage.callbacks)
        for cb in copy_callbacks(self.callbacks):
            if isinstance(cb, Checkpoint):
                cb = Checkpoint(cb.path / f"{stage.name}.pt", every=cb.every, resume=cb.resume)
            cbs.append(cb)
        if self.verbose:
            monitor = self.early_stopping["monitor"] if self.early_stopping else None
            cbs.append(ProgressBar(desc=stage.name, monitor=monitor))
        return cbs

    def train(self, stage):
        module = self._init(stage).to(self.device)
        if stage.trainable == "head":
            last = linear_layers(module)[-1]
            for p in module.parameters():
                p.requires_grad_(False)
            for p in last.parameters():
                p.requires_grad_(True)
        elif stage.trainable != "all":
            raise ValueError(f"Stage.trainable must be 'all' or 'head'; got {stage.trainable!r}.")
        trainer = Trainer(module, self.source, stage.objective, stage.options, sampler=stage.sampler,
                          rows=stage.rows, callbacks=self._stage_callbacks(stage), seed=stage.seed,
                          name=stage.name)
        trainer.fit()
        for p in module.parameters():
            p.requires_grad_(True)
        return StageResult(stage.name, module.cpu(), trainer.history, trainer.best, trainer.converged,
                           trainer.stopped_early, executor=self, objective=stage.objective)

    @torch.no_grad()
    def logits(self, module, rows=None):
        module = module.to(self.device)
        out = [module(xb).float().cpu() for _, xb, _ in self.source.ordered(4096, rows)]
        module.cpu()
        return torch.cat(out).numpy()

    @torch.no_grad()
    def features(self, module, rows=None):
        """Inputs of the last Linear layer (X itself for a linear head)."""
        layers = list(module.children()) if isinstance(module, torch.nn.Sequential) else [module]
        body = torch.nn.Sequential(*layers[:-1]).to(self.device)
        out = [body(xb).float().cpu() for _, xb, _ in self.source.ordered(4096, rows)]
        return torch.cat(out).numpy().astype(np.float64)


def train_head(X, y, n_classes, objective, options, *, hidden_layer_sizes=(), sampler=None, rows=None,
               init="fresh", seed=0, callbacks=()):
    """Train one head on the features X (a one-stage plan); returns the StageResult."""
    executor = HeadExecutor(X, y, n_classes, hidden_layer_sizes=hidden_layer_sizes, dtype=options.dtype,
                            device=options.device)
    stage = Stage("train", objective, options, sampler=sampler, rows=rows, init=init, seed=seed,
                  callbacks=list(callbacks))
    return executor.train(stage)
