"""On-disk format of cached features (written by ``feature_extraction``).

A cache is a folder::

    manifest.json    written last: its presence marks a complete cache
    features.npy     (n_samples, n_features) float16 or float32, memory-mapped on load
    labels.npy       (n_samples,) int64 class labels
    attributes.npy   (n_samples, n_attributes) int64 (n_attributes may be 0)
    split.npy        (n_samples,) int8: 0 train, 1 val, 2 test, -1 unassigned
    ids.npy          (n_samples,) str, a stable id per sample (file name, row id)

``manifest.json`` holds ``format`` ("skgroup-embeddings"), ``format_version``,
``n_samples``, ``n_features``, ``dtype``, ``attribute_names``,
``label_names`` (or null), ``spurious_attribute`` (the attribute that
defines the groups by default, or null), ``files`` (sha256 of each array
file) and ``extraction`` (free-form: what made the features, see
``feature_extraction``).

Every file is written under a temporary name and renamed into place, and
the manifest goes last, so a killed writer leaves either the old complete
cache or no manifest, never a half-written cache that loads. Files are
written block by block (:class:`FeaturesWriter`), so no whole copy of the
features is held in memory, and hashed as they are written.

A damaged cache is never loaded: :func:`check_embeddings` (run by
:func:`load_embeddings` and by the extraction stage before it reuses a
cache) checks every file's presence, ``.npy`` header, shape, dtype and size
against the manifest, the checksums of the small files (labels,
attributes, split, ids), and by default (``verify='auto'``) the CRC-32
checksums of ``features.npy``'s blocks, which the manifest records under
``blocks``: all of them up to 256 MiB, beyond that the first, the last and
64 drawn at random on every check. ``verify=True`` checks the sha256 of
the whole file. Errors are :class:`CorruptCacheError` naming the file.
"""

import hashlib
import io
import json
import os
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .._groups import make_group_labels

__all__ = ["save_embeddings", "load_embeddings", "split_embeddings", "check_embeddings", "CorruptCacheError",
           "FeaturesWriter", "SPLITS", "FORMAT"]

FORMAT = "skgroup-embeddings"
FORMAT_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}
_ARRAYS = ("features", "labels", "attributes", "split", "ids")
_CHUNK_ROWS = 65536
# what a complete manifest holds, and the type of each entry
_MANIFEST_KEYS = {"format_version": int, "n_samples": int, "n_features": int, "dtype": str, "attribute_names": list,
                  "files": dict}
# present while save_embeddings places its files: files of a cache's names beside it are the leftovers of an
# interrupted save (replaced by the next one); without it and without a manifest they are someone else's
_WRITING = ".skgroup-writing"
# the default check of features.npy (verify='auto'): every block up to this size, else a sample
_FULL_CHECK_BYTES = 256 << 20
_SAMPLED_BLOCKS = 64
# blocks of at least 1 MiB, and at most about 16,384 of them (the manifest lists one CRC-32 each)
_MIN_BLOCK_BYTES = 1 << 20
_MAX_BLOCKS = 16384
_REBUILD = ("Rebuild the cache: run the extraction again with overwrite=True (CLI --overwrite), or "
            "save_embeddings(..., overwrite=True); nothing is replaced without it.")


class CorruptCacheError(ValueError):
    """A features cache is damaged: its manifest, or a file missing, truncated, of the wrong shape, dtype or checksum."""


