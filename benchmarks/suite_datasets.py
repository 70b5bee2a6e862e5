"""The datasets of the benchmark suite (``benchmarks/suite.py``): shapes the defaults were not tuned on.

Every loader returns a :class:`Dataset`: ``train``, ``val``, ``test`` (each
``X``, ``y``, ``group_labels``), ``name``, ``shape`` and how it was made.
Real data comes from ``$SKGROUP_DATA`` (the project's ``../shared/data``
when unset, see ``_data.py``); extracted features are cached under the
cache root (``--cache-root``, else ``$SKGROUP_CACHE``, else
``~/skgroup_data/cache``), never in the repository.

=================  ======  ========  =====  =======  ======================================
name               train   features  class  groups   what
=================  ======  ========  =====  =======  ======================================
synthetic          3,000   200       2      4        Sagawa et al. (2020b), balanced val/test
celeba-3k          3,000   38        2      4        CelebA attributes, 3,000 / 1,000 rows drawn
law                13,079  15        2      4        LSAC first-year pass x race (White or not)
law-sex            13,077  22        2      4        the same table, sex as the attribute
mnli-minilm        4,911   1,536     3      6        MultiNLI dev x all-MiniLM-L6-v2, negation
fashion-lite0      20,000  1,280     2      4        Fashion-MNIST x EfficientNet-Lite0, background
celeba             162,770 38        2      4        CelebA attributes, Blond_Hair x Male
celeba-glasses     162,770 38        2      4        CelebA attributes, Eyeglasses x Male
=================  ======  ========  =====  =======  ======================================

The synthetic draw and the 3,000-row CelebA cut are fixed (seed 0): the
suite's seeds vary the methods' randomness, not the data.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from _data import use_project_data

__all__ = ["Dataset", "DATASETS", "load", "get_suite_cache_root"]


def get_suite_cache_root(cache_root=None):
    """``cache_root``, else ``$SKGROUP_CACHE``, else ``~/skgroup_data/cache``."""
    if cache_root is not None:
        return Path(cache_root).expanduser()
    if os.environ.get("SKGROUP_CACHE"):
        return Path(os.environ["SKGROUP_CACHE"]).expanduser()
    return Path("~/skgroup_data/cache").expanduser()


@dataclass
class Dataset:
    name: str
    train: Bunch
    val: Bunch
    test: Bunch
    kind: str
    description: str
    group_names: list = field(default_factory=list)

    @property
    def shape(self):
        return {
            "n_train": int(len(self.train.y)),
            "n_val": int(len(self.val.y)),
            "n_test": int(len(self.test.y)),
            "n_features": int(self.train.X.shape[1]),
            "n_classes": int(len(np.unique(self.train.y))),
            "n_groups": int(len(np.unique(self.train.group_labels))),
            "min_train_group": int(np.bincount(np.unique(self.train.group_labels, return_inverse=True)[1]).min()),
            "min_val_group": int(np.bincount(np.unique(self.val.group_labels, return_inverse=True)[1]).min()),
            "min_test_group": int(np.bincount(np.unique(self.test.group_labels, return_inverse=True)[1]).min()),
        }

    @property
    def majority_rate(self):
        """Test accuracy of always answering the training split's most frequent class."""
        values, counts = np.unique(self.train.y, return_counts=True)
        return float(np.mean(self.test.y == values[np.argmax(counts)]))


def _split(part):
    return Bunch(X=np.ascontiguousarray(part.X, dtype=np.float32), y=np.asarray(part.y),
                 group_labels=np.asarray(part.group_labels))


def _from_bunch(name, bunch, kind, description):
    return Dataset(name, _split(bunch.train), _split(bunch.val), _split(bunch.test), kind, description,
                   list(bunch.get("group_names", [])))


def _synthetic(cache_root, quick):
    from skgroup.datasets import make_spurious_benchmark

    n = (400, 200, 400) if quick else (3000, 1000, 2000)
    b = make_spurious_benchmark(*n, random_state=0)
    return _from_bunch("synthetic", b, "synthetic",
                       f"make_spurious_benchmark({n[0]}, {n[1]}, {n[2]}, random_state=0): 100 core + 100 "
                       "spurious Gaussian features, 90 % majority groups in train, balanced val and test")


