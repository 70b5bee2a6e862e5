"""Datasets the stage reads: images (metadata table, class folders, arrays) and texts (CSV / TSV / JSONL, arrays).

Every dataset carries, besides its samples, what travels into the cache
with the features: ``labels`` (int64), ``attributes`` (n, k) int64 with
``attribute_names``, ``split`` (int8: 0 train, 1 val, 2 test, -1 none),
stable ``ids`` (str), ``label_names`` and ``spurious_attribute``; and a
``fingerprint()`` that changes whenever any of it, or a sample, changes.
"""

import csv
import gzip
import hashlib
import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from skgroup.datasets._embeddings import _SPLIT_NAMES, encode_split

__all__ = [
    "DecodeError",
    "MetadataError",
    "ExtractionDataset",
    "TextDataset",
    "ImageFileDataset",
    "ArrayImageDataset",
    "metadata_image_dataset",
    "image_folder_dataset",
    "load_dataset",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_IMAGE_COLUMNS = ("img_filename", "image_filename", "filename", "file_name", "image_id", "image", "img_path", "path",
                  "file")
_LABEL_COLUMNS = ("y", "label", "target", "class")
_SPLIT_COLUMNS = ("split", "partition", "fold")
_ID_COLUMNS = ("img_id", "id", "index", "uid")
#: Label values that mean "no label" (MultiNLI marks pairs without a gold label with "-"); JSON null too.
MISSING_LABELS = ("", "-")


class DecodeError(ValueError):
    """A sample could not be read or decoded."""


class MetadataError(ValueError):
    """A metadata table lacks a needed column or holds values that cannot be used."""


def _hash_array(h, a):
    a = np.asarray(a)
    if a.dtype.kind in "OUS":
        for s in a.astype(str).ravel():
            b = s.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    else:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())