def _block_size(total):
    """Bytes per checksummed block of a file of ``total`` bytes."""
    per = -(-total // _MAX_BLOCKS)
    return max(_MIN_BLOCK_BYTES, -(-per // _MIN_BLOCK_BYTES) * _MIN_BLOCK_BYTES)


def _read_block(f, i, size):
    f.seek(i * size)
    return f.read(size)


def _sha256(path, block=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class FeaturesWriter:
    """Write a ``.npy`` file block of rows by block of rows, under a temporary name, hashing it as it goes.

    The file is the one :func:`numpy.save` writes; no more than one block is
    held in memory, and written pages are not mapped into the process (a
    memory map's dirty pages would count in its resident memory). Use::

        w = FeaturesWriter(folder / "features.npy", (n, d), np.float32)
        for block in blocks:          # in row order
            w.write(block)
        w.close()                     # fsynced; then save_embeddings(folder, w, ...) renames it into place

    :meth:`abort` removes the temporary file.
    """

    def __init__(self, path, shape, dtype):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject:
            raise ValueError("FeaturesWriter writes plain dtypes only, not object arrays.")
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.rows = 0
        self.sha256 = None
        self._hash = hashlib.sha256()
        header = io.BytesIO()
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        try:
            np.lib.format.write_array_header_1_0(header, d)
        except ValueError:  # header too large for format 1.0
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, d)
        header = header.getvalue()
        # CRC-32 of each block of the file, for the cheap default check (check_embeddings)
        self.block_size = _block_size(len(header) + int(np.prod(self.shape)) * self.dtype.itemsize)
        self.block_crc32 = []
        self._crc, self._in_block = 0, 0
        self._file = open(self.tmp, "wb")
        self._put(header)

    def _put(self, data):
        self._file.write(data)
        self._hash.update(data)
        view = memoryview(data).cast("B")
        while view.nbytes:
            take = min(view.nbytes, self.block_size - self._in_block)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._in_block += take
            view = view[take:]
            if self._in_block == self.block_size:
                self.block_crc32.append(self._crc)
                self._crc, self._in_block = 0, 0

    def write(self, block):
        """Append ``block`` (rows in order; shape (k,) + shape[1:])."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: a block of shape {block.shape} does not fit rows {self.rows}.. of "
                             f"an array of shape {self.shape}.")
        if block.size:
            self._put(memoryview(block).cast("B"))
        self.rows += block.shape[0]

    def close(self):
        """Flush and fsync; every row must have been written. Returns the file's sha256."""
        if self.rows != self.shape[0]:
            self.abort()
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows were written.")
        if self._in_block:
            self.block_crc32.append(self._crc)
            self._crc, self._in_block = 0, 0
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.sha256 = self._hash.hexdigest()
        return self.sha256

    def commit(self):
        """Rename the finished file into place."""
        if self.sha256 is None:
            raise RuntimeError("close() the writer before committing it.")
        os.replace(self.tmp, self.path)

    def abort(self):
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


def _atomic_save(path, array, with_blocks=False):
    """Write ``array`` as ``path`` (.npy) under a temporary name, in blocks of rows, then rename; returns its sha256
    (and ``{"size", "crc32"}`` of its checksummed blocks with ``with_blocks``)."""
    writer = FeaturesWriter(path, array.shape, array.dtype)
    try:
        if array.ndim == 0:
            raise ValueError(f"{path.name}: cannot write a 0-d array.")
        for start in range(0, array.shape[0], _CHUNK_ROWS):
            writer.write(array[start : start + _CHUNK_ROWS])
        digest = writer.close()
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    if with_blocks:
        return digest, {"size": writer.block_size, "crc32": writer.block_crc32}
    return digest


def _integer_codes(values, name):
    """``values`` as int64 class or attribute codes; non-integral floats, NaN and strings are refused."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":  # e.g. Python ints from a DataFrame column of objects
        as_list = np.asarray(arr.tolist())
        if as_list.dtype.kind in "biuf" and as_list.shape == arr.shape:
            arr = as_list
    if arr.dtype.kind == "b":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise ValueError(f"{name} hold NaN or infinite values ({int(np.count_nonzero(~finite))} of them): "
                             f"every sample needs an integer {name[:-1]} code; drop those rows first.")
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])[:5].tolist()
            raise ValueError(f"{name} hold non-integer values, e.g. {bad}: they would be truncated. Pass "
                             f"integer codes (map values to 0, 1, ... and give their names with label_names).")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be integer class codes; got dtype {arr.dtype}. Map names to codes 0, 1, ... "
                     f"(e.g. np.unique(values, return_inverse=True)) and pass the names as label_names.")


def unowned_cache_files(path):
    """Files named like a cache's (``features.npy``, ...) in ``path`` that neither a manifest nor an
    interrupted :func:`save_embeddings` accounts for: a user's files, never replaced without ``overwrite``."""
    path = Path(path)
    if (path / "manifest.json").exists() or (path / _WRITING).exists():
        return []
    return [f"{name}.npy" for name in _ARRAYS if (path / f"{name}.npy").exists()]


def invalidate_cache(path):
    """Mark the cache in ``path`` as being replaced: the in-progress marker first, then no manifest.

    A process killed after this leaves no cache that loads, and its files
    stay this library's (the next save replaces them without ``overwrite``).
    """
    path = Path(path)
    (path / _WRITING).write_text("save_embeddings places its files here; it removes this file after the manifest\n")
    (path / "manifest.json").unlink(missing_ok=True)


def _refuse_unowned(path):
    found = unowned_cache_files(path)
    if found:
        raise FileExistsError(
            f"{path} holds {', '.join(found)} but no manifest.json: not a cache this library wrote (or finished), "
            "so they may be someone's files. Move them, choose another folder, or pass overwrite=True (CLI "
            "--overwrite) to replace them."
        )


def save_embeddings(
    path,
    features,
    labels,
    *,
    attributes=None,
    attribute_names=None,
    split=None,
    ids=None,
    label_names=None,
    spurious_attribute=None,
    extraction=None,
    overwrite=False,
):
    """Write a features cache in the skgroup format (see the module docstring).

    Parameters
    ----------
    path : str or Path
        Folder to write (created if needed).
    features : array-like of shape (n_samples, n_features), float16 or float32, or a FeaturesWriter
        May be a memory map; it is copied in chunks, never loaded whole. A
        closed :class:`FeaturesWriter` whose path is ``path / "features.npy"``
        (features written block by block beforehand) is renamed into place.
    labels : array-like of shape (n_samples,), ints
        Integer class codes (bools, and floats with integral values, are
        converted); non-integral floats, NaN and strings are refused.
    attributes : array-like of shape (n_samples,) or (n_samples, n_attributes)
    attribute_names : list of str
    split : array-like of shape (n_samples,)
        'train' / 'val' / 'test' or 0 / 1 / 2 (-1 for none). Default: all -1.
    ids : array-like of shape (n_samples,)
        Stable sample ids. Default: the row numbers.
    label_names : list of str, optional
    spurious_attribute : str, optional
        Attribute that defines the groups when loading.
    extraction : dict, optional
        What produced the features (JSON-serialisable).
    overwrite : bool, default=False
        Replace an existing cache. Without it an existing cache is an error,
        and so are files of a cache's names without a manifest (someone
        else's), so nothing is lost by accident; the leftovers of a save of
        this library that was killed before its manifest are replaced.
    """
    path = Path(path)
    if (path / "manifest.json").exists() and not overwrite:
        raise FileExistsError(
            f"{path} already holds an embeddings cache; pass overwrite=True to replace "
            "it, or choose another folder."
        )
    streamed = isinstance(features, FeaturesWriter)
    if streamed:
        if features.sha256 is None or features.path != path / "features.npy":
            raise ValueError(f"a FeaturesWriter passed as features must be closed and write {path / 'features.npy'}.")
    else:
        features = features if isinstance(features, np.ndarray) else np.asarray(features)
    if len(features.shape) != 2:
        raise ValueError(f"features must be 2-D (n_samples, n_features); got shape {features.shape}.")
    if features.dtype not in (np.float16, np.float32):
        raise ValueError(f"features must be float16 or float32; got {features.dtype}.")
    n = features.shape[0]
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {labels.shape}.")
    labels = _integer_codes(labels, "labels")
    if attributes is None:
        attributes = np.zeros((n, 0), dtype=np.int64)
    attributes = np.asarray(attributes)
    if attributes.size:
        attributes = _integer_codes(attributes, "attributes")
    if attributes.ndim == 1:
        attributes = attributes[:, None]
    if attributes.shape[0] != n:
        raise ValueError(f"attributes must have {n} rows; got {attributes.shape[0]}.")
    attribute_names = list(attribute_names) if attribute_names is not None else [
        f"attribute_{j}" for j in range(attributes.shape[1])
    ]
    if len(attribute_names) != attributes.shape[1]:
        raise ValueError(
            f"attribute_names has {len(attribute_names)} names for {attributes.shape[1]} attribute columns."
        )
    if spurious_attribute is not None and spurious_attribute not in attribute_names:
        raise ValueError(f"spurious_attribute {spurious_attribute!r} is not in attribute_names {attribute_names}.")
    split = encode_split(split, n)
    ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str, copy=False)
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},); got {ids.shape}.")

    path.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        _refuse_unowned(path)
    # overwrite: invalidate first, so a crash leaves no mixed cache
    invalidate_cache(path)
    manifest_path = path / "manifest.json"
    arrays = {
        "features": features,
        "labels": labels.astype(np.int64, copy=False),
        "attributes": attributes.astype(np.int64, copy=False),
        "split": split,
        "ids": ids,
    }
    files = {}
    blocks = None
    for name in _ARRAYS:
        if name == "features" and streamed:
            features.commit()
            files[name] = features.sha256
            blocks = {"size": features.block_size, "crc32": features.block_crc32}
        elif name == "features":
            files[name], blocks = _atomic_save(path / f"{name}.npy", arrays[name], with_blocks=True)
        else:
            files[name] = _atomic_save(path / f"{name}.npy", arrays[name])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_samples": int(n),
        "n_features": int(features.shape[1]),
        "dtype": str(features.dtype),
        "attribute_names": attribute_names,
        "label_names": list(label_names) if label_names is not None else None,
        "spurious_attribute": spurious_attribute,
        "files": files,
        "blocks": {"features": blocks},
        "extraction": extraction or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path / f".manifest.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, manifest_path)
    (path / _WRITING).unlink(missing_ok=True)
    return path