def _subsample(data, n_train, n_val, seed):
    rng = np.random.RandomState(seed)
    out = dict(data)
    for split, n in (("train", n_train), ("val", n_val)):
        part = data[split]
        rows = np.sort(rng.choice(len(part.y), n, replace=False))
        out[split] = Bunch(**{k: v[rows] for k, v in part.items()})
    return Bunch(**out)


def _celeba(cache_root, quick):
    from skgroup.datasets import load_celeba_attributes

    return _from_bunch("celeba", load_celeba_attributes(), "tabular",
                       "load_celeba_attributes(): Blond_Hair from the other 38 binary attributes, spurious Male; "
                       "official split")


def _celeba_3k(cache_root, quick):
    from skgroup.datasets import load_celeba_attributes

    data = _subsample(load_celeba_attributes(), 3000, 1000, seed=0)
    return _from_bunch("celeba-3k", data, "tabular",
                       "CelebA attributes (Blond_Hair x Male), 3,000 training and 1,000 validation rows drawn "
                       "uniformly (RandomState(0)); the full test split")


def _celeba_glasses(cache_root, quick):
    from skgroup.datasets import load_celeba_attributes

    return _from_bunch("celeba-glasses", load_celeba_attributes(target="Eyeglasses", attribute="Male"), "tabular",
                       "load_celeba_attributes(target='Eyeglasses', attribute='Male'): 6.5 % positives, "
                       "glasses commoner among men; official split")


def _law(cache_root, quick):
    from skgroup.datasets import load_law_school

    return _from_bunch("law", load_law_school(attribute="race"), "tabular",
                       "load_law_school(): first-year pass x race (White or not), group-stratified 60/20/20 split "
                       "(seed 0)")


def _law_sex(cache_root, quick):
    from skgroup.datasets import load_law_school

    return _from_bunch("law-sex", load_law_school(attribute="sex"), "tabular",
                       "load_law_school(attribute='sex'): first-year pass x sex, race one-hot among the features")


def _embeddings(name, path, kind, description):
    from skgroup.datasets import split_embeddings

    s = split_embeddings(path)
    return Dataset(name, _split(s.train), _split(s.val), _split(s.test), kind, description,
                   list(s.get("group_names", [])))


def _mnli(cache_root, quick):
    from feature_extraction.real import build_mnli_minilm

    path = build_mnli_minilm(cache_root=get_suite_cache_root(cache_root), progress=False)
    return _embeddings("mnli-minilm", path, "text",
                       "feature_extraction.real.build_mnli_minilm(): MultiNLI dev-matched, all-MiniLM-L6-v2 "
                       "siamese [u, v, |u-v|, u*v], label x negation word (6 groups), group-stratified "
                       "50/25/25 split")


def _fashion(cache_root, quick):
    from feature_extraction.real import build_fashion_spurious

    path = build_fashion_spurious(cache_root=get_suite_cache_root(cache_root), progress=False)
    return _embeddings("fashion-lite0", path, "image",
                       "feature_extraction.real.build_fashion_spurious(): tops vs outerwear on a blue / orange "
                       "background (95 % agreement in train, independent in val and test), EfficientNet-Lite0 "
                       "at 112 px")


#: name -> loader(cache_root, quick); in the order the suite runs them (small first)
DATASETS = {
    "synthetic": _synthetic,
    "celeba-3k": _celeba_3k,
    "law": _law,
    "law-sex": _law_sex,
    "mnli-minilm": _mnli,
    "fashion-lite0": _fashion,
    "celeba": _celeba,
    "celeba-glasses": _celeba_glasses,
}


def load(name, cache_root=None, quick=False):
    """The suite dataset ``name`` (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASETS)}.")
    use_project_data()
    return DATASETS[name](cache_root, quick)
