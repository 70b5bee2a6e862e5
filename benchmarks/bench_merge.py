"""Peak memory of the shard merge against the size of the features it writes.

Builds synthetic shards (random float32 features, checksummed as the
extraction writes them) for a cache of ``--n`` rows x ``--dim`` features,
then merges them into the final cache in a fresh subprocess, as the last
step of ``extract_features`` does, and reports the subprocess's resident
memory: after its imports, at its peak (``VmHWM`` from ``/proc/self/status``,
else ``resource.getrusage``), the increase during the merge and its ratio to
the features' size. A merge that held all features in memory would show a
ratio of 1 or more; the streaming merge holds about one shard.

    python benchmarks/bench_merge.py                          # 200,000 x 2,048 float32 (1.6 GB), shards of 2,048
    python benchmarks/bench_merge.py --n 1281167 --dim 2048   # ImageNet-train size, about 10 GB (needs 2x on disk)
    python benchmarks/bench_merge.py --dir /big/disk --keep   # where the shards and the cache go; keep them

The disk needs about twice the features' size (shards plus the cache).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = {"benchmark": "bench_merge"}


def _status_kib(field):
    """A VmRSS / VmHWM line of /proc/self/status in KiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _dataset(n):
    from types import SimpleNamespace

    return SimpleNamespace(
        ids=np.char.add("img_", np.arange(n).astype(str)), labels=np.arange(n) % 2,
        attributes=(np.arange(n) % 3 == 0).astype(np.int64)[:, None], attribute_names=["bg"],
        split=(np.arange(n) % 3).astype(np.int8), label_names=["a", "b"], spurious_attribute="bg",
        describe=lambda i: f"sample {i}",
    )


def build_shards(folder, n, dim, shard_size, seed=0):
    """Write the shards of a synthetic extraction into ``folder/.shards``; returns the seconds taken."""
    from feature_extraction.cache import ShardStore, spec_sha256

    t = time.perf_counter()
    store = ShardStore(folder, spec_sha256(SPEC), n, shard_size)
    store.open(SPEC)
    rng = np.random.default_rng(seed)
    for k in range(store.n_shards):
        start, stop = store.bounds(k)
        features = rng.standard_normal((stop - start, dim), dtype=np.float32)
        store.write(k, np.arange(start, stop), features, [])
    return time.perf_counter() - t


def merge_child(folder, n, shard_size, keep_freed):
    """In the subprocess: merge and print the memory figures as JSON."""
    import resource

    from feature_extraction import keep_freed_memory
    from feature_extraction.cache import ShardStore, spec_sha256

    if keep_freed:
        keep_freed_memory()  # as the command line does
    dataset = _dataset(n)
    store = ShardStore(folder, spec_sha256(SPEC), n, shard_size)
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    store.merge(folder, dataset, dtype="float32", extraction={"spec": SPEC}, keep_shards=True)
    seconds = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    if peak is None:  # ru_maxrss: KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    print(json.dumps({"rss_before_kib": before, "peak_rss_kib": peak, "merge_seconds": seconds}))


def run(n, dim, shard_size, folder, keep_freed=True):
    build_seconds = build_shards(folder, n, dim, shard_size)
    cmd = [sys.executable, __file__, "--child", str(folder), "--n", str(n), "--shard-size", str(shard_size)]
    if not keep_freed:
        cmd.append("--no-keep-freed-memory")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    data = n * dim * 4
    increase = (child["peak_rss_kib"] - (child["rss_before_kib"] or 0)) * 1024
    return {
        "n": n, "dim": dim, "shard_size": shard_size, "features_bytes": data,
        "shard_bytes": shard_size * dim * 4, "build_seconds": round(build_seconds, 1),
        "merge_seconds": round(child["merge_seconds"], 1),
        "rss_before_merge_mib": round((child["rss_before_kib"] or 0) / 1024, 1),
        "peak_rss_mib": round(child["peak_rss_kib"] / 1024, 1),
        "merge_increase_mib": round(increase / 2**20, 1),
        "peak_rss_over_data": round(child["peak_rss_kib"] * 1024 / data, 4),
        "increase_over_data": round(increase / data, 4),
        "keep_freed_memory": keep_freed,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="rows of the cache")
    p.add_argument("--dim", type=int, default=2048, help="features per row")
    p.add_argument("--shard-size", type=int, default=2048, help="rows per shard (the extraction's default)")
    p.add_argument("--dir", help="folder for the shards and the cache (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the shards and the cache")
    p.add_argument("--no-keep-freed-memory", action="store_true",
                   help="leave glibc malloc's defaults (the command line changes them, see keep_freed_memory)")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return merge_child(Path(args.child), args.n, args.shard_size, not args.no_keep_freed_memory)
    need = 2 * args.n * args.dim * 4
    base = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if free < need * 1.1:
        p.error(f"{base} has {free / 2**30:.1f} GiB free; this size needs about {need / 2**30:.1f} GiB: "
                "pass a smaller --n or another --dir.")
    folder = Path(tempfile.mkdtemp(prefix="bench-merge-", dir=base))
    try:
        result = run(args.n, args.dim, args.shard_size, folder, keep_freed=not args.no_keep_freed_memory)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"merge of {args.n:,} x {args.dim:,} float32 ({result['features_bytes'] / 2**30:.2f} GiB) in shards of "
          f"{args.shard_size:,} rows ({result['shard_bytes'] / 2**20:.0f} MiB): {result['merge_seconds']} s; "
          f"RSS {result['rss_before_merge_mib']} MiB after imports, peak {result['peak_rss_mib']} MiB "
          f"(+{result['merge_increase_mib']} MiB during the merge = {result['increase_over_data']:.2%} of the data; "
          f"peak / data = {result['peak_rss_over_data']:.3f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