# metadata files spell splits many ways (Waterbirds: 0/1/2; others "validation", "dev")
_SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2,
                "0": 0, "1": 1, "2": 2, "-1": -1, "": -1, "none": -1}


def encode_split(split, n):
    """Split names or codes as int8 codes: 0 train, 1 val, 2 test, -1 none."""
    if split is None:
        return np.full(n, -1, dtype=np.int8)
    split = np.asarray(split)
    if split.shape != (n,):
        raise ValueError(f"split must have shape ({n},); got {split.shape}.")
    if split.dtype.kind in "iu":
        if not np.isin(split, (-1, 0, 1, 2)).all():
            raise ValueError("split codes must be 0 (train), 1 (val), 2 (test) or -1 (none).")
        return split.astype(np.int8)
    out = np.empty(n, dtype=np.int8)
    for i, s in enumerate(split.astype(str)):
        code = _SPLIT_NAMES.get(s.strip().lower())
        if code is None:
            raise ValueError(f"unknown split name {s!r} (row {i}); use 'train', 'val', 'test' or 0 / 1 / 2.")
        out[i] = code
    return out


def read_manifest(path):
    """The manifest of a complete cache, or None if ``path`` holds none.

    Raises :class:`CorruptCacheError` (naming the manifest) when it is not
    valid JSON or lacks an entry a cache needs, and ValueError when it is
    some other program's ``manifest.json``.
    """
    file = Path(path) / "manifest.json"
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCacheError(f"{file} is not valid JSON ({e}): the cache's manifest is damaged. {_REBUILD}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{file} is not a {FORMAT} manifest: the folder holds something else. Choose another "
                         "folder, or remove that manifest.json if you no longer need what it describes.")
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise CorruptCacheError(f"{file} lacks the entries {missing}: the cache's manifest is damaged. {_REBUILD}")
    wrong = [f"{k} ({manifest[k]!r})" for k, t in _MANIFEST_KEYS.items()
             if not isinstance(manifest[k], t) or isinstance(manifest[k], bool)]
    if not wrong:
        if manifest["n_samples"] < 0 or manifest["n_features"] < 1:
            wrong.append(f"n_samples / n_features ({manifest['n_samples']} / {manifest['n_features']})")
        if manifest["dtype"] not in ("float16", "float32"):
            wrong.append(f"dtype ({manifest['dtype']!r})")
        spurious = manifest.get("spurious_attribute")
        if spurious is not None and spurious not in manifest["attribute_names"]:
            wrong.append(f"spurious_attribute ({spurious!r} is not one of {manifest['attribute_names']})")
    if wrong:
        raise CorruptCacheError(f"{file} holds invalid entries: {', '.join(wrong)}; the cache's manifest is "
                                f"damaged. {_REBUILD}")
    return manifest


