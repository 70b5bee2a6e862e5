"""Shards, the extraction spec, reuse and staleness, and the merge into the final cache.

Work goes to ``<output>/.shards/``: shard ``k`` holds the features of
samples ``[k * shard_size, (k + 1) * shard_size)``, written under a
temporary name, fsynced and renamed into place, with a sha256 over its
contents stored inside it. A killed run leaves complete shards (kept) and
at most some temporary files (deleted on the next start); a shard that
fails its checksum or does not load is redone. ``spec.json`` records which
extraction the shards belong to, so shards of another extraction are never
mixed in. When every shard is present they are merged in order into the
final cache with :func:`skgroup.datasets.save_embeddings` (manifest
last), and the shards are removed.
"""

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from skgroup.datasets import read_manifest, save_embeddings

__all__ = [
    "ExtractionMismatchError",
    "CorruptShardError",
    "spec_sha256",
    "spec_diff",
    "check_existing_cache",
    "ShardStore",
]

log = logging.getLogger("feature_extraction")
SHARD_DIR = ".shards"


class ExtractionMismatchError(FileExistsError):
    """The output folder holds a cache (or unfinished shards) of a different extraction."""


class CorruptShardError(ValueError):
    """A shard failed to load or did not match its checksum."""


def spec_sha256(spec):
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_diff(old, new):
    """Keys (dotted) whose values differ between two specs."""
    a, b = _flatten(old or {}), _flatten(new or {})
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _version_diff(old, new):
    """Libraries both runs used whose versions differ (one recorded by one run only did not compute these features)."""
    old, new = old or {}, new or {}
    return sorted(k for k in set(old) & set(new) if old[k] != new[k])


