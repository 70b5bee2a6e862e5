"""Callbacks: what happens around training without being training.

Hooks follow the order of a fit: ``on_train_begin``, then per epoch
``on_epoch_begin``, ``on_batch_end`` after every optimizer step, and
``on_epoch_end``, which returns True to stop; ``on_train_end`` last. Under
L-BFGS an "epoch" is one iteration. Callbacks run in list order, so a
:class:`ValidationScoring` placed before :class:`EarlyStopping` fills the
record that the early stopping reads.

Per-epoch records live in ``trainer.history`` (a list of dicts, one per
epoch: ``epoch``, ``step``, ``train_loss``, ``lr`` and whatever callbacks
add, e.g. ``val_worst_group_accuracy``), which the trainer saves with its
state, so a resumed run has its whole history.
"""

import copy
import math
import numbers
import sys
from pathlib import Path

import numpy as np

from ..metrics._metrics import accuracy_by_cell, accuracy_by_group, class_diff_of
from ._loop import CheckpointMismatchError
from ._state import load_checkpoint, save_checkpoint

__all__ = [
    "Callback",
    "ValidationScoring",
    "EarlyStopping",
    "Checkpoint",
    "ProgressBar",
    "GroupDROHistory",
    "EpochCallback",
    "JSONLLogger",
    "PrintEpochs",
    "validation_metrics",
    "MONITORS",
]

#: Validation metrics, and whether larger is better.
MONITORS = {
    "worst_group_accuracy": True,
    "worst_class_accuracy": True,
    "bias_unsupervised": True,
    "accuracy": True,
    "loss": False,
    "class_diff": False,
}


class Callback:
    """Base class; every hook is optional.

    ``needs_fingerprint``: the callback reads or writes the run's state
    (:class:`Checkpoint`), so the trainer takes its fingerprint when the
    fit starts.
    """

    needs_fingerprint = False

    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer):
        pass

    def on_batch_end(self, trainer, loss):
        pass

    def on_epoch_end(self, trainer):
        return False

    def on_train_end(self, trainer):
        pass

    def fingerprint(self):
        """What this callback changes about training, as a dict (None: nothing), recorded in checkpoints."""
        return None


