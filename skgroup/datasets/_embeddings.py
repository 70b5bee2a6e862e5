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
cache or no manifest, never a half-written cache that loads.
"""

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .._groups import make_group_labels

__all__ = ["save_embeddings", "load_embeddings", "split_embeddings", "SPLITS", "FORMAT"]

FORMAT = "skgroup-embeddings"
FORMAT_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}
_ARRAYS = ("features", "labels", "attributes", "split", "ids")
_CHUNK_ROWS = 65536


def _sha256(path, block=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _atomic_save(path, array):
    """np.save under a temporary name, then rename; chunked for large arrays."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if array.ndim == 2 and array.shape[0] > _CHUNK_ROWS:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
        for start in range(0, array.shape[0], _CHUNK_ROWS):
            out[start : start + _CHUNK_ROWS] = array[start : start + _CHUNK_ROWS]
        out.flush()
        del out
    else:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


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
    features : array-like of shape (n_samples, n_features), float16 or float32
        May be a memory map; it is copied in chunks, never loaded whole.
    labels : array-like of shape (n_samples,), ints
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
        so nothing cached is lost by accident.
    """
    path = Path(path)
    if (path / "manifest.json").exists() and not overwrite:
        raise FileExistsError(
            f"{path} already holds an embeddings cache; pass overwrite=True to replace "
            "it, or choose another folder."
        )
    features = features if isinstance(features, np.ndarray) else np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n_samples, n_features); got shape {features.shape}.")
    if features.dtype not in (np.float16, np.float32):
        raise ValueError(f"features must be float16 or float32; got {features.dtype}.")
    n = features.shape[0]
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {labels.shape}.")
    if attributes is None:
        attributes = np.zeros((n, 0), dtype=np.int64)
    attributes = np.asarray(attributes)
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
    ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},); got {ids.shape}.")

    path.mkdir(parents=True, exist_ok=True)
    manifest_path = path / "manifest.json"
    if manifest_path.exists():  # overwrite: invalidate first, so a crash leaves no mixed cache
        manifest_path.unlink()
    arrays = {
        "features": features,
        "labels": labels.astype(np.int64),
        "attributes": attributes.astype(np.int64),
        "split": split,
        "ids": ids,
    }
    files = {}
    for name in _ARRAYS:
        file = path / f"{name}.npy"
        _atomic_save(file, arrays[name])
        files[name] = _sha256(file)
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
        "extraction": extraction or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path / f".manifest.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, manifest_path)
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
    """The manifest of a complete cache, or None if ``path`` holds none."""
    file = Path(path) / "manifest.json"
    if not file.exists():
        return None
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{file} is not a {FORMAT} manifest.")
    return manifest


def load_embeddings(path, *, mmap=True, verify=False):
    """Load a features cache written by :func:`save_embeddings`.

    Parameters
    ----------
    path : str or Path
    mmap : bool, default=True
        Memory-map ``features`` read-only instead of reading it into memory;
        the estimators train on it in place when its dtype is their training
        dtype (float32).
    verify : bool, default=False
        Recompute every file's sha256 and compare with the manifest.

    Returns
    -------
    Bunch with ``features``, ``labels``, ``attributes``, ``attribute_names``,
    ``split`` (int8 codes), ``ids``, ``label_names``, ``spurious_attribute``
    and ``manifest``.
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
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer skgroup (format_version "
            f"{manifest['format_version']}); upgrade skgroup to read it."
        )
    if verify:
        for name, digest in manifest["files"].items():
            if _sha256(path / f"{name}.npy") != digest:
                raise ValueError(f"{path / (name + '.npy')} does not match its checksum: the cache is corrupt.")
    arrays = {}
    for name in _ARRAYS:
        arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r" if (mmap and name == "features") else None)
    n = manifest["n_samples"]
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ValueError(f"{name}.npy has {arr.shape[0]} rows, the manifest says {n}: the cache is corrupt.")
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
