"""Speed and scale of the estimators, as ratios measured in one process.

Sections (choose with --sections; default all but 'lbfgs'):

* ``ratios``: fit time of every estimator (default parameters) on CelebA
  attributes (or the synthetic benchmark with --data synthetic) as a ratio to
  scikit-learn's ``LogisticRegression`` at the equivalent regularisation and
  to ``ERMClassifier``; each fit repeated ``--repeats`` times, median taken.
  Goals: ERMClassifier <= 1x LogisticRegression, JTT <= 2.5x ERMClassifier,
  the others <= 3x.
* ``reference``: the research repositories' loop (a ``DataLoader`` over a
  ``TensorDataset``, batch 128, one Python step per batch, AdamW) against
  ERMClassifier's minibatch loop at equal epochs, with the worst-group
  accuracy of both.
* ``scale``: fit time and peak memory of ERMClassifier and LogisticRegression
  against n (10k ... --max-n synthetic rows, d = 512 and 2048, float32); each
  point in a fresh subprocess so peak RSS is its own.
* ``lbfgs``: full-batch L-BFGS of ERMClassifier against ``LogisticRegression``
  to the same objective and tolerance (``C = 2 / (l2_reg * n)``, ``tol``
  for both), on synthetic float32 features of widths 38, 384, 768, 2048 and
  10k, 100k and 1M rows (1M in memory only where the array takes under a
  quarter of the available memory; always as a read-only memory map when
  the disk has room), in memory and as a memory map opened afresh for each
  fit: fit time ratio (median of paired repeats), iterations and test
  accuracy of both, and the time of one pass over X by the evaluator. For the
  largest memory map, peak RSS above the imports of each fit in a fresh
  subprocess. ``--features embed`` (default) draws non-negative, off-centre,
  correlated features like a network's activations; ``gauss`` the centred
  Gaussian features of the issue that started this section.
* ``epoch``: a minibatch epoch of ERM, Group DRO, CVaR DRO and JTT at
  d = 2,048 (100,000 rows, batch 1024, AdamW) against a bare torch loop
  over the same index-sliced batches (Linear, cross-entropy, AdamW, nothing
  else). Goal: within 1.2x.
* ``outofcore``: ERMClassifier (L-BFGS, ``--ooc-iter`` iterations),
  GroupDROClassifier and JTTClassifier (one minibatch epoch each) on a
  read-only memory map of ``--max-n`` x 2,048 float32 rows, each in a fresh
  subprocess: fit time, time per epoch and peak RSS above the imports as a
  multiple of the data. Goal: <= 1.2x the data at 1M rows (8 GB).
* ``search``: ``GridSearchCV(n_jobs=2)`` against ``n_jobs=1`` (and the torch
  thread count inside a worker: oversubscription check), and the same search
  through joblib's dask backend on a local ``dask.distributed`` cluster when
  dask is installed.

Fit times vary by about 30% between processes on small machines: only the
ratios within one run mean something.

Usage::

    python benchmarks/speed.py                      # ratios, reference, search, scale to 200k
    python benchmarks/speed.py --sections scale --max-n 1000000
    python benchmarks/speed.py --sections lbfgs --max-n 1000000          # L-BFGS vs LogisticRegression
    python benchmarks/speed.py --sections lbfgs --quick                  # small sizes (a minute)
    python benchmarks/speed.py --sections lbfgs --threads 1              # both on one BLAS/torch thread
    python benchmarks/speed.py --sections epoch                          # minibatch epochs vs a bare loop
    python benchmarks/speed.py --sections outofcore --max-n 1000000      # 8 GB memory map: peak RSS
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from _timing import median_time  # benchmarks/ is on sys.path when a script runs


def _load(data):
    from skgroup.datasets import load_celeba_attributes, make_spurious_benchmark

    if data == "celeba":
        return load_celeba_attributes()
    return make_spurious_benchmark(20000, 2000, 4000, random_state=0)


def section_ratios(args):
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from skgroup.estimators import all_estimators
    from skgroup.metrics import worst_group_accuracy

    d = _load(args.data)
    tr, te = d.train, d.test
    l2 = 1e-4
    rows = []
    # torch's first operations in a process cost ~1 s: warm up outside the timings
    from skgroup import ERMClassifier

    ERMClassifier().fit(tr.X[:200], tr.y[:200])
    lr = LogisticRegression(C=2.0 / (l2 * len(tr.y)), max_iter=1000)
    t_lr = median_time(lambda: lr.fit(tr.X, tr.y), args.repeats)
    rows.append(("LogisticRegression (sklearn)", t_lr, lr.predict(te.X)))
    with sklearn.config_context(enable_metadata_routing=True):
        for name, cls in all_estimators():
            est = cls(random_state=0)
            kw = {}
            if "group_labels" in est.get_metadata_routing().consumes("fit", ["group_labels"]):
                kw["group_labels"] = tr.group_labels
            t = median_time(lambda: est.fit(tr.X, tr.y, **kw), args.repeats)
            rows.append((name, t, est.predict(te.X)))
    t_erm = next(t for n, t, _ in rows if n == "ERMClassifier")
    print(f"\n## Fit time ratios on {args.data} ({len(tr.y)} x {tr.X.shape[1]}, median of {args.repeats})\n")
    print("| estimator | fit s | / LogisticRegression | / ERMClassifier | test acc | test WGA |")
    print("|---|---|---|---|---|---|")
    out = []
    for name, t, pred in rows:
        wga = worst_group_accuracy(te.y, pred, group_labels=te.group_labels)
        acc = float(np.mean(pred == te.y))
        print(f"| {name} | {t:.2f} | {t / t_lr:.2f} | {t / t_erm:.2f} | {acc:.3f} | {wga:.3f} |")
        out.append(dict(estimator=name, seconds=t, ratio_lr=t / t_lr, ratio_erm=t / t_erm, acc=acc, wga=wga))
    return out


def _reference_loop(X, y, epochs, lr, seed):
    """The research repositories' head training: DataLoader over TensorDataset, batch 128."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=128,
                        shuffle=True, generator=g)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def section_reference(args):
    import torch

    from skgroup import ERMClassifier
    from skgroup.metrics import worst_group_accuracy

    d = _load(args.data)
    tr, te = d.train, d.test
    X = np.ascontiguousarray(tr.X, dtype=np.float32)
    y = tr.y.astype(np.int64)
    epochs = 2
    print(f"\n## Reference DataLoader loop vs skgroup's loop ({args.data}, {epochs} epochs, AdamW lr 1e-3)\n")
    print("| loop | batch | fit s | ratio to reference | test WGA |")
    print("|---|---|---|---|---|")
    holder = {}
    t_ref = median_time(lambda: holder.update(m=_reference_loop(X, y, epochs, 1e-3, 0)), args.repeats)
    with torch.no_grad():
        pred = holder["m"](torch.from_numpy(np.ascontiguousarray(te.X, dtype=np.float32))).argmax(1).numpy()
    print(f"| DataLoader(TensorDataset) | 128 | {t_ref:.2f} | 1.00 | "
          f"{worst_group_accuracy(te.y, pred, group_labels=te.group_labels):.3f} |")
    out = [dict(loop="reference", batch=128, seconds=t_ref)]
    for bs in (128, 1024):
        est = ERMClassifier(solver="adamw", max_iter=epochs, batch_size=bs, learning_rate=1e-3, l2_reg=0.0,
                            random_state=0)
        t = median_time(lambda: est.fit(X, y), args.repeats)
        wga = worst_group_accuracy(te.y, est.predict(te.X), group_labels=te.group_labels)
        print(f"| skgroup index slicing | {bs} | {t:.2f} | {t / t_ref:.2f} | {wga:.3f} |")
        out.append(dict(loop="skgroup", batch=bs, seconds=t, ratio=t / t_ref, wga=wga))
    est = ERMClassifier(random_state=0)
    t = median_time(lambda: est.fit(X, y), args.repeats)
    wga = worst_group_accuracy(te.y, est.predict(te.X), group_labels=te.group_labels)
    print(f"| skgroup full-batch L-BFGS (to convergence) | all | {t:.2f} | {t / t_ref:.2f} | {wga:.3f} |")
    return out


