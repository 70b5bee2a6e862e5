"""Datasets: the built-in synthetic benchmark, real-data loaders, cached embeddings."""

from ._embeddings import (
    CorruptCacheError,
    check_embeddings,
    load_embeddings,
    read_manifest,
    save_embeddings,
    split_embeddings,
)
from ._real import NEGATION_WORDS, get_data_home, load_celeba_attributes, load_law_school, load_mnli
from ._synthetic import make_mtl_toy, make_spurious_benchmark, make_spurious_features

__all__ = [
    "CorruptCacheError",
    "check_embeddings",
    "NEGATION_WORDS",
    "get_data_home",
    "load_celeba_attributes",
    "load_embeddings",
    "load_law_school",
    "load_mnli",
    "make_mtl_toy",
    "make_spurious_benchmark",
    "make_spurious_features",
    "read_manifest",
    "save_embeddings",
    "split_embeddings",
]
