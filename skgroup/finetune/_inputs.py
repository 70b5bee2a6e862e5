"""What a backbone reads: raw inputs as a dataset, with train-time augmentation for images.

``fit(X, ...)`` of :class:`~skgroup.finetune.FineTuneClassifier` takes what
the backbone consumes: image paths, PIL images or a uint8 image array, texts,
text pairs (tuples or a two-column array), or a dataset object of
:mod:`feature_extraction` (anything with ``__len__`` and ``get(i)``).
:func:`as_inputs` turns each into an :class:`Inputs` with ``get(i)`` giving
the raw sample (a PIL image, a text or a (text, text) tuple), and
:class:`BackboneDataset` prepares samples for a backbone, in the training
view (augmented, seeded per sample and epoch, so a run is reproducible with
any number of loader workers) or the evaluation view.
"""

import math
from pathlib import Path

import numpy as np

__all__ = ["Inputs", "as_inputs", "BackboneDataset", "RandomResizedCropFlip"]


class InputError(ValueError):
    """An input that cannot be read (e.g. an undecodable image file)."""


class Inputs:
    """Raw samples with ``get(i)``, ``describe(i)`` and a modality ('image' or 'text')."""

    def __init__(self, items, modality, kind, root=None):
        self.items = items
        self.modality = modality
        self.kind = kind
        self.root = root
        self._fingerprint = None

    def __len__(self):
        return len(self.items)

    def fingerprint(self):
        """A digest of the samples, for checkpoints (computed once): a dataset by its own
        ``fingerprint()``; paths by the path strings (not the files' contents); texts, pairs, PIL
        images and image arrays by their contents (an array above 64 MiB on a sample of its rows)."""
        if self._fingerprint is None:
            from ..engine._fingerprint import array_digest, digest

            if self.kind == "dataset":
                content = digest(self.items)
            elif self.kind == "array":
                content = array_digest(self.items, sample_rows=True)
            elif self.kind == "pil":
                content = digest([(img.mode, img.size, img.tobytes()) for img in self.items])
            else:
                content = digest([x if isinstance(x, str) else [str(v) for v in x] if self.kind == "pairs" else str(x)
                                  for x in self.items])
            self._fingerprint = {"kind": self.kind, "n": len(self), "root": None if self.root is None else str(self.root),
                                 "content": content}
        return self._fingerprint

    def get(self, i):
        if self.kind == "dataset":
            return self.items.get(i)
        item = self.items[i]
        if self.kind == "paths":
            return _open_image(Path(self.root, item) if self.root else Path(item))
        if self.kind == "array":
            from PIL import Image

            return Image.fromarray(np.asarray(item))
        if self.kind == "pairs":
            return (str(item[0]), str(item[1]))
        if self.kind == "texts":
            return str(item)
        return item  # PIL images

    def describe(self, i):
        if self.kind == "paths":
            return f"image file {self.items[i]!s}"
        if self.kind == "dataset" and hasattr(self.items, "describe"):
            return self.items.describe(i)
        return f"sample {i}"


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: a truncated or corrupt file fails here, not in a worker later
    except FileNotFoundError as exc:
        raise InputError(f"image file not found: {path} (an entry of X). Check the paths.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"cannot decode the image file {path} (an entry of X): {exc}") from exc
    return img


def as_inputs(X, modality):
    """Wrap ``X`` for a backbone of ``modality`` ('image' or 'text'); see the module docstring."""
    if isinstance(X, Inputs):
        return X
    if hasattr(X, "get") and hasattr(X, "__len__") and not isinstance(X, dict):
        data_modality = getattr(X, "modality", modality)
        if data_modality not in (None, modality):
            raise ValueError(f"X is a {data_modality} dataset but the backbone reads {modality}.")
        return Inputs(X, modality, "dataset")
    if isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim in (3, 4):
        if modality != "image":
            raise ValueError(f"X is a uint8 image array but the backbone reads {modality}.")
        return Inputs(X, "image", "array")
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiu":
        raise TypeError(
            f"X is a numeric array of shape {X.shape}: the fine-tuning path reads what the backbone "
            "consumes (image paths, PIL images, a uint8 image array, texts or text pairs); for cached "
            "features use the head estimators (e.g. ERMClassifier) directly."
        )
    items = list(X) if not isinstance(X, list) else X
    if not items:
        raise ValueError("X is empty.")
    # the kind is X[0]'s, and every row must be of it: a row of another kind would be read as
    # something else (an int as the text "3", a 3-tuple cut to a pair, "hi" as the pair ("h", "i"))
    first = items[0]
    if modality == "text":
        kinds = {"texts": ("a text (str)", _is_text), "pairs": ("a (text, text) pair", _is_pair)}
        kind = "pairs" if isinstance(first, (tuple, list, np.ndarray)) else "texts"
        what = "a text backbone reads texts (str) or (text, text) pairs, all rows of one kind"
    else:
        kinds = {"paths": ("an image path (str or Path)", _is_path), "pil": ("a PIL image", _is_pil)}
        kind = "pil" if _is_pil(first) else "paths"
        what = "an image backbone reads image paths, PIL images or a uint8 image array, all rows of one kind"
    label, accepts = kinds[kind]
    for i, item in enumerate(items):
        if not accepts(item):
            expected = f"{label} as X[0] is" if i else f"{label} (or {' / '.join(v[0] for k, v in kinds.items() if k != kind)})"
            raise TypeError(f"X[{i}] is {_show(item)}, not {expected}: {what}.")
    return Inputs(items, modality, kind)


def _is_text(item):
    return isinstance(item, str)


def _is_pair(item):
    return isinstance(item, (tuple, list, np.ndarray)) and len(item) == 2 and all(isinstance(v, str) for v in item)


def _is_path(item):
    return isinstance(item, (str, Path))


def _is_pil(item):
    return hasattr(item, "convert") and hasattr(item, "size") and hasattr(item, "mode")


def _show(item):
    """``item``'s type and a short view of it, for an error message."""
    text = repr(item)
    text = text if len(text) <= 60 else text[:57] + "..."
    name = type(item).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(item, (tuple, list, np.ndarray)):
        inner = ", ".join(sorted({type(v).__name__ for v in item}))
        return f"{article} {name} of {len(item)} ({inner}): {text}"
    return f"{article} {name}: {text}"


class RandomResizedCropFlip:
    """Inception-style random resized crop, then a horizontal flip with probability 1/2.

    The crop covers a fraction of the image's area drawn from ``scale`` and
    an aspect ratio drawn log-uniformly from ``ratio`` (torchvision's
    ``RandomResizedCrop`` algorithm, with its centre-crop fallback after
    10 tries), resized to ``size`` x ``size``. Written with PIL, so
    torchvision stays optional.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear"):
        self.size = int(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation

    def box(self, width, height, rng):
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, w, h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img, rng):
        from PIL import Image

        img = img.convert("RGB") if img.mode != "RGB" else img
        left, top, w, h = self.box(img.size[0], img.size[1], rng)
        resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[self.interpolation]
        img = img.resize((self.size, self.size), resample=resample, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


class BackboneDataset:
    """Samples of ``inputs`` prepared for a backbone (a map-style dataset for ``LoaderBatches``).

    ``augment`` (images only): a :class:`RandomResizedCropFlip` applied
    before the backbone's own preparation, drawn from a generator seeded by
    (seed, epoch, row): the same augmentation for the same row and epoch in
    any process or worker.
    """

    def __init__(self, inputs, backbone, *, augment=None, seed=0):
        self.inputs = inputs
        self.backbone = backbone
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def fingerprint(self):
        """The inputs, the backbone's identity and preprocessing, the augmentation and its seed (not the
        current epoch, which training moves)."""
        from ..engine._fingerprint import describe

        return {"inputs": describe(self.inputs), "backbone": describe(self.backbone),
                "augment": describe(self.augment), "seed": self.seed}

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        item = self.inputs.get(int(i))
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            item = self.augment(item, rng)
            if hasattr(getattr(self.backbone, "preprocessing", None), "to_uint8"):
                return np.asarray(item, dtype=np.uint8)  # already the crop the backbone reads
        return self.backbone.prepare(item)