_SCALE_CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
which, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d), dtype=np.float32)
w = rng.standard_normal(d).astype(np.float32) / np.sqrt(d)
y = (X @ w + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
from sklearn.linear_model import LogisticRegression
from skgroup import ERMClassifier  # imports (torch: ~2 s) stay outside the timing
model = (LogisticRegression(C=2.0 / (1e-4 * n), max_iter=100) if which == "lr"
         else ERMClassifier(l2_reg=1e-4, max_iter=100))
model.fit(X[:200], y[:200])  # first-call warm-up (torch's first ops cost ~1 s) outside the timing
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model.fit(X, y)
secs = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=secs, data_mb=X.nbytes / 2**20, extra_peak_mb=(peak - base) / 1024)))
"""


def section_scale(args):
    ns = [n for n in (10_000, 30_000, 100_000, 300_000, 1_000_000) if n <= args.max_n]
    print("\n## Scale: fit time and peak memory beyond the data (synthetic, float32, 100 L-BFGS iterations max,"
          " after a warm-up fit)\n")
    print("| n | d | data MB | ERM s | LR s | ERM / LR | ERM extra peak MB | LR extra peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    out = []
    for d in (512, 2048):
        for n in ns:
            res = {}
            for which in ("erm", "lr"):
                proc = subprocess.run([sys.executable, "-c", _SCALE_CHILD, which, str(n), str(d)],
                                      capture_output=True, text=True, timeout=3600)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-2000:])
                res[which] = json.loads(proc.stdout.strip().splitlines()[-1])
            e, lr = res["erm"], res["lr"]
            print(f"| {n} | {d} | {e['data_mb']:.0f} | {e['seconds']:.2f} | {lr['seconds']:.2f} | "
                  f"{e['seconds'] / lr['seconds']:.2f} | {e['extra_peak_mb']:.0f} | {lr['extra_peak_mb']:.0f} |")
            out.append(dict(n=n, d=d, erm=e, lr=lr))
    return out


def _lbfgs_features(n, d, kind, seed, out=None, block=50_000):
    """Synthetic float32 features and binary labels, written block by block into ``out`` if given.

    'embed': ReLU of a Gaussian plus a rank-8 shared component and an offset
    (non-negative, off-centre, correlated columns, as a network's
    activations); 'gauss': standard normal. The label is a noisy linear
    function of the features, the same direction for every seed.
    """
    fixed = np.random.default_rng(12345)
    w = (fixed.standard_normal(d) / np.sqrt(d)).astype(np.float32)
    mix = (fixed.standard_normal((8, d)) / np.sqrt(8)).astype(np.float32)

    def draw(rng, m):
        xb = rng.standard_normal((m, d), dtype=np.float32)
        if kind == "embed":
            xb += rng.standard_normal((m, 8), dtype=np.float32) @ mix + 0.3
            np.maximum(xb, 0, out=xb)
        return xb

    offset = float(draw(fixed, 20_000).mean(axis=0) @ w)  # the label's threshold: balanced classes
    X = out if out is not None else np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        m = min(block, n - start)
        xb = draw(rng, m)
        X[start:start + m] = xb
        y[start:start + m] = (xb @ w - offset) * 3 + rng.logistic(size=m) > 0
    return X, y


def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_RSS_CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
which, path, ypath, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
from sklearn.linear_model import LogisticRegression
from skgroup import ERMClassifier
X = np.load(path, mmap_mode="r")
y = np.load(ypath)
n = X.shape[0]
model = (LogisticRegression(C=2.0 / (1e-4 * n), tol=tol, max_iter=1000) if which == "lr"
         else ERMClassifier(l2_reg=1e-4, tol=tol, max_iter=1000))
model.fit(np.ascontiguousarray(X[:2000]), y[:2000])  # first-call warm-up outside the measurement

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS: the warm-up's peak does not count
base = status("VmRSS")
start = time.perf_counter()
model.fit(X, y)
secs = time.perf_counter() - start
peak = status("VmHWM")
n_iter = int(np.max(model.n_iter_))
print(json.dumps(dict(seconds=secs, n_iter=n_iter, data_mb=X.nbytes / 2**20, extra_peak_mb=(peak - base) / 1024)))
"""


