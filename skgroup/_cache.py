"""Work that several fits share, done once per process.

Some methods start with a sub-model that depends on the training data and a
few settings only, not on the parameters a search varies:

* JTT's identification model (not on ``lambda_up``),
* GradTune's base ERM model (not on ``lr_scale``, ``n_top``, ...),
* the biased ERM model behind the bias-unsupervised score (on nothing but
  the training rows),
* the inferred groups of :class:`~skgroup.groups.InferredGroupsClassifier`
  and of the ``inferred_worst_group`` rule (not on the wrapped method), and
  the reference models of the inferrers.

A grid over ``lambda_up`` would otherwise train the same identification model
once per value. :data:`SHARED_FITS` keeps such sub-models, keyed on a
fingerprint of the data (a hash of the bytes, dtype and shape of every
array) and of the settings, so a second fit with the same data and settings
reuses the first one's sub-model; anything else that differs (other rows,
another seed, another ``id_epochs``) is another key. It works for plain
``GridSearchCV`` and ``cross_validate`` without any setup; joblib workers
(``n_jobs``) each keep their own, and
:class:`~skgroup.model_selection.RobustSearchCV` ships the sub-models it
computed first to its workers, so a parallel search fits each one once.

Reuse never changes a result: the cached sub-model is exactly the one the
fit would train (same data, settings and seed), and a fit with a random seed
(``random_state=None``) or with user callbacks never reuses anything. Values
are copied on the way in and out, so no two estimators share mutable state.
``with SHARED_FITS.disabled():`` turns the cache off (e.g. to time the work
it saves); ``SHARED_FITS.clear()`` empties it.
"""

import contextlib
import copy
import hashlib
import pickle
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["SHARED_FITS", "SharedFits", "fingerprint", "canonical"]


def fingerprint(*arrays):
    """Hex digest of the contents, dtypes and shapes of ``arrays`` (None allowed).

    SHA-1 as a content key, not for security: with the CPU's SHA extensions
    it reads 1.8 GB/s here against blake2b's 0.9 GB/s, and a JTT fit on
    wide features hashes its training rows once.
    """
    h = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        if a is None:
            h.update(b"None;")
            continue
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        if a.dtype.kind == "O":
            h.update(pickle.dumps(a.tolist(), protocol=4))
        else:
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def canonical(value):
    """A deterministic, hashable description of a setting (estimators by class and parameters)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        params = value.get_params(deep=False)
        return (type(value).__module__, type(value).__qualname__,
                tuple(sorted((k, canonical(v)) for k, v in params.items())))
    if isinstance(value, dict):
        return tuple(sorted((str(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canonical(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", fingerprint(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return (type(value).__qualname__, repr(value))


class SharedFits:
    """A small thread-safe LRU cache of fitted sub-models, with counters.

    Parameters
    ----------
    maxsize : int
        Entries kept (sub-models of heads are small: weights of a linear or
        MLP head).
    """

    def __init__(self, maxsize=64):
        self.maxsize = int(maxsize)
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self._enabled = True
        self._recording = []
        self.fits = {}
        self.hits = {}

    @property
    def enabled(self):
        return self._enabled

    @contextlib.contextmanager
    def disabled(self):
        """Neither read nor write the cache inside the block."""
        before, self._enabled = self._enabled, False
        try:
            yield self
        finally:
            self._enabled = before

    @staticmethod
    def key(kind, *parts):
        return (kind, hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest())

    def get(self, key):
        """A copy of the cached value for ``key`` (from :meth:`key`), or None."""
        if key is None or not self._enabled:
            return None
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            value = self._entries[key]
            self.hits[key[0]] = self.hits.get(key[0], 0) + 1
        return copy.deepcopy(value)

    def put(self, key, value):
        """Store a copy of ``value``; counts one fit of ``key``'s kind."""
        if key is None:
            return
        with self._lock:
            self.fits[key[0]] = self.fits.get(key[0], 0) + 1
            if not self._enabled:
                return
            self._entries[key] = copy.deepcopy(value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            for record in self._recording:
                record[key] = self._entries[key]

    def get_or_fit(self, key, fit):
        """The cached value for ``key``, else ``fit()`` stored under it."""
        value = self.get(key)
        if value is None:
            value = fit()
            self.put(key, value)
        return value

    @contextlib.contextmanager
    def recording(self):
        """Collect the entries stored inside the block (to ship them to other processes)."""
        record = {}
        with self._lock:
            self._recording.append(record)
        try:
            yield record
        finally:
            with self._lock:
                self._recording.remove(record)

    def load(self, entries):
        """Add entries (from :meth:`recording` in another process) without counting fits."""
        if not self._enabled or not entries:
            return
        with self._lock:
            for key, value in entries.items():
                if key not in self._entries:
                    self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self):
        """Forget every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.fits.clear()
            self.hits.clear()

    def __len__(self):
        return len(self._entries)


#: The process's cache of shared sub-models (see the module docstring).
SHARED_FITS = SharedFits()