def validation_metrics(logits, y, membership=None, y_pred_biased=None):
    """Every validation metric computable from logits (n, K) and encoded labels y.

    ``membership``: boolean (n, n_groups) matrix, for the worst-group
    accuracy (empty groups are left out); ``y_pred_biased``: encoded
    predictions of a biased ERM model, for LaBonte et al.'s bias-unsupervised
    score (empty (class, biased prediction) cells are left out). The
    accuracies are :mod:`skgroup.metrics`'s kernels, without their per-call
    input checks and warnings (this runs every epoch on encoded labels).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    k = logits.shape[1]
    correct = logits.argmax(axis=1) == y
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    out = {
        "accuracy": float(correct.mean()),
        "loss": float(np.mean(log_norm - z[np.arange(y.shape[0]), y])),
    }
    by_class, counts = accuracy_by_cell(correct, y, k)
    out["worst_class_accuracy"] = float(np.min(by_class[counts > 0]))
    out["class_diff"] = class_diff_of(by_class[counts > 0])
    if membership is not None:
        by_group, counts = accuracy_by_group(correct, membership)
        out["worst_group_accuracy"] = float(np.min(by_group[counts > 0]))
    if y_pred_biased is not None:
        by_cell, counts = accuracy_by_cell(correct, y * k + np.asarray(y_pred_biased), k * k)
        out["bias_unsupervised"] = float(np.mean(by_cell[counts > 0]))
    return out


class ValidationScoring(Callback):
    """Score the model on validation data at the end of every epoch.

    Writes ``val_<metric>`` for every metric the data allows (see
    :func:`validation_metrics`) into the epoch's record.

    Parameters
    ----------
    source : batch source of the validation inputs (``ArrayBatches`` /
        ``LoaderBatches``) whose labels are the encoded validation labels.
    membership : bool array (n_val, n_groups), optional
    y_pred_biased : int array (n_val,), optional
    batch_size : int, default=4096
    """

    def __init__(self, source, *, membership=None, y_pred_biased=None, batch_size=4096):
        self.source = source
        self.membership = None if membership is None else np.asarray(membership, dtype=np.float64)
        self.y_pred_biased = None if y_pred_biased is None else np.asarray(y_pred_biased)
        self.batch_size = int(batch_size)
        self.y = source.y.cpu().numpy()

    def fingerprint(self):
        # the validation rows choose the best epoch and when to stop
        data = getattr(self.source, "fingerprint", None)
        return {"data": data() if callable(data) else None, "membership": self.membership,
                "y_pred_biased": self.y_pred_biased}

    def on_epoch_end(self, trainer):
        logits = trainer.predict_logits(self.source, batch_size=self.batch_size)
        scores = validation_metrics(logits, self.y, self.membership, self.y_pred_biased)
        trainer.record.update({f"val_{k}": v for k, v in scores.items()})
        return False


class EarlyStopping(Callback):
    """Stop when ``val_<monitor>`` has not improved for ``patience`` epochs; keep the best.

    The best epoch's weights (and its record) are kept in the trainer's
    state, so a resumed run remembers them. With ``restore_best`` the
    module ends with the best epoch's weights: the papers' checkpoint
    selection (Sagawa et al. 2020; Liu et al. 2021). An accuracy on a
    validation set of a few hundred rows ties often (a worst group no model
    gets right scores 0 at every epoch), so a tie goes to the epoch with the
    lower validation loss, and an exact tie to the earlier epoch.
    ``patience=None`` never stops early but still selects the best.
    """

    def __init__(self, monitor="worst_group_accuracy", *, patience=10, restore_best=True, min_delta=0.0):
        if monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {sorted(MONITORS)}; got {monitor!r}.")
        self.monitor = monitor
        self.patience = patience
        self.restore_best = restore_best
        self.min_delta = float(min_delta)

    @property
    def key(self):
        return f"val_{self.monitor}"

    def fingerprint(self):
        return {"monitor": self.monitor, "patience": self.patience, "restore_best": self.restore_best,
                "min_delta": self.min_delta}

    def on_epoch_end(self, trainer):
        record = trainer.record
        if self.key not in record:
            raise RuntimeError(
                f"EarlyStopping monitors {self.key!r} but the epoch's record has only "
                f"{sorted(record)}: put a ValidationScoring callback (with the data that "
                f"{self.monitor} needs) before it."
            )
        score = record[self.key]
        if not math.isfinite(score):
            return False
        sign = 1.0 if MONITORS[self.monitor] else -1.0
        best = trainer.best
        loss = record.get("val_loss", math.inf)
        better = best is None or sign * (score - best["score"]) > self.min_delta
        tie_won = (best is not None and not better and score == best["score"]
                   and loss < best.get("loss", math.inf))
        if better or tie_won:
            trainer.best = {
                "epoch": record["epoch"],
                "score": score,
                "loss": loss,
                "module": {k: v.detach().clone() for k, v in trainer.raw_module.state_dict().items()},
                "extra": trainer.capture_extra(),
            }
            return False
        return self.patience is not None and record["epoch"] - trainer.best["epoch"] >= self.patience

    def on_train_end(self, trainer):
        if self.restore_best and trainer.best is not None:
            trainer.raw_module.load_state_dict(trainer.best["module"])
            trainer.restore_extra(trainer.best.get("extra"))


class Checkpoint(Callback):
    """Save the training state every ``every`` epochs; resume from it on the next run.

    ``path`` is the checkpoint file of a :class:`~skgroup.engine.Trainer`;
    in an estimator's ``callbacks`` (a method of several stages) it is a
    directory, and each stage writes ``<path>/<stage name>.pt``. A run that
    finds its file continues from it: same weights, optimizer and
    objective state, random generators, history and best epoch, so on CPU a
    killed and resumed run ends bit for bit where an uninterrupted run does.
    Only rank 0 writes under ``torchrun``.

    The file records the fingerprint of the run that wrote it
    (:meth:`Trainer.fingerprint`: the stage, seed and every training option,
    the objective's parameters and per-row state, the sampler, the rows,
    the penalty, the module's architecture and starting weights, the
    training data and labels, the validation data and early stopping). A
    run whose fingerprint differs in any field refuses to resume it with a
    :class:`CheckpointMismatchError` naming the fields: delete the file,
    or pass ``resume=False`` to train from the start and overwrite it.
    What the data fields hash is in :mod:`skgroup.engine._fingerprint`.
    """

    needs_fingerprint = True

    def __init__(self, path, *, every=1, resume=True):
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"Checkpoint(every={every!r}): every is the number of epochs between saves, a positive "
                             "int (1 saves after every epoch; the last epoch is always saved).")
        self.path = Path(path)
        self.every = int(every)
        self.resume = bool(resume)

    def on_train_begin(self, trainer):
        if self.resume and self.path.exists():
            state = load_checkpoint(self.path)
            try:
                trainer.load_state_dict(state)
            except CheckpointMismatchError as exc:
                what = str(exc).replace("the state was", f"The checkpoint {self.path} was", 1)
                raise CheckpointMismatchError(
                    f"{what}. Resuming it would return that run's model for this one. Delete {self.path} to train "
                    "this run from the start, pass Checkpoint(..., resume=False) to overwrite it, or give this run "
                    "its own checkpoint path.",
                    exc.differences,
                ) from None

    def on_epoch_end(self, trainer):
        if trainer.rank == 0 and trainer.state.epoch % self.every == 0:
            self.save(trainer)
        return False

    def on_train_end(self, trainer):
        if trainer.rank == 0:
            self.save(trainer)

    def save(self, trainer):
        save_checkpoint(trainer.state_dict(), self.path)


class ProgressBar(Callback):
    """A tqdm bar over epochs (or L-BFGS iterations) with the loss and validation score."""

    def __init__(self, desc="epochs", monitor=None):
        self.desc = desc
        self.monitor = monitor
        self._bar = None

    def on_train_begin(self, trainer):
        if trainer.rank != 0:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return
        self._bar = tqdm(total=trainer.max_epochs, initial=trainer.state.epoch, desc=self.desc,
                         leave=False, file=sys.stderr)

    def on_epoch_end(self, trainer):
        if self._bar is not None:
            post = {"loss": f"{trainer.record.get('train_loss', float('nan')):.5f}"}
            key = f"val_{self.monitor}" if self.monitor else None
            if key and key in trainer.record:
                post[self.monitor] = f"{trainer.record[key]:.4f}"
            self._bar.update(1)
            self._bar.set_postfix(post)
        return False

    def on_train_end(self, trainer):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class GroupDROHistory(Callback):
    """Record Group DRO's q and each group's mean training loss over the epoch's batches.

    Adds ``q`` (list, after the epoch) and ``group_loss`` (NaN for a group
    never drawn) to each record. Reads the objective's per-batch statistics,
    accumulated on the device (no synchronisation per step).
    """

    def on_epoch_begin(self, trainer):
        self._sum = None
        self._count = None

    def on_batch_end(self, trainer, loss):
        obj = trainer.objective.reduction
        if obj.last_group_loss is None:
            return
        s = obj.last_group_loss * obj.last_count
        if self._sum is None:
            self._sum, self._count = s.clone(), obj.last_count.clone()
        else:
            self._sum += s
            self._count += obj.last_count

    def on_epoch_end(self, trainer):
        trainer.record["q"] = trainer.objective.reduction.q.cpu().numpy().tolist()
        if self._sum is not None:
            mean = (self._sum / self._count.clamp_min(1)).cpu().numpy()
            mean[(self._count == 0).cpu().numpy()] = np.nan
            trainer.record["group_loss"] = mean.tolist()
        return False


class JSONLLogger(Callback):
    """Append each epoch's record, with the stage's name, to a JSON-lines file (rank 0 only)."""

    def __init__(self, path):
        self.path = Path(path)

    def on_epoch_end(self, trainer):
        if trainer.rank == 0:
            import json

            self.path.parent.mkdir(parents=True, exist_ok=True)
            row = {"stage": trainer.name, **{k: v for k, v in trainer.record.items()}}
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
        return False


class PrintEpochs(Callback):
    """Print one line per epoch: the stage, loss, learning rate and validation scores (rank 0 only)."""

    def __init__(self, file=None):
        self.file = file

    def on_epoch_end(self, trainer):
        if trainer.rank != 0:
            return False
        r = trainer.record
        cells = [f"{trainer.name:>14}", f"epoch {r['epoch']:>3}", f"loss {r.get('train_loss', float('nan')):.4f}"]
        if "lr" in r:
            cells.append(f"lr {r['lr']:.2e}")
        cells += [f"{k[4:]} {v:.4f}" for k, v in r.items() if k.startswith("val_") and isinstance(v, float)]
        print(" | ".join(cells), file=self.file or sys.stdout, flush=True)
        return False


class EpochCallback(Callback):
    """Call ``fn(epoch, module)`` after every epoch (0-based); a True return stops."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, trainer):
        return bool(self.fn(trainer.state.epoch - 1, trainer.raw_module))


def copy_callbacks(callbacks):
    """Fresh copies of user callbacks, so an estimator's parameters stay untouched by a fit."""
    return [copy.deepcopy(cb) for cb in (callbacks or ())]