def section_lbfgs(args):
    """ERMClassifier's L-BFGS against LogisticRegression, in memory and on a memory map."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from skgroup import ERMClassifier

    # torch's and scipy's first calls outside the timings; this also loads every thread pool
    # (scikit-learn's OpenMP loss included) before --threads limits them
    X_warm, y_warm = _lbfgs_features(2000, 16, args.features, 1)
    ERMClassifier().fit(X_warm, y_warm)
    LogisticRegression().fit(X_warm, y_warm)
    if args.threads:
        torch.set_num_threads(args.threads)
        with threadpool_limits(args.threads):
            return _section_lbfgs(args)
    return _section_lbfgs(args)


def _section_lbfgs(args):
    import torch
    from sklearn.linear_model import LogisticRegression

    from skgroup import ERMClassifier
    from skgroup.objectives import Objective

    try:
        from skgroup.engine._lbfgs import LinearHeadEvaluator
    except ImportError:  # a checkout from before skgroup.engine._lbfgs: no time per pass
        LinearHeadEvaluator = None

    widths = (38, 384) if args.quick else (38, 384, 768, 2048)
    ns = (10_000, 30_000) if args.quick else tuple(n for n in (10_000, 100_000, 1_000_000) if n <= args.max_n)
    l2, tol = 1e-4, args.tol
    tmp = tempfile.mkdtemp(prefix="skgroup-lbfgs-", dir=args.tmp_dir)
    print(f"\n## L-BFGS: ERMClassifier / LogisticRegression to the same objective and tol={tol} "
          f"({args.features} features, float32, 2 classes, l2_reg={l2}, median of paired repeats)\n")
    from threadpoolctl import threadpool_info

    pools = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
    print(f"threads: torch {torch.get_num_threads()}, BLAS {pools.get('blas')}, OpenMP {pools.get('openmp')}, "
          f"cpus {os.cpu_count()}; "
          "memmap: a read-only np.load(mmap_mode='r') opened afresh for each fit (page cache warm)\n")
    print("| d | n | data MB | X | ERM s | LR s | ERM / LR | ERM iter | LR iter | ERM test acc | LR test acc "
          "| ms / pass (GB/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = []
    largest_map = None

    def measure(label, n, mode, X, path, y, X_te, y_te):
        """Paired, alternating fits of both on X in memory or on the map at ``path``; one table row."""
        def data():
            return X if mode == "memory" else np.load(path, mmap_mode="r")

        nbytes = (X if X is not None else data()).nbytes
        C = 2.0 / (l2 * n)
        erm = ERMClassifier(l2_reg=l2, tol=tol, max_iter=1000)
        lr = LogisticRegression(C=C, tol=tol, max_iter=1000)
        repeats = args.repeats if nbytes < (1 << 30) else max(1, min(args.repeats, 2))
        t_erm, t_lr = [], []
        for r in range(repeats):
            for which in (("erm", "lr") if r % 2 == 0 else ("lr", "erm")):
                Xr = data()
                start = time.perf_counter()
                (erm if which == "erm" else lr).fit(Xr, y)
                (t_erm if which == "erm" else t_lr).append(time.perf_counter() - start)
                del Xr
        ratio = float(np.median(np.array(t_erm) / np.array(t_lr)))
        acc_erm, acc_lr = erm.score(X_te, y_te), lr.score(X_te, y_te)
        per_pass = float("nan")
        if LinearHeadEvaluator is not None:
            ev = LinearHeadEvaluator(data(), y, 2, Objective(), l2, dtype=np.float32)
            x0 = np.zeros(ev.n_params)
            x0[0] = 1e-3  # not the zero start, whose forward product is skipped
            passes_before, start = ev.n_passes, time.perf_counter()
            for _ in range(2):
                ev.fun_grad(x0)
            per_pass = (time.perf_counter() - start) / (ev.n_passes - passes_before)
            del ev
        row = dict(d=label, n=n, mode=mode, data_mb=nbytes / 2**20, erm_s=float(np.median(t_erm)),
                   lr_s=float(np.median(t_lr)), ratio=ratio, erm_iter=int(erm.n_iter_),
                   lr_iter=int(lr.n_iter_[0]), erm_acc=acc_erm, lr_acc=acc_lr, pass_s=per_pass)
        print(f"| {label} | {n} | {row['data_mb']:.0f} | {mode} | {row['erm_s']:.2f} | {row['lr_s']:.2f} | "
              f"{ratio:.2f} | {row['erm_iter']} | {row['lr_iter']} | {acc_erm:.4f} | {acc_lr:.4f} | "
              f"{per_pass * 1e3:.1f} ({nbytes / per_pass / 1e9:.1f}) |", flush=True)
        return row

    try:
        if not args.quick:  # CelebA attributes (38-d, binary), when the data folder is there
            try:
                from skgroup.datasets import load_celeba_attributes

                celeba = load_celeba_attributes()
            except (FileNotFoundError, ImportError):
                celeba = None
            if celeba is not None:
                Xc = np.ascontiguousarray(celeba.train.X, dtype=np.float32)
                path = os.path.join(tmp, "celeba.npy")
                np.save(path, Xc)
                for mode in ("memory", "memmap"):
                    out.append(measure("celeba 38", Xc.shape[0], mode, Xc, path, celeba.train.y,
                                       celeba.test.X, celeba.test.y))
                os.remove(path)
        for d in widths:
            X_te, y_te = _lbfgs_features(10_000, d, args.features, 2)
            for n in ns:
                nbytes = n * d * 4
                avail, free_disk = _mem_available(), shutil.disk_usage(tmp).free
                modes = []
                if avail is None or nbytes < avail / 4:
                    modes.append("memory")
                if nbytes + (2 << 30) < free_disk and (avail is None or nbytes < avail * 0.8):
                    modes.append("memmap")
                if not modes:
                    print(f"| {d} | {n} | {nbytes / 2**20:.0f} | skipped: no room | | | | | | | | |")
                    continue
                X, y = None, None
                path = os.path.join(tmp, f"X_{d}_{n}.npy")
                if "memmap" in modes:
                    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
                    _, y = _lbfgs_features(n, d, args.features, 0, out=mm)
                    mm.flush()
                    del mm
                    np.save(path + ".y.npy", y)
                if "memory" in modes:
                    X, y = (np.load(path), y) if "memmap" in modes else _lbfgs_features(n, d, args.features, 0)
                for mode in modes:
                    out.append(measure(str(d), n, mode, X, path, y, X_te, y_te))
                del X
                if "memmap" in modes:
                    if largest_map is not None and largest_map[0] < nbytes:
                        for f in (largest_map[1], largest_map[1] + ".y.npy"):
                            os.remove(f)
                    if largest_map is None or largest_map[0] < nbytes:
                        largest_map = (nbytes, path)
                    else:
                        os.remove(path)
                        os.remove(path + ".y.npy")
        if largest_map is not None:
            nbytes, path = largest_map
            print(f"\nPeak RSS above the imports, one fit on the largest memory map ({nbytes / 2**20:.0f} MB), "
                  "each in a fresh subprocess (mapped pages of X count: 1.0 is the data itself):\n")
            print("| estimator | fit s | iterations | extra peak MB | / data |")
            print("|---|---|---|---|---|")
            for which in ("erm", "lr"):
                proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, which, path, path + ".y.npy", str(tol)],
                                      capture_output=True, text=True, timeout=7200)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-2000:])
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"| {'ERMClassifier' if which == 'erm' else 'LogisticRegression'} | {res['seconds']:.2f} | "
                      f"{res['n_iter']} | {res['extra_peak_mb']:.0f} | {res['extra_peak_mb'] / res['data_mb']:.2f} |")
                out.append(dict(rss=which, **res))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _worker_threads(_):
    import torch

    return torch.get_num_threads()


def section_search(args):
    import sklearn
    from joblib import Parallel, delayed, parallel_backend
    from sklearn.model_selection import GridSearchCV

    from skgroup import ERMClassifier, worst_group_scorer

    d = _load(args.data)
    tr = d.train
    grid = {"l2_reg": [1e-5, 1e-4, 1e-3, 1e-2]}
    print(f"\n## GridSearchCV ({args.data}, ERMClassifier, 4 candidates x 3 folds)\n")
    print("| backend | n_jobs | seconds | speed-up | torch threads in a worker |")
    print("|---|---|---|---|---|")
    out = []
    with sklearn.config_context(enable_metadata_routing=True):
        def search(n_jobs):
            GridSearchCV(ERMClassifier(), grid, scoring=worst_group_scorer, cv=3, n_jobs=n_jobs).fit(
                tr.X, tr.y, group_labels=tr.group_labels)

        t1 = median_time(lambda: search(1), 1)
        t2 = median_time(lambda: search(2), 1)
        threads = Parallel(n_jobs=2)(delayed(_worker_threads)(i) for i in range(2))
        print(f"| loky (default) | 1 | {t1:.2f} | 1.00 | - |")
        print(f"| loky (default) | 2 | {t2:.2f} | {t1 / t2:.2f} | {threads[0]} |")
        out += [dict(backend="loky", n_jobs=1, seconds=t1), dict(backend="loky", n_jobs=2, seconds=t2)]
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            print("| dask | - | (dask.distributed not installed: pip install dask distributed) | | |")
            return out
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            search(1)  # warm the workers' imports outside the timing
            with parallel_backend("dask"):
                td = median_time(lambda: search(-1), 1)
                dthreads = client.run(lambda: __import__("torch").get_num_threads())
        print(f"| dask.distributed (2 workers x 1 thread) | -1 | {td:.2f} | {t1 / td:.2f} | "
              f"{sorted(set(dthreads.values()))} |")
        out.append(dict(backend="dask", n_jobs=-1, seconds=td))
    return out


def _bare_epoch_loop(X, y, epochs, batch_size, lr, seed):
    """The floor for a minibatch epoch: the same index-sliced batches, a Linear layer, AdamW, nothing else.

    It runs under the engine's thread policy for a step of this size (one
    thread for small products: a second thread costs more than it gives on a
    busy machine), so that the ratio measures the loop, not the thread count.
    """
    import torch

    from skgroup.engine._loop import threads_for_step

    torch.manual_seed(seed)
    lin = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=0.0)
    y_t = torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    with threads_for_step(batch_size * X.shape[1], torch.device("cpu")):
        for _ in range(epochs):
            order = rng.permutation(X.shape[0])
            for start in range(0, order.shape[0], batch_size):
                idx = np.sort(order[start:start + batch_size])
                xb = torch.from_numpy(X[idx])
                loss = torch.nn.functional.cross_entropy(lin(xb), y_t[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return lin


def section_epoch(args):
    """Minibatch epochs of the estimators at d = 2,048 against a bare torch loop over the same batches."""
    import torch

    from skgroup import CVaRClassifier, ERMClassifier, GroupDROClassifier, JTTClassifier

    n, d, bs, epochs = (20_000 if args.quick else 100_000), 2048, 1024, 2
    X, y = _lbfgs_features(n, d, "embed", 0)
    g = (y * 2 + (np.arange(n) % 7 == 0)).astype(np.int64)  # four groups for Group DRO
    print(f"\n## Minibatch epochs at d = {d}: estimators against a bare torch loop ({n} x {d} float32, batch {bs}, "
          f"AdamW, {epochs} epochs, torch threads {torch.get_num_threads()}, median of {args.repeats})\n")
    print("| loop | s / epoch | / bare loop |")
    print("|---|---|---|")
    common = dict(solver="adamw", batch_size=bs, learning_rate=1e-3, l2_reg=0.0, early_stopping=False,
                  random_state=0)
    # first calls (torch's lazy initialisation, AdamW's kernels) outside the timings
    _bare_epoch_loop(X[:4096], y[:4096], 1, bs, 1e-3, 0)
    ERMClassifier(max_iter=1, **common).fit(X[:4096], y[:4096])
    t_bare = median_time(lambda: _bare_epoch_loop(X, y, epochs, bs, 1e-3, 0), args.repeats) / epochs
    print(f"| bare loop (index slicing, Linear, cross-entropy, AdamW) | {t_bare:.3f} | 1.00 |")
    out = [dict(loop="bare", epoch_s=t_bare)]
    fits = {
        "ERMClassifier": lambda: ERMClassifier(max_iter=epochs, **common).fit(X, y),
        "GroupDROClassifier": lambda: GroupDROClassifier(max_iter=epochs, **common).fit(X, y, group_labels=g),
        "CVaRClassifier": lambda: CVaRClassifier(max_iter=epochs, alpha=0.1, **common).fit(X, y),
        # JTT: 1 identification + 1 final epoch (the final epoch holds the upsampled rows too)
        "JTTClassifier (1 + 1 epochs, per epoch)": lambda: JTTClassifier(max_iter=1, id_epochs=1, lambda_up=1,
                                                                            **common).fit(X, y),
    }
    for name, fit in fits.items():
        t = median_time(fit, args.repeats) / epochs
        print(f"| {name} | {t:.3f} | {t / t_bare:.2f} |", flush=True)
        out.append(dict(loop=name, epoch_s=t, ratio=t / t_bare))
    return out


_OOC_CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
which, path, ypath = sys.argv[1], sys.argv[2], sys.argv[3]
import torch
torch.set_num_threads(2)
from skgroup import ERMClassifier, GroupDROClassifier, JTTClassifier
X = np.load(path, mmap_mode="r")
y = np.load(ypath)
g = (y * 2 + (np.arange(y.shape[0]) % 7 == 0)).astype(np.int64)
common = dict(batch_size=1024, learning_rate=1e-3, early_stopping=False, random_state=0)
if which == "erm":
    model, kw, epochs = ERMClassifier(l2_reg=1e-4, max_iter=int(sys.argv[4])), {}, None
elif which == "group_dro":
    model, kw, epochs = GroupDROClassifier(max_iter=1, **common), {"group_labels": g}, 1
else:
    model, kw, epochs = JTTClassifier(id_epochs=1, max_iter=1, **common), {}, 2
warm = {k: v[:2000] for k, v in kw.items()}
type(model)(**model.get_params()).fit(np.ascontiguousarray(X[:2000]), y[:2000], **warm)  # warm-up

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the warm-up's peak does not count
base = status("VmRSS")
start = time.perf_counter()
model.fit(X, y, **kw)
secs = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps(dict(seconds=secs, epochs=epochs if epochs else int(model.n_iter_), data_mb=X.nbytes / 2**20,
                      extra_peak_mb=(peak - base) / 1024)))
"""