def _expected_layout(manifest):
    """File -> (shape, dtype or dtype kind) a cache with this manifest must have."""
    n = manifest["n_samples"]
    return {
        "features": ((n, manifest["n_features"]), np.dtype(manifest["dtype"])),
        "labels": ((n,), np.dtype(np.int64)),
        "attributes": ((n, len(manifest["attribute_names"])), np.dtype(np.int64)),
        "split": ((n,), np.dtype(np.int8)),
        "ids": ((n,), "U"),
    }


def _npy_header(file):
    """(shape, dtype, fortran_order, data offset) of a .npy file; CorruptCacheError if it has no valid header."""
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read[version](f)
            return shape, dtype, fortran, f.tell()
    except FileNotFoundError:
        raise CorruptCacheError(f"{file} is missing: the cache is incomplete. {_REBUILD}") from None
    except Exception as e:  # bad magic, unparsable header...
        raise CorruptCacheError(f"{file} is not a .npy file ({type(e).__name__}: {e}): the cache is damaged. "
                                f"{_REBUILD}") from e


def _check_verify(verify):
    if verify is True or verify is False or (isinstance(verify, str) and verify == "auto"):
        return verify
    raise ValueError(f"verify must be 'auto' (the default check), True (the full sha256) or False; got {verify!r}.")


