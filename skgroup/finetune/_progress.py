"""What a fine-tuning run shows while it runs: a bar per batch, a line per epoch, a line on resuming.

:class:`RunProgress` is the command line's callback (rank 0 only). It
follows the engine's hooks: ``on_train_begin`` (after a
:class:`~skgroup.engine.Checkpoint` placed before it has loaded a saved
state, so a resumed stage says where it resumes), ``on_batch_end`` (the
bar: batches done of the stage, the epoch's running training loss, the
rate and the time left), ``on_epoch_end`` (one line per epoch with the
training loss and the validation scores under distinct names).
"""

import math
import sys
import time

from ..engine import Callback
from ..engine._loop import resolve_batch_size

__all__ = ["RunProgress", "stage_batches"]


def stage_batches(trainer):
    """Batches per epoch of a minibatch stage (None where it cannot be known up front)."""
    sampler = trainer.sampler
    if sampler is None:
        n = len(trainer.source) if trainer.rows is None else int(trainer.rows.shape[0])
    else:
        import numpy as np

        probe = np.random.Generator(type(trainer.rng.bit_generator)())
        probe.bit_generator.state = trainer.rng.bit_generator.state  # a copy: the run's draws are untouched
        try:
            n = int(len(sampler.epoch(probe)))
        except Exception:  # noqa: BLE001 - a sampler of unknown length only costs the bar its total
            return None
    n_rows = len(trainer.source) if trainer.rows is None else int(trainer.rows.shape[0])
    bs = resolve_batch_size(trainer.options.batch_size, n_rows)
    world = max(int(getattr(trainer, "world_size", 1)), 1)
    per_rank = math.ceil(n / world)
    return math.ceil(per_rank / max(bs // world, 1))


class RunProgress(Callback):
    """A tqdm bar per stage that moves each batch, and a line per epoch (rank 0 only).

    Parameters
    ----------
    checkpoints : path or None
        The run's checkpoint folder, named in the line a resumed stage prints.
    bar : bool, default=True
        The per-batch bar (on ``file``, default stderr); the epoch lines are
        printed either way (on ``out``, default stdout).
    min_interval : float, default=0.5
        Seconds between updates of the bar's loss (reading the loss waits
        for the device).
    """

    def __init__(self, checkpoints=None, *, bar=True, file=None, out=None, min_interval=0.5):
        self.checkpoints = checkpoints
        self.bar = bar
        self.file = file
        self.out = out
        self.min_interval = float(min_interval)
        self._bar = None

    def _print(self, text):
        out = self.out or sys.stdout
        if self._bar is not None:
            self._bar.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    def on_train_begin(self, trainer):
        if trainer.rank != 0:
            return
        self._per_epoch = stage_batches(trainer) if trainer.options.solver != "lbfgs" else None
        done = trainer.epoch
        if done:
            where = f" from {self.checkpoints}" if self.checkpoints else ""
            if trainer.stopped_early or done >= trainer.max_epochs:
                self._print(f"{trainer.name}: finished before{where} ({done} epochs); not trained again")
            else:
                self._print(f"{trainer.name}: resuming{where} after epoch {done} of {trainer.max_epochs} "
                            f"(optimizer step {trainer.step})")
        if not self.bar or self._per_epoch is None or trainer.stopped_early or done >= trainer.max_epochs:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self._per_epoch * trainer.max_epochs, initial=self._per_epoch * done,
                         desc=f"{trainer.name}", unit="batch", file=self.file or sys.stderr, dynamic_ncols=True,
                         leave=False)

    def on_epoch_begin(self, trainer):
        self._sum, self._n, self._last = 0.0, 0, 0.0
        self._pending = []

    def on_batch_end(self, trainer, loss):
        if self._bar is None:
            return
        self._pending.append(loss)
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._sum += sum(float(v) for v in self._pending)  # the device is waited for once per update
            self._n += len(self._pending)
            self._pending = []
            self._last = now
            self._bar.set_postfix_str(f"epoch {trainer.epoch}/{trainer.max_epochs}, "
                                      f"train loss {self._sum / max(self._n, 1):.4f}", refresh=False)
        self._bar.update(1)

    def on_epoch_end(self, trainer):
        if trainer.rank != 0:
            return False
        r = trainer.record
        cells = [f"{trainer.name:>14}", f"epoch {r['epoch']:>3}", f"train_loss {r.get('train_loss', float('nan')):.4f}"]
        if "lr" in r:
            cells.append(f"lr {r['lr']:.2e}")
        cells += [f"{k} {v:.4f}" for k, v in r.items() if k.startswith("val_") and isinstance(v, float)]
        self._print(" | ".join(cells))
        return False

    def on_train_end(self, trainer):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
