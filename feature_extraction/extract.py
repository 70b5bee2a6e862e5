"""The one-call API: backbone + dataset + output folder -> a features cache.

The loop overlaps the three stages of the work: samples are decoded and
preprocessed ahead of the model (DataLoader worker processes on CUDA; on
the CPU a prefetch thread when torch's threads leave a core free, PIL and
tokenizers releasing the GIL), batches run under ``torch.inference_mode``
(autocast and channels_last where they help; images travel as uint8 and
are normalised on the device), and finished shards are written by a
writer thread while the next ones are computed. On CUDA the copy of the
features to the host lags one batch behind, so the GPU never waits for it.
"""

import logging
import os
import platform
import queue
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from skgroup.datasets import read_manifest
from skgroup.datasets._embeddings import invalidate_cache

from . import __version__, distributed
from .backbones import Backbone, load_backbone
from .cache import (
    ShardStore,
    _fsync_dir,
    check_existing_cache,
    remove_leftover_temporaries,
    remove_stale_shards,
    spec_sha256,
)
from .data import DecodeError, ExtractionDataset, load_dataset

__all__ = ["extract_features", "extraction_spec", "library_versions", "get_cache_root", "keep_freed_memory",
           "ImageDecodeError", "OutputBusyError"]

log = logging.getLogger("feature_extraction")
#: Bump when the stage changes what it computes, so old caches are not reused.
STAGE_VERSION = 1
_PRECISIONS = {"float32": None, "fp32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
               "fp16": torch.float16, "float16": torch.float16}


class ImageDecodeError(DecodeError):
    """Samples failed to decode and ``on_error='raise'``."""


def get_cache_root(cache_root=None):
    """Where caches go by default: the argument, ``$SKGROUP_CACHE``, or ``~/.cache/skgroup``."""
    if cache_root is not None:
        return Path(cache_root).expanduser()
    if os.environ.get("SKGROUP_CACHE"):
        return Path(os.environ["SKGROUP_CACHE"]).expanduser()
    return Path.home() / ".cache" / "skgroup"


