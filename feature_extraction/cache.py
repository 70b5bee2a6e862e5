"""Shards, the extraction spec, reuse and staleness, and the merge into the final cache.

Work goes to ``<output>/.shards/``: shard ``k`` holds the features of
samples ``[k * shard_size, (k + 1) * shard_size)``, written under a
temporary name, fsynced and renamed into place, with a sha256 over its
contents stored inside it. A killed run leaves complete shards (kept) and
at most some temporary files (deleted on the next start); a shard that
fails its checksum or does not load is redone. ``spec.json`` records which
extraction the shards belong to, so shards of another extraction are never
mixed in. When every shard is present they are merged in order into the
final cache, streaming: shard by shard into ``features.npy`` under a
temporary name (memory holds one shard, never all the features), then the
other files with :func:`skgroup.datasets.save_embeddings`, manifest last;
the shards are removed after.

A complete cache is reused only after :func:`skgroup.datasets.check_embeddings`
(every file's presence, shape, dtype and size; checksums of the small files,
and of ``features.npy``: its block checksums by default, all of them up to
256 MiB and a sample beyond, its full sha256 with ``verify=True``): a damaged cache is an error
that says how to rebuild it, never reused and never deleted unasked. Shards
left beside a complete cache by a run killed before it removed them are
deleted on the next run once the cache is verified in full.
"""

import hashlib
import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from skgroup.datasets import CorruptCacheError, check_embeddings, read_manifest, save_embeddings
from skgroup.datasets._embeddings import _ARRAYS, FeaturesWriter, unowned_cache_files

from .data import DecodeError

