"""Which training rows an epoch visits, and how often.

A sampler returns the row indices of one epoch, in order; the engine cuts
them into batches (a ``DataLoader`` over a ``TensorDataset`` costs 2.5x an
index-slicing loop at batch 128, see ``docs/design.rst``). All randomness
comes from the numpy ``Generator`` passed in, so a fit is reproducible from
``random_state`` without touching global seeds, and every rank of a
multi-process run draws the same epoch before taking its shard.
"""

import numpy as np

__all__ = [
    "Sampler",
    "UniformSampler",
    "RepeatSampler",
    "WeightedSampler",
    "balanced_weights",
    "BalancedSampler",
    "FixedLengthSampler",
]


class Sampler:
    """Base class: ``epoch(rng)`` gives one epoch's row indices."""

    def epoch(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def shard(order, rank, world_size):
        """This rank's share of an epoch, for data-parallel training.

        Like ``torch.utils.data.DistributedSampler``: the epoch is padded by
        wrapping around to a multiple of ``world_size`` (so every rank takes
        the same number of steps, which DDP's collective calls require), then
        rank r takes rows r, r + world_size, ...
        """
        order = np.asarray(order)
        if world_size <= 1:
            return order
        pad = (-order.shape[0]) % world_size
        if pad:
            order = np.concatenate([order, np.resize(order, pad)])
        return order[rank::world_size]


class UniformSampler(Sampler):
    """Every row once per epoch, shuffled (plain ERM); ``rows`` restricts the epoch."""

    def __init__(self, n_samples, rows=None):
        self.n_samples = int(n_samples)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def epoch(self, rng):
        if self.rows is None:
            return rng.permutation(self.n_samples)
        return rng.permutation(self.rows)


class RepeatSampler(Sampler):
    """Row i exactly ``repeats[i]`` times per epoch, shuffled.

    JTT's upsampling: error-set rows ``lambda_up`` times, the others once.
    A repeat of 0 drops the row (subsetting).
    """

    def __init__(self, repeats):
        repeats = np.asarray(repeats)
        if repeats.ndim != 1 or np.any(repeats < 0) or not np.all(repeats == np.round(repeats)):
            raise ValueError("repeats must be a 1-D array of non-negative integers.")
        if repeats.sum() == 0:
            raise ValueError("repeats drops every row: at least one must be positive.")
        self.indices = np.repeat(np.arange(repeats.shape[0]), repeats.astype(np.int64))

    def epoch(self, rng):
        return rng.permutation(self.indices)


class WeightedSampler(Sampler):
    """``n_draws`` rows drawn with replacement with probability proportional to ``weights``.

    The sampler of the Group DRO reference code (``WeightedRandomSampler``
    with ``replacement=True``) and of class-balanced upsampling.
    """

    def __init__(self, weights, n_draws=None):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be 1-D, finite, non-negative, with a positive sum.")
        self.p = w / w.sum()
        self.n_draws = int(n_draws if n_draws is not None else w.shape[0])

    def epoch(self, rng):
        """The draws of ``rng.choice(n, n_draws, replace=True, p=p)``, exactly, at a quarter of its time."""
        cdf, starts = self._inverse_cdf()
        # numpy's choice: u = rng.random(size), then the number of cdf entries <= u
        u = rng.random(self.n_draws)
        if starts is None:
            return cdf.searchsorted(u, side="right")
        # Its binary search over n entries cost ~20 ms an epoch of 100,000 draws, a quarter of a
        # d = 38 epoch. A table of where each of n equal slices of [0, 1) starts in the cdf
        # gives a start at most two slices short of the answer, then a few vectorised steps.
        # The slice before u's: the float product u * n may round up past its slice's start.
        slot = (u * cdf.shape[0]).astype(np.intp)
        slot -= 1
        np.maximum(slot, 0, out=slot)
        out = starts[slot]
        behind = np.flatnonzero(cdf[out] <= u)
        while behind.size:
            out[behind] += 1
            behind = behind[cdf[out[behind]] <= u[behind]]
        return out

    #: Above this many cdf entries in one slice of the table, a plain binary search (weights
    #: so uneven that walking through a slice would take longer).
    _MAX_SLICE = 64

    def _inverse_cdf(self):
        """(cdf, where each slice j / n of [0, 1) starts in it, or None): computed once."""
        if getattr(self, "_table", None) is None:
            cdf = self.p.cumsum()
            cdf /= cdf[-1]
            n = cdf.shape[0]
            starts = cdf.searchsorted(np.arange(n) / n, side="right")
            widest = int(np.diff(np.append(starts, n)).max())
            self._table = (cdf, starts if widest <= self._MAX_SLICE else None)
        return self._table


def balanced_weights(strata, subset=None, power=1.0):
    """Per-row weights ``n_s^-power / sum_t n_t^(1 - power)`` over the strata (classes or groups).

    ``power=1`` (the default) gives ``1 / (n_strata * n_s)``: drawing with
    these weights picks a stratum uniformly, then a row uniformly within it,
    and as loss weights every stratum counts alike (inverse-frequency
    reweighting). ``power=0.5`` is the square-root inverse frequency of
    SubpopBench's SqrtReWeight; ``power=0`` weighs every row alike. The
    weights sum to 1 over the kept rows. ``subset`` (bool mask) restricts
    them to those rows, counting strata within the subset only.
    """
    strata = np.asarray(strata)
    keep = np.ones(strata.shape[0], dtype=bool) if subset is None else np.asarray(subset, bool)
    _, inverse = np.unique(strata[keep], return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    w = np.zeros(strata.shape[0], dtype=np.float64)
    if power == 1.0:
        w[keep] = 1.0 / (len(counts) * counts[inverse])
    else:
        w[keep] = counts[inverse] ** -power / np.sum(counts ** (1.0 - power))
    return w


def BalancedSampler(strata, n_draws=None, subset=None):
    """Stratum-balanced draws with replacement, ``n_draws`` (default: the rows in ``subset``) per epoch."""
    n = strata.shape[0] if subset is None else int(np.sum(subset))
    return WeightedSampler(balanced_weights(strata, subset), n_draws if n_draws is not None else n)


class FixedLengthSampler(Sampler):
    """``n_rows`` rows an epoch: consecutive shuffled passes over the rows (each row once a pass), cut there.

    A stage of one such epoch takes exactly ``n_rows / batch_size`` optimizer
    steps, whatever the data size: a period counted in steps, as IRM's and
    V-REx's penalty anneal is (DomainBed's ``irm_penalty_anneal_iters``).
    """

    def __init__(self, n_samples, n_rows):
        if int(n_samples) < 1 or int(n_rows) < 1:
            raise ValueError(f"n_samples and n_rows must be positive; got {n_samples} and {n_rows}.")
        self.n_samples = int(n_samples)
        self.n_rows = int(n_rows)

    def epoch(self, rng):
        passes = -(-self.n_rows // self.n_samples)
        return np.concatenate([rng.permutation(self.n_samples) for _ in range(passes)])[: self.n_rows]