def check_embeddings(path, manifest=None, *, verify="auto"):
    """Check a cache's files against its manifest; raise :class:`CorruptCacheError` naming the first bad file.

    Always: every file exists and has a valid ``.npy`` header, the shape and
    dtype the manifest implies (``n_samples``, ``n_features``, ``dtype``,
    one attribute column per ``attribute_names``), and exactly the size that
    header implies (a truncated or padded file fails); the small files
    (labels, attributes, split, ids) must match their sha256, which costs
    about as much as loading them.

    ``features.npy``, by ``verify``:

    * ``'auto'`` (default): the CRC-32 of its blocks recorded in the
      manifest, all of them when the file is at most 256 MiB (a changed
      byte anywhere is caught), else the first, the last and 64 more drawn
      at random at every check (a change confined to blocks not drawn is
      missed by that check: about 64 MiB read whatever the size). A cache
      written before block checksums were recorded gets the full sha256
      when it is at most 256 MiB, and no content check above that;
    * ``True``: its sha256, read whole;
    * ``False``: no content check.
    """
    verify = _check_verify(verify)
    path = Path(path)
    manifest = manifest if manifest is not None else read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(f"{path} holds no complete embeddings cache (manifest.json is missing).")
    for name, (shape, dtype) in _expected_layout(manifest).items():
        file = path / f"{name}.npy"
        got_shape, got_dtype, fortran, offset = _npy_header(file)
        if got_shape != shape:
            raise CorruptCacheError(f"{file} has shape {got_shape}, the manifest says {shape}: the cache is "
                                    f"damaged or mixes files of two caches. {_REBUILD}")
        if (got_dtype.kind != dtype) if isinstance(dtype, str) else (got_dtype != dtype):
            raise CorruptCacheError(f"{file} has dtype {got_dtype}, the manifest says "
                                    f"{dtype if not isinstance(dtype, str) else 'str'}: the cache is damaged. "
                                    f"{_REBUILD}")
        if fortran:
            raise CorruptCacheError(f"{file} is in Fortran order, which this format never writes. {_REBUILD}")
        size, expected = file.stat().st_size, offset + int(np.prod(shape)) * got_dtype.itemsize
        if size != expected:
            raise CorruptCacheError(f"{file} is {size} bytes, its header and the manifest imply {expected} "
                                    f"({'truncated' if size < expected else 'extra bytes'}): the cache is "
                                    f"damaged. {_REBUILD}")
        digest = manifest["files"].get(name)
        if name == "features" and verify == "auto":
            _check_feature_blocks(file, size, manifest, digest)
        elif (name != "features" or verify) and digest is not None and _sha256(file) != digest:
            raise CorruptCacheError(f"{file} does not match its checksum in the manifest: the cache is damaged "
                                    f"(a changed byte). {_REBUILD}")
    return manifest