class ExtractionDataset:
    """Base class: samples plus the metadata that goes into the cache.

    Subclasses implement ``get(i)`` (the raw sample: a PIL image, a text or
    a (text, text_pair) tuple; raise :class:`DecodeError` when it cannot be
    read), ``describe(i)`` (for messages) and ``_content_hash(h)``.
    """

    modality = None

    def __init__(self, labels, *, attributes=None, attribute_names=None, split=None, ids=None, label_names=None,
                 spurious_attribute=None, name="dataset"):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D; got shape {labels.shape}.")
        if labels.dtype.kind not in "iub":
            raise ValueError(f"labels must be integers; got dtype {labels.dtype}. Map names to ints with label_names.")
        n = labels.shape[0]
        self.labels = labels.astype(np.int64)
        if attributes is None:
            attributes = np.zeros((n, 0), dtype=np.int64)
        attributes = np.asarray(attributes)
        if attributes.ndim == 1:
            attributes = attributes[:, None]
        if attributes.shape[0] != n or attributes.dtype.kind not in "iub":
            raise ValueError(f"attributes must be integers with {n} rows; got {attributes.dtype} {attributes.shape}.")
        self.attributes = attributes.astype(np.int64)
        if attribute_names is None:
            attribute_names = [f"attribute_{j}" for j in range(self.attributes.shape[1])]
        self.attribute_names = [str(a) for a in attribute_names]
        if len(self.attribute_names) != self.attributes.shape[1]:
            raise ValueError(f"{len(self.attribute_names)} attribute_names for {self.attributes.shape[1]} columns.")
        if spurious_attribute is None and len(self.attribute_names) == 1:
            spurious_attribute = self.attribute_names[0]
        if spurious_attribute is not None and spurious_attribute not in self.attribute_names:
            raise ValueError(f"spurious_attribute {spurious_attribute!r} is not one of {self.attribute_names}.")
        self.spurious_attribute = spurious_attribute
        self.split = encode_split(split, n)
        self.ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
        if self.ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},); got {self.ids.shape}.")
        if len(set(self.ids.tolist())) != n:
            raise ValueError("ids must be unique: they identify samples in the cache.")
        self.label_names = list(label_names) if label_names is not None else None
        self.name = name
        self._fingerprint = None

    def __len__(self):
        return self.labels.shape[0]

    def get(self, i):
        raise NotImplementedError

    def describe(self, i):
        return f"sample {i} (id {self.ids[i]})"

    def _content_hash(self, h):
        raise NotImplementedError

    def fingerprint(self):
        """sha256 of the samples and all metadata (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{type(self).__name__}|{len(self)}".encode())
            for a in (self.labels, self.attributes, self.split, self.ids):
                _hash_array(h, a)
            h.update(json.dumps([self.attribute_names, self.label_names, self.spurious_attribute]).encode())
            self._content_hash(h)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self):
        """What identifies the data in an extraction (compared); the name is not part of it."""
        return {"modality": self.modality, "n_samples": len(self), "fingerprint": self.fingerprint()}

    def source(self):
        """Recorded with the cache, not compared."""
        return {"class": type(self).__name__, "name": self.name}


# ---------------------------------------------------------------------------
# text


class TextDataset(ExtractionDataset):
    """Texts, or sentence pairs (``text`` with ``text_pair``), with labels and attributes.

    Build it from arrays, or from a file with :meth:`from_file`.
    """

    modality = "text"

    def __init__(self, text, labels, *, text_pair=None, attributes=None, attribute_names=None, split=None, ids=None,
                 label_names=None, spurious_attribute=None, name="text"):
        super().__init__(labels, attributes=attributes, attribute_names=attribute_names, split=split, ids=ids,
                         label_names=label_names, spurious_attribute=spurious_attribute, name=name)
        self.text = [str(t) for t in text]
        self.text_pair = None if text_pair is None else [str(t) for t in text_pair]
        for what, col in (("text", self.text), ("text_pair", self.text_pair)):
            if col is not None and len(col) != len(self):
                raise ValueError(f"{what} has {len(col)} entries for {len(self)} labels.")

    def get(self, i):
        return self.text[i] if self.text_pair is None else (self.text[i], self.text_pair[i])

    def _content_hash(self, h):
        for col in (self.text, self.text_pair or []):
            _hash_array(h, np.asarray(col, dtype=object))

    @classmethod
    def from_file(cls, path, *, text_columns, label_column="label", attribute_columns=(), split_column=None,
                  id_column=None, label_names=None, drop_unknown_labels=False, missing_labels="raise",
                  spurious_attribute=None, delimiter=None, quoting=None, encoding="utf-8", name=None):
        """Read a CSV, TSV or JSONL file (optionally ``.gz``).

        Parameters
        ----------
        text_columns : str or list of 1 or 2 str
            One text column, or two for sentence pairs (premise, hypothesis).
        label_column : str
            Integer labels (kept as they are: 0 stays 0), or names (mapped to
            ``label_names`` order, or sorted names when ``label_names`` is
            None). A column mixing integers and names is an error.
        attribute_columns : list of str or dict {column: name}
            Integer or boolean attribute columns.
        split_column, id_column : str, optional
            Split (train/val/test or 0/1/2) and a stable id (default: the row number).
        label_names : list of str, optional
            Order of the label names; rows with another label are an error,
            or dropped with ``drop_unknown_labels=True`` (which drops missing
            labels too). A label column of integer codes is kept as is
            (codes index ``label_names``).
        missing_labels : {'raise', 'skip'}, default='raise'
            Rows whose label is missing (blank, ``-`` as MultiNLI marks pairs
            without a gold label, or JSON null): 'raise' stops with an error
            giving their count and first line numbers; 'skip' leaves them
            out with a warning giving the count. They never become a class.
        delimiter, quoting
            CSV dialect. TSV files are read with quoting off by default
            (``csv.QUOTE_NONE``): sentences hold quote characters that
            would otherwise merge rows.
        encoding : str, default='utf-8'
            Text encoding of the file (e.g. 'latin-1'; CLI --encoding).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {str(path)!r} (argument dataset).")
        _check_policy(missing_labels)
        header, rows, lines = _read_table(path, delimiter=delimiter, quoting=quoting, encoding=encoding)
        text_columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
        if not 1 <= len(text_columns) <= 2:
            raise ValueError(f"text_columns must name 1 or 2 columns; got {text_columns}.")
        attr_map = dict(attribute_columns) if isinstance(attribute_columns, dict) else {
            c: c for c in ([attribute_columns] if isinstance(attribute_columns, str) else attribute_columns)}
        needed = {"text_columns": text_columns, "label_column": [label_column], "attribute_columns": list(attr_map),
                  "split_column": [split_column] if split_column else [], "id_column": [id_column] if id_column else []}
        _check_columns(path, header, needed)
        raw_labels = [r[label_column] for r in rows]
        labels, label_names, keep = _encode_labels(raw_labels, label_names, drop_unknown_labels, path, label_column,
                                                   missing_labels=missing_labels, lines=lines)
        rows = [r for r, k in zip(rows, keep) if k]
        attributes = np.array([[_to_int(r[c], c, path) for c in attr_map] for r in rows], dtype=np.int64).reshape(
            len(rows), len(attr_map))
        return cls(
            [r[text_columns[0]] for r in rows],
            labels,
            text_pair=[r[text_columns[1]] for r in rows] if len(text_columns) == 2 else None,
            attributes=attributes,
            attribute_names=list(attr_map.values()),
            split=[r[split_column] for r in rows] if split_column else None,
            ids=[str(r[id_column]) for r in rows] if id_column else [str(i) for i, k in enumerate(keep) if k],
            label_names=label_names,
            spurious_attribute=spurious_attribute,
            name=name or path.name.split(".")[0],
        )