def section_outofcore(args):
    """ERM (L-BFGS), Group DRO and JTT (minibatch) on a read-only memory map of --max-n x 2,048 float32."""
    n, d = (50_000 if args.quick else args.max_n), 2048
    tmp = tempfile.mkdtemp(prefix="skgroup-ooc-", dir=args.tmp_dir)
    try:
        path = os.path.join(tmp, "X.npy")
        if n * d * 4 + (2 << 30) > shutil.disk_usage(tmp).free:
            print(f"\n## Out of core: skipped, no room for {n * d * 4 / 2**30:.1f} GiB in {tmp}")
            return []
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        _, y = _lbfgs_features(n, d, "embed", 0, out=mm)
        mm.flush()
        del mm
        np.save(path + ".y.npy", y)
        print(f"\n## Out of core: {n} x {d} float32 ({n * d * 4 / 2**30:.1f} GiB) as a read-only memory map, "
              "each fit in a fresh subprocess; peak RSS above the imports and a warm-up fit (mapped pages of X "
              "count: 1.0 is the data itself)\n")
        print("| estimator | fit s | epochs (L-BFGS iterations) | s / epoch | extra peak MB | / data |")
        print("|---|---|---|---|---|---|")
        out = []
        for which, label in (("erm", "ERMClassifier (L-BFGS)"), ("group_dro", "GroupDROClassifier (AdamW)"),
                             ("jtt", "JTTClassifier (1 + 1 epochs)")):
            proc = subprocess.run([sys.executable, "-c", _OOC_CHILD, which, path, path + ".y.npy",
                                   str(args.ooc_iter)], capture_output=True, text=True, timeout=7200)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-2000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {label} | {res['seconds']:.1f} | {res['epochs']} | {res['seconds'] / res['epochs']:.2f} | "
                  f"{res['extra_peak_mb']:.0f} | {res['extra_peak_mb'] / res['data_mb']:.2f} |", flush=True)
            out.append(dict(estimator=which, **res))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SECTIONS = {"ratios": section_ratios, "reference": section_reference, "search": section_search,
            "scale": section_scale, "lbfgs": section_lbfgs, "epoch": section_epoch, "outofcore": section_outofcore}
DEFAULT_SECTIONS = ["ratios", "reference", "search", "scale"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="celeba", choices=["celeba", "synthetic"])
    p.add_argument("--sections", nargs="*", default=DEFAULT_SECTIONS, choices=list(SECTIONS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-n", type=int, default=200_000)
    p.add_argument("--json", default=None, help="also write the raw numbers to this file")
    p.add_argument("--quick", action="store_true", help="lbfgs: small sizes only")
    p.add_argument("--features", default="embed", choices=["embed", "gauss"], help="lbfgs: synthetic features")
    p.add_argument("--tol", type=float, default=1e-5, help="lbfgs: gradient tolerance of both estimators")
    p.add_argument("--tmp-dir", default=None, help="lbfgs: where the memory maps go (default: the temp dir)")
    p.add_argument("--ooc-iter", type=int, default=30, help="outofcore: ERM's L-BFGS iterations (default 30)")
    p.add_argument("--threads", type=int, default=None, help="lbfgs: limit BLAS and torch threads of both")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    results = {s: SECTIONS[s](args) for s in args.sections}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