__all__ = [
    "ExtractionMismatchError",
    "CorruptShardError",
    "spec_sha256",
    "spec_diff",
    "check_existing_cache",
    "remove_stale_shards",
    "remove_leftover_temporaries",
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


def check_existing_cache(output, spec, versions, *, overwrite=False, strict_versions=False, verify="auto"):
    """Decide what to do with ``output``: 'reuse' it, 'build' it (absent or overwritten), or raise.

    A complete cache of the same spec is reused once its files pass
    :func:`skgroup.datasets.check_embeddings` with ``verify`` ('auto': the
    block checksums of ``features.npy``, all or a sample; ``True``: its
    full sha256); a damaged one raises
    :class:`~skgroup.datasets.CorruptCacheError` naming the file (rebuilt only
    with ``overwrite``). Different library versions are a warning (the
    features may differ in the last bits) unless ``strict_versions``, which
    counts them as a different extraction.
    """
    if overwrite:
        return "build"
    try:
        manifest = read_manifest(output)
    except CorruptCacheError:
        raise  # names the manifest and the fix
    except ValueError as e:
        raise ExtractionMismatchError(f"{output} holds a manifest.json that is not an skgroup cache ({e}); "
                                      "choose another output folder or pass overwrite=True.") from e
    if manifest is None:
        found = unowned_cache_files(output)
        if found:  # refused now, not after the whole extraction, when the merge would meet them
            raise ExtractionMismatchError(
                f"{output} holds {', '.join(found)} but no manifest.json: not a cache of this library, so they "
                "may be someone's files. Move them, choose another output folder, or pass overwrite=True (CLI "
                "--overwrite) to replace them."
            )
        return "build"
    extraction = manifest.get("extraction") or {}
    old_spec = extraction.get("spec")
    same = extraction.get("spec_sha256") == spec_sha256(spec)
    version_diff = _version_diff(extraction.get("versions"), versions)
    if same and version_diff and strict_versions:
        same = False
    if same:
        try:
            check_embeddings(output, manifest, verify=verify)
        except CorruptCacheError as e:
            if any((Path(output) / SHARD_DIR).glob("shard-*.npz")):
                raise CorruptCacheError(f"{e} Shards of an earlier run are in {Path(output) / SHARD_DIR}: with "
                                        "overwrite=True those of this extraction are reused.") from e
            raise
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


def _remove_shards(root):
    """Delete what the shard store writes in ``root`` (shards, spec.json, their temporaries) and the folder
    when that empties it; any other file is kept (with the folder), with a warning. Returns True if removed."""
    root = Path(root)
    if not root.is_dir():
        return True
    for p in root.iterdir():
        ours = (p.name == "spec.json" or re.fullmatch(r"shard-\d{6}\.npz", p.name)
                or re.fullmatch(r"\.(shard-\d{6}\.npz|spec\.json)\.tmp-\d+", p.name))
        if ours and p.is_file():
            p.unlink(missing_ok=True)
    rest = sorted(p.name for p in root.iterdir())
    if rest:
        warnings.warn(f"{root} holds files the extraction did not write ({', '.join(rest[:5])}"
                      f"{', ...' if len(rest) > 5 else ''}): they are kept, and so is the folder.", stacklevel=3)
        return False
    root.rmdir()
    return True


def remove_stale_shards(output, manifest, *, keep_shards=False):
    """Remove ``<output>/.shards`` left beside a complete cache by a run killed before it removed them.

    Only when the run that built the cache recorded ``keep_shards=False``,
    the current run does not ask to keep them, the shards belong to the
    cache's extraction, and the cache passes a full verification (every
    checksum, ``features.npy`` included: the shards may be the only other
    copy of the features). A cache that fails it raises
    :class:`~skgroup.datasets.CorruptCacheError` and the shards are kept.
    Returns True if the folder was removed.
    """
    output = Path(output)
    root = output / SHARD_DIR
    if not root.is_dir():
        return False
    extraction = manifest.get("extraction") or {}
    if keep_shards or (extraction.get("run") or {}).get("keep_shards") is not False:
        log.info("%s is kept beside the complete cache (%s); delete it if you no longer need it", root,
                 "keep_shards=True" if keep_shards else "the run that wrote the cache kept its shards or did "
                                                         "not record whether it did")
        return False
    try:
        info = json.loads((root / "spec.json").read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("spec_sha256") != extraction.get("spec_sha256"):
        log.info("%s holds unfinished work of another extraction; it is left in place", root)
        return False
    try:
        check_embeddings(output, manifest, verify=True)
    except CorruptCacheError as e:
        raise CorruptCacheError(f"{e} The shards of this extraction are still in {root}: overwrite=True (CLI "
                                "--overwrite) rebuilds the cache from them without recomputing.") from e
    removed = _remove_shards(root)
    _fsync_dir(output)
    log.info("removed %s: shards left by a run interrupted after it wrote the cache at %s, which is complete and "
             "verified", root, output)
    return removed


def remove_leftover_temporaries(output):
    """Delete the temporary files a killed merge left in ``output`` (call with the output lock held)."""
    patterns = [f".{name}.npy.tmp-*" for name in _ARRAYS] + [".manifest.json.tmp-*"]
    removed = [p for pattern in patterns for p in Path(output).glob(pattern)]
    for p in removed:
        p.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted merge in %s", len(removed), output)
    return len(removed)


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
        if a.size:  # the bytes, without a copy
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
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
            info, damage = None, None
            if info_file.is_file():
                try:
                    info = json.loads(info_file.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    damage = f"is not valid JSON ({e})"
                if damage is None and (not isinstance(info, dict) or not {"spec_sha256", "n_samples",
                                                                          "shard_size"} <= set(info)):
                    damage, info = "lacks the entries a shard store writes (spec_sha256, n_samples, shard_size)", None
            else:
                damage = "is missing"
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
                    what = ("holds shards but no spec.json" if damage == "is missing"
                            else f"holds shards, but {info_file} {damage}")
                    raise ExtractionMismatchError(
                        f"{self.root} {what}: spec.json records which extraction the shards belong to, so they cannot "
                        "be resumed (the file is damaged or was removed). Pass overwrite=True (CLI --overwrite) to "
                        "discard them and extract again, or choose another output folder."
                    )
                differs = spec_diff(info.get("spec"), spec) or (
                    ["library versions: " + ", ".join(version_diff)] if version_diff else ["n_samples"])
                raise ExtractionMismatchError(
                    f"{self.root} holds unfinished work of a different extraction (differs in: {', '.join(differs)}). "
                    "Finish that run, choose another output folder, or pass overwrite=True to discard that work."
                )
            _remove_shards(self.root)
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

    def _peek(self, k):
        """(failed, n_features or None) of shard ``k``, without loading its features."""
        path = self.path(k)
        try:
            with np.load(path, allow_pickle=False) as z:
                failed = z["failed"].astype(np.int64)
                with z.zip.open("features.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape = read(f)[0]
        except Exception as e:
            raise CorruptShardError(f"shard {path} is unreadable ({type(e).__name__}: {e})") from e
        return failed, (int(shape[1]) if len(shape) == 2 and shape[0] else None)

    def _append_shard(self, writer, k, position, n_features):
        """Write the features of shard ``k``, in sample order, at the end of ``writer``."""
        rows, features, _ = self.read(k)
        if not rows.size:
            return
        if features.ndim != 2 or features.shape[1] != n_features:
            raise RuntimeError(f"shards disagree on the number of features: shard {k} has {features.shape[1:]}, "
                               f"the others {n_features}")
        order = np.argsort(rows, kind="stable")
        if position[rows[order[0]]] != writer.rows:
            raise RuntimeError(f"shard {k} does not continue the cache at row {writer.rows}")
        writer.write(features[order])

    def merge(self, output, dataset, *, dtype, extraction, overwrite=False, keep_shards=False):
        """Merge all shards, in sample order, into the final cache; returns the ids left out (undecodable).

        Streaming: one shard at a time is read (and its checksum checked) and
        appended to ``features.npy`` under a temporary name, so memory holds
        one shard, not the features; the file is renamed into place and the
        manifest written last by :func:`~skgroup.datasets.save_embeddings`. A
        run killed during the merge leaves the shards and no manifest (its
        temporary file is removed by the next run, which merges again).
        """
        output = Path(output)
        failed, n_features = [], None
        for k in range(self.n_shards):
            failed_k, dim = self._peek(k)
            failed.append(failed_k)
            n_features = n_features if n_features is not None else dim
        failed = np.sort(np.concatenate(failed)) if failed else np.zeros(0, np.int64)
        n_kept = self.n_samples - failed.size
        if n_kept == 0 or n_features is None:
            shown = "; ".join(dataset.describe(int(i)) for i in failed[:3])
            raise DecodeError(
                f"none of the {self.n_samples} samples could be decoded, so there is nothing to cache (on_error='skip' "
                f"left them all out), e.g. {shown}{' ...' if failed.size > 3 else ''}. Check that the files exist "
                "and are images, and the image column and folder (CLI --image-column, --metadata)."
            )
        keep = np.ones(self.n_samples, dtype=bool)
        keep[failed] = False
        position = np.cumsum(keep) - 1  # row of each kept sample in the cache
        skipped = dataset.ids[failed].tolist()
        extraction = {**extraction, "run": {**extraction.get("run", {}), "skipped_ids": skipped}}
        writer = FeaturesWriter(output / "features.npy", (n_kept, n_features), np.dtype(dtype))
        try:
            for k in range(self.n_shards):
                self._append_shard(writer, k, position, n_features)
            writer.close()
            save_embeddings(
                output, writer, dataset.labels[keep], attributes=dataset.attributes[keep],
                attribute_names=dataset.attribute_names, split=dataset.split[keep], ids=dataset.ids[keep],
                label_names=dataset.label_names, spurious_attribute=dataset.spurious_attribute,
                extraction=extraction, overwrite=overwrite,
            )
        except BaseException:
            writer.abort()
            raise
        if not keep_shards:
            _remove_shards(self.root)
            _fsync_dir(output)
        return skipped
