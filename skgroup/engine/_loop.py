"""The training loop every skgroup method runs on, for heads and whole backbones.

:class:`Trainer` trains a ``torch.nn.Module`` that maps a batch's inputs to
logits, on batches from a source (:mod:`~skgroup.engine._batches`), with an
objective over ``(logits, labels, row indices)`` (:mod:`skgroup.objectives`)
and a sampler that orders each epoch (:mod:`skgroup._samplers`). Two
solvers:

* minibatch ``'adamw'`` / ``'sgd'``: ``max_iter`` epochs of the sampler's
  order, a learning-rate schedule per step (:class:`~skgroup.engine.Schedule`),
  gradient accumulation and clipping, autocast on CUDA (bf16, or fp16 with a
  gradient scaler), data-parallel sharding when ``torch.distributed`` is
  initialised;
* full-batch ``'lbfgs'``: quasi-Newton iterations on every row at once, for
  smooth objectives (ERM, weighted losses, CVaR from a smooth start); each
  iteration counts as an epoch for the callbacks.

Losses are accumulated on the device and read once an epoch (no
synchronisation per step). The global torch RNG is never advanced: the loop
runs under ``torch.random.fork_rng`` seeded from ``seed`` (dropout in a
backbone is then reproducible too), and the sampler's draws come from a
numpy ``Generator``. The whole state (weights, optimizer, objective, both
generators, history, best epoch) is a ``state_dict`` that
:class:`~skgroup.engine.Checkpoint` saves and a resumed run loads.
"""

import contextlib
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from ._lbfgs import (
    _ONE_THREAD_WORK,
    LinearHeadEvaluator,
    _single_linear,
    is_linear_head,
    minimize_lbfgs,
)
from .._samplers import Sampler, UniformSampler
from ..objectives import FeatureOutput
from ..utils._warnings import warn
from ._batches import ArrayBatches, check_device
from ._fingerprint import FINGERPRINT_VERSION, describe, differences, object_fields
from ._optim import Schedule, l2_penalty, make_optimizer, penalised_parameters