def library_versions(backbone=None):
    """Versions of the libraries that compute the features (those the backbone's family uses)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
           "feature_extraction": __version__}
    family = backbone.identity().get("family", "") if backbone is not None else ""
    packages = {"pillow"} if backbone is None or backbone.modality == "image" else set()
    if backbone is None or family.startswith("transformers") or backbone.modality == "text":
        packages |= {"transformers", "tokenizers"}
    if backbone is None or family == "efficientnet-lite":
        packages.add("efficientnet-lite-pytorch")
    if backbone is None or family == "torchvision":
        packages.add("torchvision")
    for pkg in sorted(packages):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def extraction_spec(backbone, dataset, *, dtype, precision):
    """Everything that makes the features what they are; equal specs mean a reusable cache."""
    return {
        "stage_version": STAGE_VERSION,
        "backbone": backbone.identity(),
        "preprocessing": backbone.preprocessing_spec(),
        "dataset": dataset.spec(),
        "features": {"dtype": dtype, "precision": precision},
    }


def _resolve_device(device, info):
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and info.active:
        device = torch.device("cuda", info.local_rank)
    return device


def _resolve_precision(precision, device):
    if precision in (None, "auto"):
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "float32"
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {sorted(_PRECISIONS)}; got {precision!r}.")
    return {"fp32": "float32", "bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse rather than return it to the system.

    On the CPU, activation buffers above 32 MiB are otherwise mapped and unmapped on every batch, and
    zeroing the fresh pages costs up to a third of the time (measured here: EfficientNet-Lite0 at 112 px,
    batch 64, 137 -> 190 images/s). The setting is process-wide and permanent, so the stage does not apply
    it by itself: the command line calls it, and so can any process dedicated to extraction (or set
    ``MALLOC_MMAP_THRESHOLD_=1073741824`` in the environment). Returns True if applied (glibc only).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def _auto_batch_size(backbone, device):
    """16 on the CPU; on CUDA 128 (text) or 256 (images) per 20 GiB free, between 32 and 1024.

    A batch that still runs out of memory is split in halves (:func:`_forward`), so a guess too large
    costs time, not the run.
    """
    if device.type != "cuda":
        return 16  # measured: larger CPU batches only allocate more (MiniLM 105 pairs/s at 16, 74 at 64)
    free, _ = torch.cuda.mem_get_info(device)
    per_20gib = 256 if backbone.modality == "image" else 128
    return int(min(1024, max(32, per_20gib * free // (20 << 30))))


def _split_batch(batch):
    if torch.is_tensor(batch):
        h = batch.shape[0] // 2
        return batch[:h], batch[h:]
    halves = [_split_batch(v) for v in batch.values()]
    return ({k: v[0] for k, v in zip(batch, halves)}, {k: v[1] for k, v in zip(batch, halves)})


def _batch_len(batch):
    return batch.shape[0] if torch.is_tensor(batch) else _batch_len(next(iter(batch.values())))


def _forward(backbone, batch):
    """The backbone on a batch; out of memory, on its halves (recursively)."""
    try:
        return backbone(batch)
    except torch.OutOfMemoryError:
        if _batch_len(batch) < 2:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    first, second = _split_batch(batch)
    return torch.cat([_forward(backbone, first), _forward(backbone, second)])


def _available_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _auto_workers(device, info):
    if device.type != "cuda":
        return 0  # CPU: the model owns the cores; decoding runs on a thread or in between batches
    per_process = _available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size)))
    return max(1, min(8, per_process - 1))


class _Items(torch.utils.data.Dataset):
    """Raw sample -> model input, with failures returned instead of raised (reported in the main process)."""

    def __init__(self, dataset, backbone):
        self.dataset = dataset
        self.backbone = backbone

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            return i, self.backbone.prepare(self.dataset.get(i)), None
        except DecodeError as e:
            return i, None, str(e)
        except Exception as e:  # a decodable file the preprocessing cannot take (e.g. smaller than the crop)
            return i, None, f"cannot preprocess {self.dataset.describe(i)}: {type(e).__name__}: {e}"


class _Collate:
    def __init__(self, backbone):
        self.backbone = backbone

    def __call__(self, items):
        ok = [(i, x) for i, x, err in items if err is None]
        failed = [(i, err) for i, x, err in items if err is not None]
        batch = self.backbone.collate([x for _, x in ok]) if ok else None
        return np.array([i for i, _ in ok], dtype=np.int64), batch, failed


class _Prefetch:
    """Iterate ``iterable`` on a background thread, ``depth`` items ahead."""

    _END = object()

    def __init__(self, iterable, depth=4):
        self.q = queue.Queue(depth)
        self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(iterable,), daemon=True)
        self.thread.start()

    def _put(self, item):
        """Put unless the consumer has stopped (then the thread ends instead of blocking forever)."""
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterable):
        try:
            for item in iterable:
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            self.error = e
        self._put(self._END)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self):
        self.stop.set()


def _plan_batches(store, shards, dataset, backbone, batch_size):
    """(shard, indices) per batch; batches never cross shards; text sorted by length inside a shard."""
    plan = []
    for k in shards:
        start, stop = store.bounds(k)
        idx = np.arange(start, stop)
        if backbone.modality == "text":
            keys = np.array([backbone.sort_key(dataset.get(i)) for i in idx])
            idx = idx[np.argsort(keys, kind="stable")]
        for b in range(0, len(idx), batch_size):
            plan.append((k, idx[b : b + batch_size]))
    return plan


def extract_features(
    backbone,
    dataset,
    output,
    *,
    backbone_options=None,
    dataset_options=None,
    name=None,
    dtype="float32",
    precision="auto",
    device=None,
    batch_size=None,
    num_workers="auto",
    channels_last="auto",
    shard_size=None,
    on_error="raise",
    overwrite=False,
    strict_versions=False,
    keep_shards=False,
    verify="auto",
    progress=True,
):
    """Extract penultimate features of ``backbone`` on ``dataset`` into a cache folder ``output``.

    Asking again for the same extraction returns the existing cache once its
    files pass :func:`skgroup.datasets.check_embeddings` (a damaged cache is
    an error naming the file, rebuilt only with ``overwrite``); an
    interrupted run resumes from its complete shards; a different
    extraction in ``output`` is an error unless ``overwrite``. Under
    ``torchrun`` (or an initialised ``torch.distributed``) every process
    takes a disjoint part of the shards and rank 0 merges them.

    Parameters
    ----------
    backbone : Backbone, str, Path or torch.nn.Module
        A loaded :class:`~feature_extraction.backbones.Backbone`, or what
        :func:`~feature_extraction.backbones.load_backbone` takes (with
        ``backbone_options``).
    dataset : ExtractionDataset or path
        A dataset from :mod:`feature_extraction.data`, or a path for
        :func:`~feature_extraction.data.load_dataset` (with ``dataset_options``).
    output : str or Path
        The cache folder (see :mod:`skgroup.datasets` for the format).
    name : str, optional
        Name recorded in the manifest (default ``<dataset>-<backbone>``).
    dtype : {'float32', 'float16'}, default='float32'
        Storage dtype of the features.
    precision : {'auto', 'float32', 'bf16', 'fp16'}, default='auto'
        Compute precision (autocast): 'auto' is bf16 (fp16 without bf16
        support) on CUDA and float32 on the CPU. Part of the extraction's
        identity: bf16 features differ from float32 ones.
    device : str, optional
        Default: CUDA (the local rank's GPU) when available, else CPU.
    batch_size : int, optional
        Default 16 on the CPU; on CUDA chosen from the free memory. A batch
        that runs out of memory is computed in halves.
    num_workers : int or 'auto'
        DataLoader worker processes. 0 decodes on a prefetch thread when a
        core is left free by torch's threads, else in between batches.
        'auto': 0 on the CPU, up to 8 per GPU on CUDA.
    channels_last : bool or 'auto'
        channels_last memory format for convolutional image models ('auto':
        on; it is faster on CUDA and on recent CPUs alike).
    shard_size : int, optional
        Samples per shard (unit of resumption). Default: 2048, smaller for
        small datasets so every process gets several shards.
    on_error : {'raise', 'skip'}, default='raise'
        What to do with samples that fail to decode: stop with an error
        naming them, or leave them out of the cache (their ids are listed
        in the manifest under ``extraction.run.skipped_ids`` and warned).
    overwrite : bool, default=False
        Replace whatever ``output`` holds (a cache, of this extraction or
        another, and unfinished shards) by a fresh extraction. Without it a
        different extraction in ``output`` is an error.
    strict_versions : bool, default=False
        Treat a cache written with other library versions as a different
        extraction (default: reuse it with a warning).
    keep_shards : bool, default=False
        Keep ``.shards/`` after merging. Without it, shards that a killed run
        left beside a complete cache are removed when the cache is reused
        (after a full checksum of the cache).
    verify : 'auto' or bool, default='auto'
        How ``features.npy`` is checked before a cache is reused: 'auto'
        the checksums of its blocks (all of them up to 256 MiB, else the
        first, the last and 64 at random), True its full sha256 (reads it
        whole), False not at all. Every file's presence, shape, dtype and
        size, and the checksums of the small files, are checked in any case.
    progress : bool, default=True
        Progress bar (items per second, time left) on rank 0.

    Returns
    -------
    Path of the cache folder; load it with :func:`skgroup.datasets.load_embeddings`.
    """
    t0 = time.perf_counter()
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16'; got {dtype!r}.")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}.")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    if shard_size is not None and not (isinstance(shard_size, int) and shard_size > 0):
        raise ValueError(f"shard_size must be a positive int; got {shard_size!r}.")
    output = Path(output).expanduser()
    if not isinstance(backbone, Backbone):
        backbone = load_backbone(backbone, **(backbone_options or {}))
    elif backbone_options:
        raise ValueError("backbone_options apply when backbone is a name, folder or module, not a Backbone.")
    dataset = load_dataset(dataset, **(dataset_options or {}))
    if not isinstance(dataset, ExtractionDataset):
        raise TypeError(f"dataset must be an ExtractionDataset or a path; got {type(dataset).__name__}.")
    if dataset.modality != backbone.modality:
        raise ValueError(f"the {backbone.modality} backbone {backbone.name!r} cannot read the {dataset.modality} "
                         f"dataset {dataset.name!r}.")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty.")

    info = distributed.setup(device)
    try:
        with ExitStack() as held:  # rank 0 takes the output lock in there (see _run), released on return
            return _run(backbone, dataset, output, info, t0, held, name=name, dtype=dtype, precision=precision,
                        device=device, batch_size=batch_size, num_workers=num_workers, channels_last=channels_last,
                        shard_size=shard_size, on_error=on_error, overwrite=overwrite,
                        strict_versions=strict_versions, keep_shards=keep_shards, verify=verify, progress=progress)
    finally:
        distributed.teardown(info)


class OutputBusyError(RuntimeError):
    """Another extraction is writing into the same output folder."""


@contextmanager
def _output_lock(output, enabled=True):
    """An exclusive lock on ``<output>/.extract.lock`` for the run (released by the OS if the process dies)."""
    f = None
    if enabled:
        try:
            import fcntl  # POSIX only; elsewhere no lock

            output.mkdir(parents=True, exist_ok=True)
            f = open(output / ".extract.lock", "a")
        except (ImportError, OSError):  # a read-only cache can still be reused; building into it would fail anyway
            f = None
    if f is None:
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"another extraction is writing into {output}; wait for it to finish or choose "
                                  "another output folder.") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(backbone, dataset, output, info, t0, held, *, name, dtype, precision, device, batch_size, num_workers,
         channels_last, shard_size, on_error, overwrite, strict_versions, keep_shards, verify, progress):
    device = _resolve_device(device, info)
    precision = _resolve_precision(precision, device)
    spec = extraction_spec(backbone, dataset, dtype=dtype, precision=precision)
    spec_hash = spec_sha256(spec)
    versions = library_versions(backbone)
    if shard_size is None:
        shard_size = int(min(2048, max(64, -(-len(dataset) // (4 * info.world_size)))))

    # Rank 0 locks the output, decides (reuse / resume / error) and tells the others, so no rank waits on a rank
    # that failed (a busy output folder included).
    plan = None
    if info.is_main:
        try:
            held.enter_context(_output_lock(output))
            action = check_existing_cache(output, spec, versions, overwrite=overwrite,
                                          strict_versions=strict_versions, verify=verify)
            if action == "reuse":
                manifest = read_manifest(output)
                if on_error == "raise":
                    skipped = ((manifest.get("extraction") or {}).get("run") or {}).get("skipped_ids")
                    if skipped:
                        raise ImageDecodeError(
                            f"the cache at {output} was built with on_error='skip' and leaves out {len(skipped)} "
                            f"sample(s) that failed to decode: {skipped[:10]}{' ...' if len(skipped) > 10 else ''}. "
                            "Pass on_error='skip' (CLI --on-error skip) to accept it, or fix the samples and pass "
                            "overwrite=True.")
                remove_stale_shards(output, manifest, keep_shards=keep_shards)
                plan = {"action": "reuse"}
            else:
                if overwrite and output.is_dir():
                    # invalidate first: a killed overwrite run must not leave the old cache looking valid (its
                    # files stay marked as this library's, so a plain rerun resumes)
                    invalidate_cache(output)
                    _fsync_dir(output)
                remove_leftover_temporaries(output)
                store = ShardStore(output, spec_hash, len(dataset), shard_size)
                store.open(spec, versions=versions, overwrite=overwrite, strict_versions=strict_versions)
                done, redone = store.scan()
                if on_error == "raise" and store.failed_in_done:
                    n_failed = sum(store.failed_in_done.values())
                    raise ImageDecodeError(
                        f"{n_failed} sample(s) in the finished shards of the interrupted run in {store.root} failed to "
                        "decode (it ran with on_error='skip'). Pass on_error='skip' (CLI --on-error skip) to resume "
                        "it, or fix the samples and pass overwrite=True.")
                pending = sorted(set(range(store.n_shards)) - set(done))
                plan = {"action": "build", "shard_size": store.shard_size, "pending": pending, "done": len(done),
                        "redone": redone}
        except Exception as e:  # noqa: BLE001 - re-raised on every rank
            plan = {"action": "error", "error": e}
    plan = distributed.broadcast(plan, info)
    if plan["action"] == "error":
        raise plan["error"]
    if plan["action"] == "reuse":
        log.info("reusing the cache at %s", output)
        return output
    store = ShardStore(output, spec_hash, len(dataset), plan["shard_size"])
    if plan["done"]:
        log.info("resuming: %d of %d shards already done", plan["done"], store.n_shards)
    mine = distributed.assign_shards(plan["pending"], info.rank, info.world_size)

    # Every rank reaches the gather, an error included, so that no rank is left blocked in a collective.
    local_error = None
    try:
        batch_size = batch_size or _auto_batch_size(backbone, device)
        workers = _auto_workers(device, info) if num_workers == "auto" else int(num_workers)
        use_cl = backbone.modality == "image" and backbone.channels_last_ok and channels_last in ("auto", True)
        backbone.to(device, channels_last=use_cl)
        stats = _extract_shards(backbone, dataset, store, mine, device=device, precision=precision, dtype=dtype,
                                batch_size=batch_size, workers=workers, channels_last=use_cl, on_error=on_error,
                                progress=progress and info.is_main)
    except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks heard of it
        local_error = e
        stats = {"error": repr(e)}
    all_stats = distributed.gather(stats, info)
    if local_error is not None:
        raise local_error
    failed_ranks = [(r, s["error"]) for r, s in enumerate(all_stats) if "error" in s]
    if failed_ranks:
        raise RuntimeError("the extraction failed on " + "; ".join(f"rank {r}: {err}" for r, err in failed_ranks))

    if info.is_main:
        seconds = time.perf_counter() - t0
        computed = sum(s["items"] for s in all_stats)
        extraction = {
            "name": name or f"{dataset.name}-{backbone.name}",
            "stage": "feature_extraction",
            "spec": spec,
            "spec_sha256": spec_hash,
            "versions": versions,
            "backbone_source": backbone.source,
            "dataset_source": dataset.source(),
            "run": {
                "device": str(device) if not info.active else f"{device.type} x {info.world_size}",
                "world_size": info.world_size,
                "batch_size": batch_size,
                "num_workers": workers,
                "channels_last": use_cl,
                "shard_size": store.shard_size,
                "shards": store.n_shards,
                "shards_reused": plan["done"],
                "shards_computed": sum(len(s["shards"]) for s in all_stats),
                "shards_per_rank": [s["shards"] for s in all_stats],
                "shards_redone_corrupt": len(plan["redone"]),
                "keep_shards": bool(keep_shards),
                "items_computed": computed,
                "compute_seconds": max(s["seconds"] for s in all_stats),
                "seconds": seconds,
                "items_per_second": computed / seconds if seconds > 0 else None,
            },
        }
        error = None
        try:
            skipped = store.merge(output, dataset, dtype=dtype, extraction=extraction, overwrite=overwrite,
                                  keep_shards=keep_shards)
            if skipped:
                warnings.warn(f"{len(skipped)} samples could not be decoded and were left out of {output}: "
                              f"{skipped[:10]}{' ...' if len(skipped) > 10 else ''}", stacklevel=3)
        except Exception as e:  # noqa: BLE001 - after the barrier, so the other ranks are not left hanging
            error = e
        distributed.barrier(info)
        if error is not None:
            raise error
    else:
        distributed.barrier(info)
    return output


def _extract_shards(backbone, dataset, store, shards, *, device, precision, dtype, batch_size, workers, channels_last,
                    on_error, progress):
    """Compute and write ``shards``; returns counts and timing."""
    t0 = time.perf_counter()
    plan = _plan_batches(store, shards, dataset, backbone, batch_size)
    n_items = sum(len(idx) for _, idx in plan)
    if not plan:
        return {"items": 0, "shards": [], "seconds": 0.0}
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Items(dataset, backbone), batch_sampler=[idx.tolist() for _, idx in plan], num_workers=workers,
        collate_fn=_Collate(backbone), pin_memory=cuda, prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    if workers and backbone.modality == "text":
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Without workers, decode on a prefetch thread if a core is free for it; when the model's threads take
    # every core, decoding in between batches is faster: a thread preempting one of the model's OpenMP
    # threads stalls all of them (measured: EfficientNet-Lite0 on 2 cores, ratio 0.60 with the thread).
    prefetch = workers == 0 and torch.get_num_threads() < _available_cpus()
    batches = _Prefetch(loader) if prefetch else loader
    switch_interval = sys.getswitchinterval()
    if prefetch:
        # The model thread hands the GIL over at every op; by default it waits up to 5 ms to get it back from
        # the decoding thread, which measurably slows the model (EfficientNet-Lite0: ratio 0.88 -> 0.93).
        sys.setswitchinterval(min(switch_interval, 2e-4))
    amp = _PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    out_dtype = np.dtype(dtype)
    expected = {k: store.bounds(k)[1] - store.bounds(k)[0] for k in shards}
    buffers = {k: {"rows": [], "features": [], "failed": [], "count": 0} for k in shards}
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
    writes = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_items, unit="item", unit_scale=True, smoothing=0.05, dynamic_ncols=True,
                   desc=f"extract {backbone.name}")

    def finish(k, rows, feats, failed):
        buf = buffers[k]
        if feats is not None:
            buf["rows"].append(rows)
            buf["features"].append(feats)
        buf["failed"].extend(i for i, _ in failed)
        buf["count"] += len(rows) + len(failed)
        if buf["count"] == expected[k]:
            del buffers[k]
            f = (np.concatenate(buf["features"]).astype(out_dtype, copy=False) if buf["features"]
                 else np.zeros((0, 0), out_dtype))
            r = np.concatenate(buf["rows"]) if buf["rows"] else np.zeros(0, np.int64)
            while len(writes) >= 2:  # bound the memory held by pending writes
                writes.pop(0).result()
            writes.append(writer.submit(store.write, k, r, f, buf["failed"]))

    pending = None  # (shard, rows, failed, features on host, event): one batch behind on CUDA
    try:
        with torch.inference_mode():
            for (k, idx), (rows, batch, failed) in zip(plan, batches):
                if failed and on_error == "raise":
                    lines = "\n  ".join(err for _, err in failed)
                    raise ImageDecodeError(f"{len(failed)} sample(s) failed to decode:\n  {lines}\n"
                                           "Fix or remove them, or pass on_error='skip' (CLI --on-error skip) "
                                           "to leave them out of the cache.")
                feats, event = None, None
                if batch is not None:
                    batch = backbone.batch_to(batch, device, non_blocking=cuda, channels_last=channels_last)
                    with autocast:
                        out = _forward(backbone, batch)
                    if cuda:
                        feats = out.float().to("cpu", non_blocking=True)
                        event = torch.cuda.Event()
                        event.record()
                    else:
                        feats = out.float()
                if pending is not None:
                    _consume(pending, finish)
                pending = (k, rows, failed, feats, event)
                if bar is not None:
                    bar.update(len(idx))
            if pending is not None:
                _consume(pending, finish)
        for w in writes:
            w.result()
    finally:
        sys.setswitchinterval(switch_interval)
        if isinstance(batches, _Prefetch):
            batches.close()
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
    if buffers:
        raise RuntimeError(f"shards {sorted(buffers)} were not completed")
    return {"items": n_items, "shards": list(shards), "seconds": time.perf_counter() - t0}


def _consume(pending, finish):
    k, rows, failed, feats, event = pending
    if event is not None:
        event.synchronize()
    finish(k, rows, feats.numpy() if feats is not None else None, failed)
