"""Feature extraction: cache penultimate embeddings of pretrained backbones for skgroup.

One call turns a backbone and a dataset into a features cache in the
:mod:`skgroup.datasets` format (memory-mapped ``features.npy``, labels,
attributes, split, ids and a manifest)::

    from feature_extraction import extract_features
    path = extract_features("path/to/bert", "train.tsv", "cache/bert-mnli",
                            dataset_options={"text_columns": ["premise", "hypothesis"], "label_column": "label"})

Modules: :mod:`~feature_extraction.backbones` (models and what "penultimate"
means per family), :mod:`~feature_extraction.data` (image and text datasets),
:mod:`~feature_extraction.cache` (shards, reuse, merge),
:mod:`~feature_extraction.extract` (the loop), :mod:`~feature_extraction.distributed`
(torchrun), :mod:`~feature_extraction.cli`, :mod:`~feature_extraction.real`
(the two real benchmarks). See ``docs/extraction.rst``.
"""

__version__ = "0.1.0"

from .backbones import Backbone, ImageBackbone, ImagePreprocessing, ModelNotFoundError, TextBackbone, load_backbone
from .cache import CorruptShardError, ExtractionMismatchError
from .data import (
    ArrayImageDataset,
    DecodeError,
    ExtractionDataset,
    ImageFileDataset,
    MetadataError,
    TextDataset,
    image_folder_dataset,
    load_dataset,
    metadata_image_dataset,
)
from .extract import ImageDecodeError, OutputBusyError, extract_features, get_cache_root, keep_freed_memory

__all__ = [
    "ArrayImageDataset",
    "Backbone",
    "CorruptShardError",
    "DecodeError",
    "ExtractionDataset",
    "ExtractionMismatchError",
    "ImageBackbone",
    "ImageDecodeError",
    "ImageFileDataset",
    "ImagePreprocessing",
    "MetadataError",
    "ModelNotFoundError",
    "OutputBusyError",
    "TextBackbone",
    "TextDataset",
    "extract_features",
    "get_cache_root",
    "image_folder_dataset",
    "keep_freed_memory",
    "load_backbone",
    "load_dataset",
    "metadata_image_dataset",
]
