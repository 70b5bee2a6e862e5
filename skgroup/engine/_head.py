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
from ._lbfgs import _ONE_THREAD_WORK, _blas_threads, is_linear_head, product_with_rows
from ._loop import Trainer, module_width, threads_for_step, torch_dtype
from ._plan import Stage, StageResult

__all__ = ["make_head", "HeadExecutor", "linear_layers", "ValidationData", "train_head", "stage_callbacks"]


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


def stage_callbacks(stage, val_source, validation, early_stopping, user_callbacks, verbose):
    """The callbacks of one stage: validation and early stopping (when the stage validates and
    there is validation data; a full-batch L-BFGS stage is scored but keeps its last iterate unless
    ``early_stopping['select_lbfgs']``), the stage's own, copies of the user's (a Checkpoint
    directory gets one file per stage), and a progress bar when verbose."""
    cbs = []
    if val_source is not None and stage.validate:
        cbs.append(ValidationScoring(val_source, membership=validation.membership,
                                     y_pred_biased=validation.y_pred_biased,
                                     batch_size=stage.options.eval_batch_size))
        if early_stopping is not None:
            settings = dict(early_stopping)
            select_lbfgs = settings.pop("select_lbfgs", True)
            if stage.options.solver != "lbfgs" or select_lbfgs:
                cbs.append(EarlyStopping(**settings))
    cbs += list(stage.callbacks)
    for cb in copy_callbacks(user_callbacks):
        if isinstance(cb, Checkpoint):
            cb = Checkpoint(cb.path / f"{stage.name}.pt", every=cb.every, resume=cb.resume)
        cbs.append(cb)
    if verbose:
        cbs.append(ProgressBar(desc=stage.name, monitor=early_stopping["monitor"] if early_stopping else None))
    return cbs


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
                 validation=None, early_stopping=None, callbacks=(), verbose=0, classes=None):
        self.X = X
        self.classes = np.arange(n_classes) if classes is None else np.asarray(classes)
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

    def _init(self, stage):
        if isinstance(stage.init, str):
            if stage.init != "fresh":
                raise ValueError(f"Stage.init must be 'fresh', a StageResult or a module; got {stage.init!r}.")
            return self.new_module(stage.seed)
        source = stage.init.module if isinstance(stage.init, StageResult) else stage.init
        return copy.deepcopy(source).to(torch_dtype(self.dtype))

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
                          rows=stage.rows, seed=stage.seed,
                          callbacks=stage_callbacks(stage, self._val_source, self.validation, self.early_stopping,
                                                    self.callbacks, self.verbose),
                          name=stage.name, penalty=stage.penalty, batch_transform=stage.batch_transform,
                          capture_features=stage.capture_features)
        trainer.fit()
        for p in module.parameters():
            p.requires_grad_(True)
        return StageResult(stage.name, module.cpu(), trainer.history, trainer.best, trainer.converged,
                           trainer.stopped_early, executor=self, objective=stage.objective,
                           optimizer_predictions=trainer.final_predictions)

    @torch.no_grad()
    def _forward(self, module, rows):
        """``module`` in eval mode (as in validation: a multitask module returns its logits alone only
        there) over the rows: all, in contiguous blocks without a gather; or ``rows``."""
        if torch.device(self.device).type == "cpu":
            fast = self._linear_forward(module, rows)
            if fast is not None:
                return fast
        module = module.to(self.device)
        was_training = module.training
        module.eval()
        chunk = 65536
        out = []
        try:
            with threads_for_step(chunk * max(module_width(module), 1), torch.device(self.device)):
                if rows is None:
                    for start in range(0, self.X.shape[0], chunk):
                        out.append(module(self.source.block(start, start + chunk)).float().cpu())
                else:
                    for _, xb, _ in self.source.ordered(chunk, rows):
                        out.append(module(xb).float().cpu())
        finally:
            module.train(was_training)
            module.cpu()
        return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

    def _linear_forward(self, module, rows):
        """A linear head's logits on the CPU by numpy's BLAS (None for other modules).

        torch's product of a block of rows with a (K, d) weight for few classes is a gemm
        far below the memory bandwidth of a matrix-vector product (100,000 x 2,048: 87 ms
        against 19 ms a class); JTT's error set and CVaR's training CVaR read every row.
        """
        if not is_linear_head(module):
            return None
        lin = linear_layers(module)[0]
        dtype = np.dtype(str(lin.weight.dtype).replace("torch.", ""))
        if dtype != np.dtype(str(torch_dtype(self.dtype)).replace("torch.", "")):
            return None
        W = lin.weight.detach().cpu().numpy()
        b = lin.bias.detach().cpu().numpy() if lin.bias is not None else np.zeros(W.shape[0], dtype)
        chunk = 65536
        n = self.X.shape[0] if rows is None else len(rows)
        out = np.empty((n, W.shape[0]), dtype=np.float32)
        with _blas_threads(1 if chunk * W.size < _ONE_THREAD_WORK else None):
            for start in range(0, n, chunk):
                part = slice(start, min(start + chunk, n))
                Xb = self.X[part] if rows is None else self.X[np.asarray(rows)[part]]
                Xb = np.ascontiguousarray(Xb, dtype=dtype)
                out[part] = product_with_rows(Xb, W) + b
        return out

    def logits(self, module, rows=None):
        return self._forward(module, rows)

    def features(self, module, rows=None):
        """Inputs of the end-task layer, float64: X for a linear head, the hidden layers' output for an
        MLP head, the shared representation for a module with a ``representation`` method (multitask)."""
        if hasattr(module, "representation"):
            body = _Call(module.representation)
        else:
            layers = list(module.children()) if isinstance(module, torch.nn.Sequential) else [module]
            if len(layers) == 1:
                X = self.X if rows is None else self.X[np.asarray(rows)]
                return np.asarray(X, dtype=np.float64)
            body = torch.nn.Sequential(*layers[:-1])
        return self._forward(body, rows).astype(np.float64)


class _Call(torch.nn.Module):
    """A bound method as a module (so that it can be evaluated like one)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.owner = fn.__self__

    def forward(self, x):
        return self.fn(x)


def train_head(X, y, n_classes, objective, options, *, hidden_layer_sizes=(), sampler=None, rows=None,
               init="fresh", seed=0, callbacks=(), penalty=None):
    """Train one head on the features X (a one-stage plan); returns the StageResult."""
    executor = HeadExecutor(X, y, n_classes, hidden_layer_sizes=hidden_layer_sizes, dtype=options.dtype,
                            device=options.device)
    stage = Stage("train", objective, options, sampler=sampler, rows=rows, init=init, seed=seed,
                  callbacks=list(callbacks), penalty=penalty)
    return executor.train(stage)