def _open_text(path, encoding):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _read_table(path, *, delimiter=None, quoting=None, encoding="utf-8"):
    """(header, list of row dicts, line number of each row) of a CSV / TSV / JSONL file."""
    try:
        return _read_table_decoded(path, delimiter=delimiter, quoting=quoting, encoding=encoding)
    except UnicodeDecodeError as e:
        raise MetadataError(
            f"{path} is not valid {encoding} text ({e.reason} at byte {e.start} of a block: "
            f"{e.object[max(0, e.start - 8) : e.end + 8]!r}). Pass its encoding: encoding='latin-1' (CLI "
            "--encoding latin-1), or e.g. cp1252 for files saved by Excel on Windows."
        ) from None
    except LookupError as e:  # unknown codec name
        raise ValueError(f"unknown encoding {encoding!r} for {path} ({e}): use e.g. 'utf-8' or 'latin-1'.") from None


def _read_table_decoded(path, *, delimiter, quoting, encoding):
    kind = path.name.lower().removesuffix(".gz").rsplit(".", 1)[-1]
    with _open_text(path, encoding) as f:
        if kind in ("jsonl", "ndjson", "json"):
            rows, lines = [], []
            for k, line in enumerate(f):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise MetadataError(f"{path}: line {k + 1} is not JSON ({e}); expected JSON lines.") from e
                    lines.append(k + 1)
            header = sorted({key for r in rows for key in r})
            return header, rows, lines
        if delimiter is None:
            delimiter = "\t" if kind == "tsv" else ","
        if quoting is None:
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader)
        except StopIteration:
            raise MetadataError(f"{path} is empty.") from None
        header = [h.strip() for h in header]
        rows, lines = [], []
        for k, r in enumerate(reader):
            if not r:
                continue
            if len(r) != len(header):
                raise MetadataError(f"{path}: row {k + 2} has {len(r)} fields, the header {len(header)}; "
                                    "check delimiter/quoting.")
            rows.append(dict(zip(header, r)))
            lines.append(reader.line_num)
    return header, rows, lines


def _check_columns(path, header, needed):
    problems = [f"{arg}={col!r}" for arg, cols in needed.items() for col in cols if col not in header]
    if problems:
        raise MetadataError(
            f"{path} lacks the column(s) {', '.join(problems)}; its columns are {list(header)}. "
            "Name the right columns with those arguments (CLI: --image-column, --label-column, "
            "--attribute-columns, --split-column, --id-column, --text-columns)."
        )


def _to_int(value, column, path):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    s = str(value).strip()
    if s.lower() in ("true", "false"):
        return int(s.lower() == "true")
    try:
        f = float(s)
    except ValueError:
        raise MetadataError(f"{path}: column {column!r} holds {value!r}, not an integer.") from None
    if f != int(f):
        raise MetadataError(f"{path}: column {column!r} holds {value!r}, not an integer.")
    return int(f)


def _check_policy(missing_labels):
    if missing_labels not in ("raise", "skip"):
        raise ValueError(f"missing_labels must be 'raise' or 'skip'; got {missing_labels!r}.")


