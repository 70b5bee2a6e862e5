"""Command line: ``python -m feature_extraction MODEL DATA OUTPUT [options]`` (console script ``skgroup-extract``).

Examples::

    # BERT-style encoder on an NLI TSV, [CLS] pooling, pairs as the model's template
    python -m feature_extraction ./bert-base data/mnli.tsv cache/mnli-bert \\
        --text-columns premise,hypothesis --label-column gold_label --pooling cls

    # Waterbirds with a torchvision ResNet-50 and local weights
    python -m feature_extraction resnet50 data/waterbirds cache/wb-r50 --weights resnet50.pth --layout waterbirds

    # One process per GPU
    torchrun --nproc_per_node=4 -m feature_extraction ./vit-base data/celeba cache/celeba-vit --layout celeba-attr

    # The two real benchmarks of the project
    python -m feature_extraction real mnli-minilm|fashion-spurious [--cache-root DIR] [--data-home DIR]
"""

import argparse
import logging
import sys

__all__ = ["main", "build_parser"]


def _csv_list(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def _floats3(value):
    values = [float(v) for v in _csv_list(value)]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("give three comma-separated numbers")
    return tuple(values)


def build_parser():
    p = argparse.ArgumentParser(
        prog="skgroup-extract",
        description="Cache penultimate features of a pretrained backbone on a dataset (skgroup embeddings format).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    p.add_argument("model", help="model folder, hub id (offline cache), torchvision name, efficientnet-lite0, "
                                 "or 'real' to build a project benchmark")
    p.add_argument("data", help="text table (.csv/.tsv/.jsonl[.gz]), image folder with metadata.csv, or class "
                                "folders; with 'real': mnli-minilm or fashion-spurious")
    p.add_argument("output", nargs="?", help="cache folder (with 'real': not used, see --cache-root)")

    b = p.add_argument_group("backbone")
    b.add_argument("--weights", help="local weights file (torchvision, EfficientNet-Lite)")
    b.add_argument("--modality", choices=["image", "text"])
    b.add_argument("--pooling", choices=["cls", "mean", "pooler"], help="text pooling (default cls; "
                   "sentence-transformers folders: their own)")
    b.add_argument("--pair-mode", choices=["template", "siamese"], help="sentence pairs: the model's pair "
                   "template (default for BERT-style) or [u, v, |u-v|, u*v] (default for sentence-transformers)")
    b.add_argument("--max-length", type=int, help="truncate texts to this many tokens")
    b.add_argument("--image-size", type=int, help="center crop side (default 224)")
    b.add_argument("--resize", type=int, help="shorter side before the crop (default size/0.875)")
    b.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"])
    b.add_argument("--mean", type=_floats3, help="normalisation mean, e.g. 0.485,0.456,0.406")
    b.add_argument("--std", type=_floats3, help="normalisation std")
    b.add_argument("--no-processor", action="store_true", help="ignore a transformers preprocessor_config.json")

    d = p.add_argument_group("data")
    d.add_argument("--text-columns", type=_csv_list, help="one or two text columns, e.g. premise,hypothesis")
    d.add_argument("--label-column", help="label column (default: label for text; detected for images)")
    d.add_argument("--label-names", type=_csv_list, help="label names in code order")
    d.add_argument("--drop-unknown-labels", action="store_true", help="drop rows whose label is not in --label-names "
                   "(and rows without a label)")
    d.add_argument("--missing-labels", choices=["raise", "skip"], help="rows with a blank or '-' label (MultiNLI's "
                   "pairs without a gold label): stop with an error (default) or leave them out, with a count")
    d.add_argument("--encoding", help="text encoding of the table / metadata files (default utf-8), e.g. latin-1")
    d.add_argument("--attribute-columns", type=_csv_list, help="attribute columns, comma-separated")
    d.add_argument("--spurious-attribute", help="attribute defining the groups by default")
    d.add_argument("--split-column")
    d.add_argument("--id-column")
    d.add_argument("--image-column")
    d.add_argument("--metadata", help="metadata table in the image folder (default metadata.csv)")
    d.add_argument("--layout", choices=["waterbirds", "celeba", "celeba-attr"])
    d.add_argument("--fingerprint", choices=["content", "stat"], help="how image files are fingerprinted")

    r = p.add_argument_group("run")
    r.add_argument("--name", help="name recorded in the manifest")
    r.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored dtype")
    r.add_argument("--precision", default="auto", choices=["auto", "float32", "bf16", "fp16"],
                   help="compute precision (auto: bf16 on CUDA, float32 on CPU)")
    r.add_argument("--device")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--num-workers", default="auto", help="DataLoader workers (auto)")
    r.add_argument("--no-channels-last", action="store_true")
    r.add_argument("--shard-size", type=int)
    r.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="undecodable images")
    r.add_argument("--overwrite", action="store_true", help="replace what the output folder holds")
    r.add_argument("--strict-versions", action="store_true", help="re-extract when library versions changed")
    r.add_argument("--keep-shards", action="store_true", help="keep .shards/ after merging")
    r.add_argument("--verify", action="store_true", help="before reusing a cache, check the sha256 of the whole of "
                   "features.npy (default: the checksums of its blocks, all of them up to 256 MiB, else a random "
                   "sample; shapes, sizes and the small files are always checked)")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--cache-root", help="with 'real': where the benchmark caches go")
    r.add_argument("--data-home", help="with 'real': the real-data folder")
    r.add_argument("-q", "--quiet", action="store_true")
    return p