def _check_feature_blocks(file, size, manifest, digest):
    """The default check of features.npy (see :func:`check_embeddings`)."""
    blocks = (manifest.get("blocks") or {}).get("features")
    if not blocks:  # a cache written before block checksums
        if size <= _FULL_CHECK_BYTES and digest is not None and _sha256(file) != digest:
            raise CorruptCacheError(f"{file} does not match its checksum in the manifest: the cache is damaged "
                                    f"(a changed byte). {_REBUILD}")
        return
    try:
        block_size, crcs = int(blocks["size"]), [int(c) for c in blocks["crc32"]]
    except (KeyError, TypeError, ValueError):
        raise CorruptCacheError(f"{file.parent / 'manifest.json'} holds invalid block checksums: the cache's "
                                f"manifest is damaged. {_REBUILD}") from None
    n = len(crcs)
    if block_size < 1 or n != -(-size // block_size):
        raise CorruptCacheError(f"{file.parent / 'manifest.json'} lists {n} block checksums of {block_size} bytes "
                                f"for {file} of {size} bytes: the cache is damaged. {_REBUILD}")
    if size <= _FULL_CHECK_BYTES or n <= _SAMPLED_BLOCKS + 2:
        chosen = range(n)
    else:  # a fresh draw at every check: over several loads, damage anywhere is seen
        drawn = np.random.default_rng().choice(np.arange(1, n - 1), size=_SAMPLED_BLOCKS, replace=False)
        chosen = sorted({0, n - 1, *drawn.tolist()})
    with open(file, "rb") as f:
        for i in chosen:
            if zlib.crc32(_read_block(f, i, block_size)) != crcs[i]:
                raise CorruptCacheError(
                    f"{file} does not match its checksum in the manifest (block {i} of {n}, bytes "
                    f"{i * block_size}-{min(size, (i + 1) * block_size) - 1}): the cache is damaged (a changed "
                    f"byte). {_REBUILD}")


def load_embeddings(path, *, mmap=True, verify="auto"):
    """Load a features cache written by :func:`save_embeddings`.

    Parameters
    ----------
    path : str or Path
    mmap : bool, default=True
        Memory-map ``features`` read-only instead of reading it into memory;
        the estimators train on it in place when its dtype is their training
        dtype (float32).
    verify : 'auto', bool, default='auto'
        How ``features.npy``'s contents are checked (see
        :func:`check_embeddings`): 'auto' the checksums of its blocks (all
        of them up to 256 MiB, else the first, the last and 64 at random),
        True its sha256 (reads it whole), False not at all. Every file's
        presence, shape, dtype and size, and the checksums of the small
        files, are checked in any case.

    Returns
    -------
    Bunch with ``features``, ``labels``, ``attributes``, ``attribute_names``,
    ``split`` (int8 codes), ``ids``, ``label_names``, ``spurious_attribute``
    and ``manifest``.

    Raises
    ------
    CorruptCacheError
        The manifest or a file is damaged; the message names it.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No embeddings cache at {path}: the folder does not exist.")
    manifest = read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"{path} holds no complete embeddings cache (manifest.json is missing): an "
            "extraction may have been interrupted; run it again to resume it."
        )
    if manifest["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer skgroup (format_version "
            f"{manifest['format_version']}); upgrade skgroup to read it."
        )
    check_embeddings(path, manifest, verify=verify)
    arrays = {}
    for name in _ARRAYS:
        file = path / f"{name}.npy"
        try:
            arrays[name] = np.load(file, mmap_mode="r" if (mmap and name == "features") else None,
                                   allow_pickle=False)
        except Exception as e:  # checked above; a file changed since, or unreadable
            raise CorruptCacheError(f"{file} cannot be loaded ({type(e).__name__}: {e}). {_REBUILD}") from e
    return Bunch(
        **arrays,
        attribute_names=manifest["attribute_names"],
        label_names=manifest.get("label_names"),
        spurious_attribute=manifest.get("spurious_attribute"),
        manifest=manifest,
    )


def split_embeddings(embeddings, attribute=None, *, name=None):
    """Turn a loaded cache into train / val / test splits with group labels.

    Parameters
    ----------
    embeddings : Bunch from :func:`load_embeddings`, or a path
    attribute : str or list of str, default=None
        Attribute(s) paired with the label to form groups; default the
        cache's ``spurious_attribute``.

    Returns
    -------
    Bunch with ``train``, ``val``, ``test`` (each ``X``, ``y``,
    ``group_labels``, ``attribute``), ``group_names``, ``name``.
    Features are row subsets of the memory map (``train`` is a view when the
    training rows are contiguous, else a copy of those rows).
    """
    if not isinstance(embeddings, Bunch):
        embeddings = load_embeddings(embeddings)
    attribute = attribute if attribute is not None else embeddings.spurious_attribute
    if attribute is None:
        raise ValueError(
            "The cache names no spurious attribute: pass attribute=... (one of "
            f"{embeddings.attribute_names})."
        )
    names = [attribute] if isinstance(attribute, str) else list(attribute)
    missing = [a for a in names if a not in embeddings.attribute_names]
    if missing:
        raise ValueError(f"Unknown attribute {missing}; the cache has {embeddings.attribute_names}.")
    cols = [embeddings.attribute_names.index(a) for a in names]
    attr = embeddings.attributes[:, cols]
    attr = attr[:, 0] if len(cols) == 1 else attr
    groups, pairs = make_group_labels(embeddings.labels, attr)
    out = {}
    for split_name, code in SPLITS.items():
        rows = np.flatnonzero(embeddings.split == code)
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:
            X = embeddings.features[rows[0] : rows[-1] + 1]
        else:
            X = embeddings.features[rows]
        out[split_name] = Bunch(
            X=X, y=embeddings.labels[rows], group_labels=groups[rows], attribute=attr[rows], ids=embeddings.ids[rows]
        )
    label_names = embeddings.label_names
    group_names = [
        f"{label_names[y] if label_names else y}, {'/'.join(names)}={a}" for y, a in pairs
    ]
    return Bunch(**out, group_names=group_names, name=name or embeddings.manifest.get("extraction", {}).get("name", "embeddings"))