def _is_missing(value):
    return value is None or (isinstance(value, str) and value.strip() in MISSING_LABELS)


def _shown(lines, limit=5):
    return ", ".join(map(str, lines[:limit])) + (" ..." if len(lines) > limit else "")


def _missing_label_rows(raw, policy, path, column, lines, *, also_skip=False):
    """Mask of the rows that have a label; rows without one raise (policy 'raise') or are counted and skipped."""
    missing = [_is_missing(v) for v in raw]
    n_missing = sum(missing)
    if n_missing:
        where = [line for line, m in zip(lines, missing) if m]
        if policy == "raise" and not also_skip:
            raise MetadataError(
                f"{path}: column {column!r} has no label (blank or '-') in {n_missing} of {len(raw)} rows, at "
                f"line(s) {_shown(where)}. Fill them in, or pass missing_labels='skip' (CLI --missing-labels skip) "
                "to leave those rows out."
            )
        warnings.warn(f"{path}: left out {n_missing} of {len(raw)} rows with no label (blank or '-') in column "
                      f"{column!r}, at line(s) {_shown(where)}.", UserWarning, stacklevel=4)
    return [not m for m in missing]


def _is_int(value):
    try:
        _to_int(value, "", "")
        return True
    except MetadataError:
        return False


def _encode_labels(raw, label_names, drop_unknown, path, column, *, missing_labels="raise", lines=None):
    """(int64 codes of the kept rows, label_names, keep mask over ``raw``).

    Missing labels (blank, '-', None) never become a class: they raise or are skipped (``missing_labels``).
    Without ``label_names`` integer labels keep their own codes and names are numbered in sorted order; a
    column mixing the two is an error (an integer would silently get another code).
    """
    lines = list(lines) if lines is not None else list(range(2, len(raw) + 2))
    raw = [v if v is None or isinstance(v, (int, np.integer)) else str(v).strip() for v in raw]
    keep = _missing_label_rows(raw, missing_labels, path, column, lines, also_skip=drop_unknown)
    present = [v for v, k in zip(raw, keep) if k]
    if label_names is None:
        is_int = [_is_int(v) for v in present]
        if all(is_int):
            return np.array([_to_int(v, column, path) for v in present], dtype=np.int64), None, keep
        if any(is_int):
            ints = sorted({str(v) for v, i in zip(present, is_int) if i})[:3]
            names = sorted({str(v) for v, i in zip(present, is_int) if not i})[:3]
            raise MetadataError(
                f"{path}: column {column!r} mixes integer labels ({', '.join(ints)}) and names "
                f"({', '.join(names)}), so neither can be numbered safely. Pass label_names in code order "
                "(CLI --label-names), or make the column all integers or all names."
            )
        label_names = sorted({str(v) for v in present})
    index = {str(name): k for k, name in enumerate(label_names)}
    codes = None
    if not all(str(v) in index for v in present):  # integer codes into label_names (names that are numbers match first)
        try:
            codes = [_to_int(v, column, path) for v in present]
        except MetadataError:
            codes = None
    if codes is not None:
        known = [0 <= c < len(label_names) for c in codes]
        if not all(known) and not drop_unknown:
            bad = sorted({c for c, k in zip(codes, known) if not k})
            raise MetadataError(f"{path}: column {column!r} holds label codes {bad[:5]} outside "
                                f"0..{len(label_names) - 1} for label_names {list(label_names)}; "
                                "pass drop_unknown_labels=True to leave those rows out.")
        values = codes
    else:
        known = [str(v) in index for v in present]
        if not all(known) and not drop_unknown:
            bad = sorted({str(v) for v, k in zip(present, known) if not k})
            raise MetadataError(f"{path}: column {column!r} holds labels {bad[:5]} not in label_names "
                                f"{label_names}; pass drop_unknown_labels=True to leave those rows out.")
        values = [index.get(str(v), -1) for v in present]
    if not all(known):
        n_unknown = len(known) - sum(known)
        warnings.warn(f"{path}: left out {n_unknown} rows whose label in column {column!r} is not one of "
                      f"label_names {list(label_names)} (drop_unknown_labels=True).", UserWarning, stacklevel=3)
    it = iter(known)
    keep = [k and next(it) for k in keep]
    labels = np.array([v for v, k in zip(values, known) if k], dtype=np.int64)
    return labels, list(label_names), keep