def _options(args):
    backbone = {k: v for k, v in dict(
        weights=args.weights, modality=args.modality, pooling=args.pooling, pair_mode=args.pair_mode,
        max_length=args.max_length, image_size=args.image_size, resize=args.resize,
        interpolation=args.interpolation, mean=args.mean, std=args.std).items() if v is not None}
    if args.no_processor:
        backbone["processor"] = None
    data = dict(label_names=args.label_names, spurious_attribute=args.spurious_attribute,
                split_column=args.split_column, id_column=args.id_column, missing_labels=args.missing_labels,
                encoding=args.encoding)
    if args.text_columns:
        data.update(text_columns=args.text_columns, label_column=args.label_column or "label",
                    attribute_columns=args.attribute_columns or (), drop_unknown_labels=args.drop_unknown_labels)
    else:
        data.update(label_column=args.label_column, attribute_columns=args.attribute_columns,
                    image_column=args.image_column, metadata=args.metadata, layout=args.layout,
                    fingerprint=args.fingerprint)
    return backbone, {k: v for k, v in data.items() if v is not None and v is not False}


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    from .extract import keep_freed_memory

    keep_freed_memory()  # this process only extracts: reuse freed activation memory (see keep_freed_memory)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .backbones import ModelNotFoundError
    from .cache import ExtractionMismatchError
    from .data import DecodeError, MetadataError
    from .extract import OutputBusyError

    try:
        if args.model == "real":
            from . import real

            builders = {"mnli-minilm": real.build_mnli_minilm, "fashion-spurious": real.build_fashion_spurious}
            if args.data not in builders:
                raise ValueError(f"'real' builds one of {sorted(builders)}; got {args.data!r}.")
            path = builders[args.data](cache_root=args.cache_root, data_home=args.data_home,
                                       progress=not args.no_progress, overwrite=args.overwrite)
        else:
            if args.output is None:
                raise ValueError("give the output folder: skgroup-extract MODEL DATA OUTPUT")
            from .extract import extract_features

            backbone_options, dataset_options = _options(args)
            workers = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
            path = extract_features(
                args.model, args.data, args.output, backbone_options=backbone_options,
                dataset_options=dataset_options, name=args.name, dtype=args.dtype, precision=args.precision,
                device=args.device, batch_size=args.batch_size, num_workers=workers,
                channels_last=not args.no_channels_last and "auto", shard_size=args.shard_size,
                on_error=args.on_error, overwrite=args.overwrite, strict_versions=args.strict_versions,
                keep_shards=args.keep_shards, verify=True if args.verify else "auto", progress=not args.no_progress)
    except (FileNotFoundError, ModelNotFoundError, ExtractionMismatchError, MetadataError, DecodeError, ImportError,
            NotImplementedError, ValueError, OutputBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