__all__ = ["TrainOptions", "Trainer", "resolve_batch_size", "CheckpointMismatchError"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run that differs from this one; ``differences`` lists
    ``(field, in the checkpoint, now)``."""

    def __init__(self, message, differences=()):
        super().__init__(message)
        self.differences = list(differences)


def format_differences(diff, limit=8):
    """'options.learning_rate (0.001 in the checkpoint, 0.1 now), data.y (other contents), ...'."""
    def one(field, old, new):
        plain = all(v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and not v.startswith("sha1:"))
                    for v in (old, new))
        if plain:
            return f"{field} ({old!r} in the checkpoint, {new!r} now)"
        return f"{field} (other contents)"

    shown = ", ".join(one(*d) for d in diff[:limit])
    more = f", and {len(diff) - limit} more" if len(diff) > limit else ""
    return f"{shown}{more}"


@dataclass
class TrainOptions:
    """How to train; the estimators map their parameters onto these.

    ``max_iter`` counts epochs for the minibatch solvers and iterations for
    L-BFGS. ``dtype`` is the parameters' and inputs' precision; ``amp``
    ('bf16' or 'fp16') runs the forward pass under CUDA autocast.
    """

    solver: str = "lbfgs"
    max_iter: int = 100
    batch_size: object = "auto"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    l2_reg: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    tol: float = 1e-5
    grad_clip: float = None
    accumulate: int = 1
    dtype: str = "float32"
    amp: str = None
    device: str = "cpu"
    eval_batch_size: int = 4096

    def replace(self, **changes):
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown training options {sorted(unknown)}")
        values.update(changes)
        return TrainOptions(**values)


def resolve_batch_size(batch_size, n_samples):
    """``batch_size='auto'`` is ``min(1024, max(32, n_samples // 100))``.

    Epoch-based schedules need enough steps an epoch: about 100 where the data
    allows (32 rows or more a batch), and no batch above 1024. A minibatch
    loop on frozen features is overhead-bound at small batches (see
    ``docs/design.rst``), so CelebA's 162,770 training rows get batch 1024.
    """
    if batch_size == "auto":
        return int(min(1024, max(32, n_samples // 100)))
    return int(batch_size)


def torch_dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]




@contextlib.contextmanager
def threads_for_step(work, device):
    if device.type != "cpu" or work >= _ONE_THREAD_WORK or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed_torch(seed, device):
    """Seed the generators a run on ``device`` draws from: the CPU's, and the device's own.

    ``torch.manual_seed`` seeds every device type's generators too, queueing a lazy call
    (with a formatted stack trace, ~1 ms) for each of CUDA, XPU and MTIA even where they
    are absent, and changes the generators of GPUs that ``fork_rng`` does not restore.
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def _dist():
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def module_width(module):
    """Multiply-adds per input row of a forward pass, roughly (for the thread policy)."""
    return sum(p.numel() for p in module.parameters() if p.ndim >= 2)


class Trainer:
    """Train ``module`` on ``source`` with ``objective``; see the module docstring.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a batch's inputs to logits. Trained in place. Under DDP pass the
        wrapped module as ``module`` and the bare one as ``raw_module``.
    source : batch source (``ArrayBatches`` or ``LoaderBatches``)
    objective : skgroup.objectives.Objective
    options : TrainOptions
    sampler : sampler, default=None
        The epochs' order (minibatch solvers); None: every row of ``rows``
        once, shuffled.
    rows : array of int, default=None
        The training rows L-BFGS (or the default sampler) uses; None: all.
    callbacks : list of Callback
    seed : int
    param_groups : list, default=None
        torch parameter groups (e.g. a backbone with its own ``lr``);
        default: every trainable parameter at ``options.learning_rate``.
    name : str
        The stage's name, stored in checkpoints (a checkpoint of another
        stage is refused).
    penalty : callable or None
        ``penalty(raw_module) -> scalar tensor`` added to the objective at
        every step (each minibatch's loss, or L-BFGS's full objective), beside
        the ``l2_reg`` penalty; e.g. :class:`~skgroup.engine.ProximalPenalty`.
        It must be a function of the weights only (no state of its own), so
        checkpoints and resumed runs need nothing more.
    batch_transform : callable or None
        ``batch_transform(xb, yb, idx) -> (xb, targets)`` on every training
        minibatch before the forward pass (Mixup, LISA). Its randomness must
        come from torch's generator, which the loop seeds and checkpoints.
        Its optional ``where`` attribute: 'inputs' (the default) transforms
        the batch's inputs; 'auto' transforms them when they are a
        floating-point tensor (cached features, image pixels) and otherwise
        the input of the module's head (its ``head`` attribute when that is
        a ``Linear``, else its last ``Linear``) during the training forward
        pass: a text backbone's pooled features, since token ids cannot be
        mixed (what SubpopBench and the LISA authors' code do for text).
    capture_features : bool
        Pass the objective a :class:`~skgroup.objectives.FeatureOutput`: the
        logits and the input of the module's last linear layer.
    """

    def __init__(self, module, source, objective, options, *, sampler=None, rows=None, callbacks=(),
                 seed=0, param_groups=None, raw_module=None, name="train", penalty=None, batch_transform=None,
                 capture_features=False):
        self.module = module
        self.raw_module = raw_module if raw_module is not None else module
        self.source = source
        self.objective = objective
        self.options = options
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.sampler = sampler
        self.callbacks = list(callbacks)
        self.seed = int(seed)
        self.param_groups = param_groups
        self.name = name
        if penalty is not None and not callable(penalty):
            raise TypeError(f"penalty must be a callable penalty(module) -> scalar tensor; got {type(penalty).__name__}.")
        self.penalty = penalty
        if batch_transform is not None and not callable(batch_transform):
            raise TypeError(f"batch_transform must be a callable (xb, yb, idx) -> (xb, targets); got "
                            f"{type(batch_transform).__name__}.")
        self.batch_transform = batch_transform
        where = getattr(batch_transform, "where", "inputs")
        if where not in ("inputs", "auto"):
            raise ValueError(f"batch_transform.where must be 'inputs' or 'auto'; got {where!r}.")
        self._transform_where = where
        self._pending_transform = None
        self._transformed_targets = None
        self.capture_features = bool(capture_features)
        self._features = None
        self.device = torch.device(options.device)
        self.rank, self.world_size = _dist()
        self.history = []
        self.best = None
        #: (encoded predictions on every training row, the module's parameters they belong to) after a
        #: full-batch L-BFGS fit of a linear head on all rows: its last evaluation's logits; else None
        self.final_predictions = None
        self.optimizer = None
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.converged = True
        self.stopped_early = False
        self._torch_rng = None
        self._pinned = None  # the starting state, taken by fit
        self._static = None

    # -- what callbacks read -------------------------------------------------
    @property
    def record(self):
        """The current epoch's record (a dict)."""
        return self.history[-1]

    @property
    def state(self):
        return self

    @property
    def epoch(self):
        """Epochs (or L-BFGS iterations) completed."""
        return len(self.history)

    @property
    def max_epochs(self):
        return int(self.options.max_iter)

    def capture_extra(self):
        return {k: v.clone() if isinstance(v, torch.Tensor) else v
                for k, v in self.objective.state_dict().items()}

    def restore_extra(self, extra):
        if extra:
            self.objective.load_state_dict(extra)

    @torch.no_grad()
    def predict_logits(self, source, batch_size=None, rows=None):
        """Logits of ``source``'s rows (all, or ``rows``) in order, as a float numpy array."""
        module = self.raw_module
        was_training = module.training
        module.eval()
        out = []
        try:
            with self._autocast():
                for _, xb, _ in source.ordered(batch_size or self.options.eval_batch_size, rows):
                    out.append(module(xb).float().cpu())
        finally:
            module.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

    # -- state ---------------------------------------------------------------
    def fingerprint(self):
        """What this run is: every field that shapes its training (see :mod:`~skgroup.engine._fingerprint`).

        The stage, seed and every :class:`TrainOptions` field; the
        objective's parameters and per-row state (weights, group
        membership), the sampler (JTT's error set), the training rows, the
        penalty, the parameter groups' settings, the module's architecture
        and starting weights, the training data (``data.*``) and what
        callbacks that steer training (validation data, early stopping)
        declare. A checkpoint stores it; a run whose fingerprint differs
        refuses to resume the checkpoint.
        """
        if self._pinned is None:
            self._pinned = self._starting_fields()
        if self._static is None:
            self._static = self._static_fields()
        return {**self._static, **self._pinned}

    def _starting_fields(self):
        """What training changes (the module's weights, the objective's state), taken at the start of fit."""
        fp = object_fields("objective", self.objective)
        if self.param_groups is not None:  # the optimizer adds to these dicts, and the schedule moves lr
            fp["param_groups"] = describe([
                {k: v for k, v in g.items() if k != "params"} | {"n_params": len(list(g["params"]))}
                if isinstance(g, dict) else {"n_params": 1} for g in self.param_groups
            ])
        fp["module.shapes"] = describe({k: list(v.shape) for k, v in self.raw_module.state_dict().items()})
        fp["module.weights"] = describe(self.raw_module)
        return fp

    def _static_fields(self):
        """What training does not change: taken at the start of fit when a callback keeps checkpoints
        (``needs_fingerprint``), else when the state is first asked for (no hashing of the data otherwise)."""
        fp = {"fingerprint_version": FINGERPRINT_VERSION, "stage": self.name, "seed": self.seed,
              "n_rows": len(self.source)}
        fp.update({f"options.{f.name}": describe(getattr(self.options, f.name)) for f in fields(self.options)})
        # the device's kind, not its index: under torchrun every rank resumes rank 0's checkpoint on its own GPU
        fp["options.device"] = self.device.type
        fp.update(object_fields("sampler", self.sampler))
        fp["rows"] = describe(self.rows)
        fp.update(object_fields("penalty", self.penalty))
        for cb in self.callbacks:
            own = cb.fingerprint() if callable(getattr(cb, "fingerprint", None)) else None
            for k, v in (own or {}).items():
                fp[f"{type(cb).__name__}.{k}"] = describe(v)
        data = getattr(self.source, "fingerprint", None)
        fp.update(dict(data()) if callable(data) else
                  {"data": f"{type(self.source).__name__} of {len(self.source)} rows"})
        return fp

    def state_dict(self):
        state = {
            "fingerprint": self.fingerprint(),
            "step": self.step,
            "module": self.raw_module.state_dict(),
            "objective": self.objective.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "history": self.history,
            "best": self.best,
            "stopped_early": self.stopped_early,
            "converged": self.converged,
        }
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self._torch_rng is not None:
            state["torch_rng"] = torch.get_rng_state()
            if self.device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state):
        theirs, ours = state.get("fingerprint"), self.fingerprint()
        if not isinstance(theirs, dict) or theirs.get("fingerprint_version") != FINGERPRINT_VERSION:
            raise CheckpointMismatchError(
                "the state was written by another run, or by an older skgroup that did not record what "
                "shaped its training (so it cannot be told to be this run's)", [])
        diff = differences(theirs, ours)
        if diff:
            raise CheckpointMismatchError(
                f"the state was written by another run, which differs in {format_differences(diff)}", diff)
        self.step = int(state["step"])
        self.raw_module.load_state_dict(state["module"])
        self.objective.load_state_dict(state["objective"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.history = [dict(r) for r in state["history"]]
        self.best = state["best"]
        self.stopped_early = bool(state["stopped_early"])
        self.converged = bool(state["converged"])
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "torch_rng" in state and self._torch_rng is not None:
            torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- the forward pass the objective sees ------------------------------------
    @contextlib.contextmanager
    def _feature_capture(self):
        """With ``capture_features``: keep the input of the last linear layer of every training forward."""
        if not self.capture_features:
            yield
            return
        linears = [m for m in self.raw_module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ValueError("capture_features needs a module whose last layer is a torch.nn.Linear.")

        def keep(layer, inputs):
            if layer.training:
                self._features = inputs[0]

        handle = linears[-1].register_forward_pre_hook(keep)
        try:
            yield
        finally:
            handle.remove()
            self._features = None

    def _head_layer(self):
        head = getattr(self.raw_module, "head", None)
        if isinstance(head, torch.nn.Linear):
            return head
        linears = [m for m in self.raw_module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ValueError("a batch transform of features needs a module whose head is a torch.nn.Linear.")
        return linears[-1]

    @contextlib.contextmanager
    def _head_transform(self):
        """With a batch transform that may act on features: apply it to the head's input when the loop asks."""
        if self.batch_transform is None or self._transform_where == "inputs":
            yield
            return

        def transform(layer, inputs):
            if not layer.training or self._pending_transform is None:
                return None
            yb, idx = self._pending_transform
            self._pending_transform = None
            h, self._transformed_targets = self.batch_transform(inputs[0], yb, idx)
            return (h, *inputs[1:])

        # registered before the feature capture's hook, which then sees the transformed features
        handle = self._head_layer().register_forward_pre_hook(transform)
        try:
            yield
        finally:
            handle.remove()
            self._pending_transform = self._transformed_targets = None

    def _transform_batch(self, xb, yb, idx):
        """(xb, yb) for the forward pass; a transform of features is left pending for the head's hook."""
        if self._transform_where == "inputs" or (torch.is_tensor(xb) and xb.is_floating_point()):
            return (*self.batch_transform(xb, yb, idx), False)
        self._pending_transform = (yb, idx)
        return xb, yb, True

    def _output(self, out):
        """The module's output as the objective reads it (with the captured features when asked)."""
        if not self.capture_features:
            return out
        if hasattr(out, "logits"):
            raise ValueError("capture_features needs a module that returns logits; this one returns "
                             f"{type(out).__name__}.")
        return FeatureOutput(out, self._features)

    # -- the loops -------------------------------------------------------------
    def fit(self):
        """Train; returns self (``history``, ``best``, ``converged``, ``stopped_early``)."""
        check_device(self.device)
        # before the first step changes the weights or the objective (a dataset's state too, e.g. its epoch)
        self._pinned = self._starting_fields()
        if any(getattr(cb, "needs_fingerprint", False) for cb in self.callbacks):
            self._static = self._static_fields()
        if self.options.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16'; got {self.options.amp!r}.")
        self.objective.to(self.device, torch_dtype(self.options.dtype))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            _seed_torch(self.seed, self.device)
            self._torch_rng = True
            try:
                if self.options.solver == "lbfgs":
                    self._fit_lbfgs()
                else:
                    self._fit_minibatch()
            finally:
                self._torch_rng = None
        return self

    def _autocast(self):
        if self.options.amp is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.options.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _begin(self):
        for cb in self.callbacks:
            cb.on_train_begin(self)

    def _end_epoch(self):
        stop = False
        for cb in self.callbacks:
            stop = bool(cb.on_epoch_end(self)) or stop
        return stop

    def _end(self):
        for cb in self.callbacks:
            cb.on_train_end(self)

    def _diverged(self, where):
        opts = self.options
        hint = "lower learning_rate or scale the features (StandardScaler)"
        if opts.solver != "lbfgs" and opts.l2_reg * opts.learning_rate >= 1:
            hint = (f"learning_rate * l2_reg = {opts.learning_rate * opts.l2_reg:g} >= 1 makes "
                    "the penalty's own step overshoot: lower l2_reg (or learning_rate)")
        elif opts.solver == "lbfgs":
            hint = "scale the features (StandardScaler) or raise l2_reg"
        return FloatingPointError(f"The training loss became NaN/inf {where}; {hint}.")

    def _fit_minibatch(self):
        opts = self.options
        if self.rows is not None and self.sampler is not None:
            raise ValueError("give the training rows through the sampler, not both rows and a sampler.")
        sampler = self.sampler or UniformSampler(len(self.source), rows=self.rows)
        n_rows = len(self.source) if self.rows is None else self.rows.shape[0]
        bs = resolve_batch_size(opts.batch_size, n_rows)
        if self.world_size > 1:  # batch_size is global: each rank takes its share of every batch
            if bs % self.world_size:
                raise ValueError(f"batch_size={bs} must be a multiple of the {self.world_size} processes.")
            bs //= self.world_size
        params = self.param_groups or [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(opts.solver, params, learning_rate=opts.learning_rate,
                                        weight_decay=opts.weight_decay, momentum=opts.momentum)
        Schedule.remember_initial(self.optimizer)
        penalised = penalised_parameters(self.raw_module) if opts.l2_reg else []
        scaler = torch.amp.GradScaler("cuda") if opts.amp == "fp16" and self.device.type == "cuda" else None
        accumulate = max(int(opts.accumulate), 1)
        schedule = None
        with (threads_for_step(bs * module_width(self.raw_module), self.device), self._head_transform(),
              self._feature_capture()):
            self._begin()
            self.module.train()
            stop = self.stopped_early or self.epoch >= self.max_epochs
            while not stop:
                order = Sampler.shard(sampler.epoch(self.rng), self.rank, self.world_size)
                if schedule is None:  # samplers give epochs of a fixed length
                    per_epoch = math.ceil(math.ceil(order.shape[0] / bs) / accumulate)
                    schedule = Schedule(opts.lr_schedule, self.max_epochs * per_epoch, opts.warmup_steps)
                self.history.append({"epoch": self.epoch + 1})
                for cb in self.callbacks:
                    cb.on_epoch_begin(self)
                total = torch.zeros((), dtype=torch.float64, device=self.device)
                n_batches = 0
                n_total = math.ceil(order.shape[0] / bs)
                for idx, xb, yb in self.source.batches(order, bs, epoch=self.epoch - 1):
                    if n_batches % accumulate == 0:
                        schedule.apply(self.optimizer, self.step)
                    try:
                        at_head = False
                        if self.batch_transform is not None:
                            xb, yb, at_head = self._transform_batch(xb, yb, idx)
                        with self._autocast():
                            output = self._output(self.module(xb))
                        if at_head:
                            if self._transformed_targets is None:
                                raise RuntimeError("the batch transform of features did not run: the module's "
                                                   "head was not called in its training forward pass.")
                            yb, self._transformed_targets = self._transformed_targets, None
                        loss = self.objective(output, yb, idx)
                        if penalised:
                            loss = loss + 0.5 * opts.l2_reg * l2_penalty(penalised)
                        if self.penalty is not None:
                            loss = loss + self.penalty(self.raw_module)
                        scaled = loss / accumulate if accumulate > 1 else loss
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    except torch.OutOfMemoryError as exc:
                        raise RuntimeError(
                            f"{self.device.type.upper()} ran out of memory on a batch of {idx.shape[0]} rows: "
                            f"lower batch_size (now {bs}) and raise accumulate (now {accumulate}) to keep the "
                            "same effective batch, or use amp='bf16'."
                        ) from exc
                    n_batches += 1
                    if n_batches % accumulate == 0 or n_batches == n_total:
                        self._optimizer_step(scaler)
                    total += loss.detach()
                    for cb in self.callbacks:
                        cb.on_batch_end(self, loss.detach())
                train_loss = float(total) / max(n_batches, 1)
                if not math.isfinite(train_loss):
                    raise self._diverged(f"in epoch {self.epoch}")
                self.record.update(train_loss=train_loss, step=self.step,
                                   lr=self.optimizer.param_groups[0]["lr"])
                stop = self._end_epoch()
                self.stopped_early = stop and self.epoch < self.max_epochs
                stop = stop or self.epoch >= self.max_epochs
            self._end()

    def _optimizer_step(self, scaler):
        clip = self.options.grad_clip
        if scaler is not None:
            if clip:
                scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.raw_module.parameters(), clip)
            scaler.step(self.optimizer)
            scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(self.raw_module.parameters(), clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _fit_lbfgs(self):
        opts = self.options
        if self.objective.online:
            raise ValueError(
                f"{type(self.objective).__name__} updates its state at every step and needs a "
                "minibatch solver: use solver='adamw' or 'sgd'."
            )
        if self.sampler is not None:
            raise ValueError(
                "solver='lbfgs' sees every row once per iteration and cannot follow a "
                "sampler: express the sampling as sample weights, or use solver='adamw'."
            )
        if self.batch_transform is not None:
            raise ValueError("solver='lbfgs' sees every row once per iteration and cannot transform batches "
                             "(Mixup, LISA): use solver='adamw' or 'sgd'.")
        rows = np.arange(len(self.source)) if self.rows is None else self.rows
        with threads_for_step(rows.shape[0] * module_width(self.raw_module), self.device), self._feature_capture():
            self._begin()
            if self.stopped_early or self.epoch >= self.max_epochs:
                self._end()
                return
            self.module.train()
            evaluator = self._linear_evaluator()
            if evaluator is not None:
                x0 = evaluator.pack_module(self.raw_module)
                fun_grad = evaluator.fun_grad

                def set_x(x):
                    evaluator.unpack_module(x, self.raw_module)
            else:
                x0, fun_grad, set_x = self._autograd_objective(rows)

            def callback(n_iter, x, f):
                if self.callbacks:  # they may read the module: the iterate goes into it (else only at the end)
                    set_x(x)
                self.history.append({"epoch": self.epoch + 1, "train_loss": float(f), "step": n_iter})
                for cb in self.callbacks:
                    cb.on_epoch_begin(self)
                return self._end_epoch()

            try:
                result = minimize_lbfgs(fun_grad, x0, max_iter=self.max_epochs - self.epoch, tol=opts.tol,
                                        callback=callback)
            except FloatingPointError:  # NaN/inf at the start point
                raise self._diverged("under L-BFGS") from None
            set_x(result.x)
            if evaluator is not None and self.rows is None:
                pred = evaluator.predictions_at(result.x)
                if pred is not None:
                    self.final_predictions = (pred, [p.detach().clone() for p in self.raw_module.parameters()])
            self.step = result.n_iter
            self.stopped_early = result.status == "callback"
            self.converged = result.converged
            if result.status == "non_finite":
                raise self._diverged("under L-BFGS")
            if result.status == "max_iter":
                warn(
                    f"L-BFGS reached max_iter={self.max_epochs} before the gradient fell under "
                    f"tol={opts.tol}; raise max_iter (or scale the features) to converge.",
                    ConvergenceWarning,
                )
            self._end()

    def _linear_evaluator(self):
        """The fused evaluator of :mod:`skgroup.engine._lbfgs` for a linear head on CPU arrays, else None.

        It runs the two products with X in numpy's BLAS and optimises in
        standardised coordinates (1.5-3x fewer iterations on off-centre
        embeddings); anything else (hidden layers, a penalty callable, a
        GPU, loader batches, frozen parameters) takes the autograd path.
        """
        source, module = self.source, self.raw_module
        if (self.device.type != "cpu" or self.penalty is not None or self.world_size > 1 or self.capture_features
                or not isinstance(source, ArrayBatches) or not is_linear_head(module)
                or not all(p.requires_grad for p in module.parameters())):
            return None
        X = source.X if self.rows is None else source.X[np.asarray(self.rows)]
        dtype = np.dtype(str(next(module.parameters()).dtype).replace("torch.", ""))
        y = source.y if self.rows is None else source.y[torch.as_tensor(self.rows)]
        return LinearHeadEvaluator(X, y, _single_linear(module).out_features, self.objective,
                                   self.options.l2_reg, dtype=dtype, idx=self.rows)

    def _autograd_objective(self, rows):
        """(x0, fun_grad, set_x) by autograd through the module, in float64 for the line search."""
        opts = self.options
        params = [p for p in self.raw_module.parameters() if p.requires_grad]
        penalised = penalised_parameters(self.raw_module) if opts.l2_reg else []
        idx = torch.as_tensor(rows)
        # every row: the features as they are (a view of X, no gather); a subset is gathered once
        X = self.source.block(0, len(self.source)) if self.rows is None else self.source.rows(idx)
        y = self.source.labels(idx)
        idx = idx.to(self.device)
        module = self.module

        def fun_grad(x):
            _set_flat(params, x)
            for p in params:
                p.grad = None
            # the objective in float64: L-BFGS's line search needs values more exact
            # than a float32 sum of n losses gives
            out = module(X)
            loss = self.objective(self._output(out.double() if isinstance(out, torch.Tensor) else out), y, idx)
            if penalised:
                loss = loss + 0.5 * opts.l2_reg * l2_penalty(penalised).double()
            if self.penalty is not None:
                loss = loss + self.penalty(self.raw_module).double()
            loss.backward()
            return float(loss.detach()), _flat_grad(params)

        return _get_flat(params), fun_grad, lambda x: _set_flat(params, x)


def _get_flat(params):
    return torch.cat([p.detach().reshape(-1).double() for p in params]).numpy()


def _set_flat(params, x):
    x = torch.from_numpy(np.asarray(x))
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(x[offset : offset + n].view_as(p).to(p.dtype))
            offset += n


def _flat_grad(params):
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double() for p in params
    ]).numpy()