# ---------------------------------------------------------------------------
# images


def _open_image(path):
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()  # decode now: a truncated or corrupt file fails here, not later
    return img


class ImageFileDataset(ExtractionDataset):
    """Image files (relative to ``root``) with labels and metadata.

    ``fingerprint='content'`` (default) hashes every file's bytes, so a
    changed image is never served from a stale cache; ``'stat'`` hashes names,
    sizes and modification times only (fast for huge folders, but a copied
    folder then looks like a different dataset).
    """

    modality = "image"

    def __init__(self, root, files, labels, *, fingerprint="content", **meta):
        meta.setdefault("ids", list(files))
        super().__init__(labels, **meta)
        self.root = Path(root)
        self.files = [str(f) for f in files]
        if len(self.files) != len(self):
            raise ValueError(f"{len(self.files)} files for {len(self)} labels.")
        if fingerprint not in ("content", "stat"):
            raise ValueError(f"fingerprint must be 'content' or 'stat'; got {fingerprint!r}.")
        self.fingerprint_mode = fingerprint

    def get(self, i):
        path = self.root / self.files[i]
        try:
            return _open_image(path)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise DecodeError(f"cannot decode image {path} (id {self.ids[i]}): {type(e).__name__}: {e}") from e

    def describe(self, i):
        return str(self.root / self.files[i])

    def _file_digest(self, rel):
        path = self.root / rel
        try:
            if self.fingerprint_mode == "stat":
                st = path.stat()
                return f"{st.st_size}:{st.st_mtime_ns}"
            h = hashlib.blake2b()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            return h.hexdigest()
        except OSError:
            return "missing"  # reported by the extraction as a decode error

    def _content_hash(self, h):
        h.update(f"fingerprint={self.fingerprint_mode}".encode())
        with ThreadPoolExecutor(8) as pool:  # I/O bound; hashlib releases the GIL
            for rel, digest in zip(self.files, pool.map(self._file_digest, self.files, chunksize=64)):
                h.update(f"{rel}\0{digest}\n".encode("utf-8", "surrogatepass"))

    def source(self):
        return {**super().source(), "root": str(self.root.resolve())}


class ArrayImageDataset(ExtractionDataset):
    """Images held in memory: uint8 array (n, H, W) grey or (n, H, W, 3) RGB."""

    modality = "image"

    def __init__(self, images, labels, **meta):
        super().__init__(labels, **meta)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise ValueError(f"images must be uint8 (n, H, W) or (n, H, W, 3); got {images.dtype} {images.shape}.")
        if images.shape[0] != len(self):
            raise ValueError(f"{images.shape[0]} images for {len(self)} labels.")
        self.images = images

    def get(self, i):
        from PIL import Image

        return Image.fromarray(self.images[i])

    def _content_hash(self, h):
        _hash_array(h, self.images)


def _detect(header, candidates, given, arg):
    if given is not None:
        return given
    for c in candidates:
        if c in header:
            return c
    raise MetadataError(f"cannot tell which column is {arg} among {list(header)}; pass {arg}=...")


_LAYOUTS = {
    # Waterbirds as released with Group DRO (Sagawa et al.): img_id, img_filename, y, split, place, place_filename
    "waterbirds": dict(metadata="metadata.csv", image_column="img_filename", label_column="y", split_column="split",
                       attribute_columns={"place": "place"}, label_names=["landbird", "waterbird"],
                       spurious_attribute="place"),
    # CelebA in the same metadata.csv layout (y = Blond_Hair, place = Male), e.g. BalancingGroups' metadata_celeba.csv
    "celeba": dict(metadata="metadata.csv", image_column="img_filename", label_column="y", split_column="split",
                   attribute_columns={"place": "male"}, label_names=["not blond", "blond"],
                   spurious_attribute="male"),
    # CelebA as released with Group DRO: list_attr_celeba.csv (+-1), list_eval_partition.csv, img_align_celeba/
    "celeba-attr": dict(metadata="list_attr_celeba.csv", image_column="image_id", label_column="Blond_Hair",
                        attribute_columns={"Male": "male"}, split_file="list_eval_partition.csv",
                        image_dir="img_align_celeba", label_names=["not blond", "blond"], spurious_attribute="male"),
}