def check_existing_cache(output, spec, versions, *, overwrite=False, strict_versions=False):
    """Decide what to do with ``output``: 'reuse' it, 'build' it (absent or overwritten), or raise.

    A complete cache of the same spec is reused. Different library versions
    are a warning (the features may differ in the last bits) unless
    ``strict_versions``, which counts them as a different extraction.
    """
    if overwrite:
        return "build"
    try:
        manifest = read_manifest(output)
    except (ValueError, json.JSONDecodeError) as e:
        raise ExtractionMismatchError(f"{output} holds a manifest.json that is not an skgroup cache ({e}); "
                                      "choose another output folder or pass overwrite=True.") from e
    if manifest is None:
        return "build"
    extraction = manifest.get("extraction") or {}
    old_spec = extraction.get("spec")
    same = extraction.get("spec_sha256") == spec_sha256(spec)
    version_diff = _version_diff(extraction.get("versions"), versions)
    if same and version_diff and strict_versions:
        same = False
    if same:
        if version_diff:
            warnings.warn(
                f"Reusing the cache at {output}, written with other library versions ({', '.join(version_diff)}); "
                "pass strict_versions=True (CLI --strict-versions) to re-extract on any version change.",
                stacklevel=3,
            )
        return "reuse"
    if old_spec is None:
        differs = ["the cache was not written by feature_extraction"]
    else:
        differs = spec_diff(old_spec, spec) or (["library versions: " + ", ".join(version_diff)] if version_diff
                                                 else ["the spec hash"])
    raise ExtractionMismatchError(
        f"{output} already holds features of a different extraction (differs in: {', '.join(differs)}). "
        "Choose another output folder, or pass overwrite=True (CLI --overwrite) to replace it."
    )


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path, payload):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _shard_checksum(meta, rows, failed, features):
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True).encode())
    for a in (rows, failed, features):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class ShardStore:
    """The shards of one extraction in ``<output>/.shards``."""

    def __init__(self, output, spec_hash, n_samples, shard_size):
        self.root = Path(output) / SHARD_DIR
        self.spec_hash = spec_hash
        self.n_samples = int(n_samples)
        self.shard_size = int(shard_size)

    # layout ---------------------------------------------------------------

    @property
    def n_shards(self):
        return -(-self.n_samples // self.shard_size)

    def bounds(self, k):
        return k * self.shard_size, min((k + 1) * self.shard_size, self.n_samples)

    def path(self, k):
        return self.root / f"shard-{k:06d}.npz"

    # set up / resume ------------------------------------------------------

    def open(self, spec, *, versions=None, overwrite=False, strict_versions=False):
        """Create or adopt the shard folder; shards of another extraction are an error (removed with overwrite).

        Shards of the same extraction are resumed, with ``overwrite`` too (so a killed overwrite run resumes).
        Different library ``versions`` are a warning, or, with ``strict_versions``, another extraction.
        Returns the shard size in effect: a resumed run keeps the size it started with.
        """
        info_file = self.root / "spec.json"
        if self.root.exists():
            info = None
            if info_file.is_file():
                try:
                    info = json.loads(info_file.read_text())
                except json.JSONDecodeError:
                    info = None
            if not isinstance(info, dict):
                info = None
            same = info is not None and (info.get("spec_sha256"), info.get("n_samples")) == (self.spec_hash,
                                                                                            self.n_samples)
            version_diff = _version_diff(info.get("versions"), versions) if same else []
            if same and version_diff and strict_versions:
                same = False
            if same:
                if version_diff:
                    warnings.warn(
                        f"Resuming the shards in {self.root}, written with other library versions "
                        f"({', '.join(version_diff)}); pass strict_versions=True (CLI --strict-versions) to redo "
                        "them on any version change.", stacklevel=3,
                    )
                if info["shard_size"] != self.shard_size:
                    log.info("resuming with the shard size of the interrupted run (%d)", info["shard_size"])
                self.shard_size = int(info["shard_size"])
                return self.shard_size
            if any(self.root.glob("shard-*.npz")) and not overwrite:
                if info is None:
                    differs = ["unknown"]
                else:
                    differs = spec_diff(info.get("spec"), spec) or (
                        ["library versions: " + ", ".join(version_diff)] if version_diff else ["n_samples"])
                raise ExtractionMismatchError(
                    f"{self.root} holds unfinished work of a different extraction (differs in: {', '.join(differs)}). "
                    "Finish that run, choose another output folder, or pass overwrite=True to discard that work."
                )
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(info_file, json.dumps({"spec_sha256": self.spec_hash, "n_samples": self.n_samples,
                                                   "shard_size": self.shard_size, "spec": spec,
                                                   "versions": versions or {}}, indent=2,
                                                  sort_keys=True, default=str).encode())
        return self.shard_size

    def scan(self):
        """(done, redone): indices of valid shards; shards found corrupt are deleted and listed in redone."""
        for tmp in self.root.glob(".shard-*.tmp-*"):  # left by a killed writer
            tmp.unlink(missing_ok=True)
        done, redone = [], []
        self.failed_in_done = {}  # shard -> samples that failed to decode (on_error='skip') in a done shard
        for k in range(self.n_shards):
            p = self.path(k)
            if not p.exists():
                continue
            try:
                failed = self.read(k)[2]
                done.append(k)
                if failed.size:
                    self.failed_in_done[k] = int(failed.size)
            except CorruptShardError as e:
                warnings.warn(f"{e}; redoing shard {k}.", stacklevel=2)
                p.unlink(missing_ok=True)
                redone.append(k)
        return done, redone

    # shard I/O ------------------------------------------------------------

    def write(self, k, rows, features, failed):
        """Write shard ``k`` atomically: tmp file, fsync, rename."""
        rows = np.asarray(rows, dtype=np.int64)
        failed = np.asarray(failed, dtype=np.int64)
        features = np.ascontiguousarray(features)
        start, stop = self.bounds(k)
        if sorted(rows.tolist() + failed.tolist()) != list(range(start, stop)):
            raise RuntimeError(f"shard {k} would not cover samples {start}..{stop - 1} exactly")
        meta = {"shard": k, "start": start, "stop": stop, "spec_sha256": self.spec_hash}
        meta["sha256"] = _shard_checksum(meta, rows, failed, features)
        path = self.path(k)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, rows=rows, failed=failed, features=features, meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.root)

    def read(self, k):
        """(rows, features, failed) of shard ``k``; raises CorruptShardError if it is damaged or foreign."""
        path = self.path(k)
        try:
            with np.load(path, allow_pickle=False) as z:
                rows, failed, features = z["rows"], z["failed"], z["features"]
                meta = json.loads(str(z["meta"]))
        except Exception as e:  # truncated zip, bad header, missing member...
            raise CorruptShardError(f"shard {path} is unreadable ({type(e).__name__}: {e})") from e
        checksum = meta.pop("sha256", None)
        if checksum != _shard_checksum(meta, rows, failed, features):
            raise CorruptShardError(f"shard {path} does not match its checksum")
        start, stop = self.bounds(k)
        if meta.get("spec_sha256") != self.spec_hash or (meta.get("start"), meta.get("stop")) != (start, stop):
            raise CorruptShardError(f"shard {path} belongs to another extraction or shard layout")
        if features.shape[0] != rows.shape[0]:
            raise CorruptShardError(f"shard {path} has {features.shape[0]} feature rows for {rows.shape[0]} samples")
        return rows, features, failed

    # merge ----------------------------------------------------------------

    def merge(self, output, dataset, *, dtype, extraction, overwrite=False, keep_shards=False):
        """Merge all shards, in sample order, into the final cache; returns the ids left out (undecodable)."""
        parts = [self.read(k) for k in range(self.n_shards)]
        failed = np.sort(np.concatenate([p[2] for p in parts])) if parts else np.zeros(0, np.int64)
        dims = {p[1].shape[1] for p in parts if p[1].shape[0]}
        if len(dims) != 1:
            raise RuntimeError(f"shards disagree on the number of features: {sorted(dims)}" if dims else
                               "no sample could be decoded; nothing to cache")
        n_features = dims.pop()
        keep = np.ones(self.n_samples, dtype=bool)
        keep[failed] = False
        position = np.cumsum(keep) - 1  # row of each kept sample in the cache
        merged_file = self.root / "merged.npy"
        merged = np.lib.format.open_memmap(merged_file, mode="w+", dtype=np.dtype(dtype),
                                           shape=(int(keep.sum()), n_features))
        for rows, features, _ in parts:
            if rows.size:
                merged[position[rows]] = features
        merged.flush()
        skipped = dataset.ids[failed].tolist()
        extraction = {**extraction, "run": {**extraction.get("run", {}), "skipped_ids": skipped}}
        save_embeddings(
            output, merged, dataset.labels[keep], attributes=dataset.attributes[keep],
            attribute_names=dataset.attribute_names, split=dataset.split[keep], ids=dataset.ids[keep],
            label_names=dataset.label_names, spurious_attribute=dataset.spurious_attribute,
            extraction=extraction, overwrite=overwrite,
        )
        del merged
        if keep_shards:
            merged_file.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return skipped