def metadata_image_dataset(root, metadata=None, *, layout=None, image_column=None, label_column=None,
                           attribute_columns=None, split_column=None, id_column=None, split_file=None, image_dir=None,
                           label_names=None, spurious_attribute=None, missing_labels="raise", encoding="utf-8",
                           fingerprint="content", name=None):
    """Images listed in a metadata table, as Waterbirds and CelebA are released for group-robustness work.

    Parameters
    ----------
    root : folder holding the table and the images.
    metadata : str, default 'metadata.csv'
        The table (CSV; relative to ``root``).
    layout : {'waterbirds', 'celeba', 'celeba-attr'}, optional
        Column presets. 'waterbirds' and 'celeba': ``img_filename, y, split,
        place`` (place is the background for Waterbirds, Male for CelebA);
        'celeba-attr': ``list_attr_celeba.csv`` (+-1 attributes, label
        Blond_Hair, attribute Male), ``list_eval_partition.csv`` and
        ``img_align_celeba/``. Without a layout the columns are detected
        (image: img_filename / filename / image_id / ...; label: y / label /
        target; split: split / partition) and attributes are ``place`` if
        present; any argument overrides.
    attribute_columns : list of str or dict {column: name}
        Columns holding only -1 and 1 (CelebA), labels included, are mapped to 0 / 1.
    split_file : str, optional
        A separate table (image column + a split column) for the split.
    image_dir : str, optional
        Folder of the images relative to ``root`` (default ``root``).
    missing_labels : {'raise', 'skip'}, default='raise'
        Rows with a blank or ``-`` label: an error giving their count and
        line numbers, or left out with a warning giving the count.
        Labels must be integers (kept as they are; a column of only -1 and
        1 becomes 0 / 1).
    encoding : str, default='utf-8'
        Text encoding of the tables (e.g. 'latin-1'; CLI --encoding).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {str(root)!r} (argument dataset).")
    if layout and layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}; got {layout!r}.")
    preset = dict(_LAYOUTS[layout]) if layout else {}
    metadata = metadata or preset.get("metadata", "metadata.csv")
    table = root / metadata
    if not table.is_file():
        raise FileNotFoundError(f"metadata file not found: {table} (argument metadata).")
    _check_policy(missing_labels)
    header, rows, lines = _read_table(table, encoding=encoding)
    image_column = _detect(header, _IMAGE_COLUMNS, image_column or preset.get("image_column"), "image_column")
    label_column = _detect(header, _LABEL_COLUMNS, label_column or preset.get("label_column"), "label_column")
    split_file = split_file or preset.get("split_file")
    if split_column is None and not split_file:
        split_column = preset.get("split_column") or next((c for c in _SPLIT_COLUMNS if c in header), None)
    if attribute_columns is None:
        attribute_columns = preset.get("attribute_columns") or ({"place": "place"} if "place" in header else {})
    attr_map = dict(attribute_columns) if isinstance(attribute_columns, dict) else {c: c for c in attribute_columns}
    id_column = id_column or preset.get("id_column")
    _check_columns(table, header, {"image_column": [image_column], "label_column": [label_column],
                                   "attribute_columns": list(attr_map),
                                   "split_column": [split_column] if split_column else [],
                                   "id_column": [id_column] if id_column else []})
    label_names = label_names or preset.get("label_names")
    keep = _missing_label_rows([r[label_column] for r in rows], missing_labels, table, label_column, lines)
    rows = [r for r, k in zip(rows, keep) if k]
    labels = np.array(_pm_one_column([_to_int(r[label_column], label_column, table) for r in rows]), dtype=np.int64)
    attr_cols = [[_to_int(r[c], c, table) for r in rows] for c in attr_map]
    attributes = np.array([_pm_one_column(col) for col in attr_cols], dtype=np.int64).T
    attributes = attributes.reshape(len(rows), len(attr_map))
    if split_file:
        split = _split_from_file(root / split_file, [r[image_column] for r in rows], encoding=encoding)
    else:
        split = [r[split_column] for r in rows] if split_column else None
    image_dir = image_dir or preset.get("image_dir") or ""
    files = [str(Path(image_dir) / r[image_column]) if image_dir else r[image_column] for r in rows]
    return ImageFileDataset(
        root, files, labels, fingerprint=fingerprint, attributes=attributes, attribute_names=list(attr_map.values()),
        split=split, ids=[str(r[id_column]) for r in rows] if id_column else [r[image_column] for r in rows],
        label_names=label_names, spurious_attribute=spurious_attribute or preset.get("spurious_attribute"),
        name=name or root.name)


def _pm_one_column(col):
    values = set(col)
    if values <= {-1, 1}:  # CelebA's +-1 attributes
        return [int(v == 1) for v in col]
    return col


def _split_from_file(path, images, *, encoding="utf-8"):
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path} (argument split_file).")
    header, rows, _ = _read_table(path, encoding=encoding)
    image_col = _detect(header, _IMAGE_COLUMNS, None, "the split file's image column")
    split_col = _detect(header, _SPLIT_COLUMNS, None, "the split file's split column")
    table = {r[image_col]: r[split_col] for r in rows}
    missing = [im for im in images if im not in table]
    if missing:
        raise MetadataError(f"{path} has no split for {len(missing)} images, e.g. {missing[:3]}.")
    return [table[im] for im in images]


def image_folder_dataset(root, *, fingerprint="content", name=None):
    """A plain folder per class (``root/<class>/<image>``), or ``root/{train,val,test}/<class>/<image>``.

    Classes are the sorted folder names; ids are the paths relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {str(root)!r} (argument dataset).")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    # only word split names: numeric folders 0/1/2 are class folders, not splits
    split_dirs = [d for d in subdirs if d.lower() in _SPLIT_NAMES and not d.lstrip("-").isdigit()
                  and _SPLIT_NAMES[d.lower()] >= 0]
    parts = [(d, _SPLIT_NAMES[d.lower()]) for d in split_dirs] if split_dirs and split_dirs == subdirs else [("", -1)]
    classes = sorted({c.name for part, _ in parts for c in (root / part).iterdir()
                      if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise MetadataError(f"{root} has no class folders (expected root/<class>/<image>).")
    files, labels, split = [], [], []
    for part, code in parts:
        for k, c in enumerate(classes):
            folder = root / part / c
            if not folder.is_dir():
                continue
            for f in sorted(folder.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    files.append(str(f.relative_to(root)))
                    labels.append(k)
                    split.append(code)
    if not files:
        raise MetadataError(f"{root} holds no images with suffixes {IMAGE_SUFFIXES}.")
    return ImageFileDataset(root, files, labels, fingerprint=fingerprint, split=np.array(split, dtype=np.int8),
                            label_names=classes, name=name or root.name)


def load_dataset(path, **options):
    """A dataset from a path: a text table (.csv/.tsv/.jsonl[.gz]), a folder with a metadata table, or class folders.

    ``options`` go to :meth:`TextDataset.from_file`, :func:`metadata_image_dataset`
    or :func:`image_folder_dataset`.
    """
    if isinstance(path, ExtractionDataset):
        if options:
            raise ValueError("dataset options apply to a dataset path, not a dataset object.")
        return path
    path = Path(path)
    if path.is_file():
        if "text_columns" not in options:
            raise ValueError(f"{path} is a table: say which column(s) hold the text with text_columns=... "
                             "(CLI: --text-columns).")
        return TextDataset.from_file(path, **options)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {str(path)!r} (argument dataset).")
    layout = options.get("layout")
    metadata = options.get("metadata") or (_LAYOUTS[layout]["metadata"] if layout in _LAYOUTS else "metadata.csv")
    if (path / metadata).is_file():
        return metadata_image_dataset(path, **options)
    if options.get("metadata") or layout:
        raise FileNotFoundError(f"metadata file not found: {path / metadata} (argument metadata).")
    allowed = {"fingerprint", "name"}
    if set(options) - allowed:
        raise ValueError(f"{path} has no metadata.csv, so it is read as class folders, which take only "
                         f"{sorted(allowed)}; got {sorted(set(options) - allowed)}.")
    return image_folder_dataset(path, **options)
