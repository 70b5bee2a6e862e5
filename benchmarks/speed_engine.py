"""Speed of the training engine against its floors, as ratios measured in one process.

Two sections (``--sections``; both by default):

* ``epoch``: a minibatch fit of each reduction against a bare torch loop over the same batches
  (index-sliced rows of X, ``torch.nn.Linear``, cross-entropy, AdamW, nothing else): ERM
  (mean), ERM with ``class_weight='balanced'`` (weighted mean), CVaR DRO, Group DRO (its
  balanced sampler and the online q update) and JTT (one identification epoch, the prediction of
  the error set, then the final epochs over the upsampled rows, against a bare loop doing the
  same: an identification epoch, a forward pass over X, then epochs over the same upsampled
  order). Each method is held against its own plainest loop (``bare_weighted``: mean(w_i l_i);
  ``bare_cvar``: the batch's top-k mean by ``torch.topk``; ``bare_group_dro``: group-balanced
  draws by ``rng.choice``, the per-group means through a one-hot matrix and the q update of
  kohpangwei/group_DRO's ``loss.py``), which is the comparison of the goal; the weighted mean,
  CVaR and Group DRO also against the plain ERM loop, where the ratio holds what the method
  itself costs. Every contender runs for ``--epochs`` and for 3x as many epochs: the *epoch
  ratio* is the cost of an epoch, (fit(3E) - fit(E)) / (bare(3E) - bare(E)); the *fit ratio* is
  the whole fit of E epochs against the bare loop's (input checks, the engine's set-up, the
  post-fit majority check, everything a user waits for); the *fixed* column is what a fit costs
  beyond its epochs, above the bare loop's, in ms. Goal (issue 20): an epoch <= 1.2x.
* ``lbfgs``: ``ERMClassifier`` (full-batch L-BFGS) against scikit-learn's
  ``LogisticRegression(solver='lbfgs')`` to the same objective (``C = 2 / (l2_reg n)``, two
  classes) and the same ``tol``, on centred Gaussian features (``gauss``) and on non-negative,
  off-centre, correlated ones like a network's activations (``embed``), at d in {38, 384,
  2048}, with test accuracy and iterations side by side. Both run on the same array in the same
  dtype (scikit-learn >= 1.8 keeps float32 input in float32 for lbfgs, as ERM does; with
  ``--dtypes float64`` both run in float64). ``--issue-case`` adds the case of issue 20: a
  centred Gaussian 150,000 x 2,048 float32 read-only memory map (opened afresh for each fit).
  Goal: <= 1.0x.

Timing: every repeat runs each contender once, in an order rotated between repeats; a ratio is
the median over repeats of the per-repeat ratio (both sides of a ratio measured seconds apart),
with its range over repeats, which is the noise to read it with. Both the CPU time of the
process (``time.process_time``: on a machine shared with other work it leaves out the time
spent waiting for a core, so it is the steadier number; with one thread it is the work) and
the wall time are reported. ``--threads`` (default 1) sets torch's and BLAS/OpenMP's thread
count for both sides alike.

Usage::

    nice -n 10 python benchmarks/speed_engine.py                          # both sections (~30 min loaded)
    nice -n 10 python benchmarks/speed_engine.py --sections epoch --d 2048 --n 100000
    nice -n 10 python benchmarks/speed_engine.py --sections lbfgs --n 100000 --issue-case
    python benchmarks/speed_engine.py --quick                             # small sizes (a smoke run)
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speed import _lbfgs_features  # noqa: E402  (benchmarks/ is on sys.path)


def _timed(fn):
    """(wall s, cpu s, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def paired(contenders, repeats):
    """Run every contender once per repeat, rotating the order; {name: {'wall': [...], 'cpu': [...]}}."""
    names = list(contenders)
    times = {k: {"wall": [], "cpu": []} for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for k in order:
            wall, cpu, _ = _timed(contenders[k])
            times[k]["wall"].append(wall)
            times[k]["cpu"].append(cpu)
    return times


def ratio(times, a, b, clock):
    """Median over repeats of a's time / b's, and the (min, max) of those ratios."""
    r = np.array(times[a][clock]) / np.array(times[b][clock])
    return float(np.median(r)), float(r.min()), float(r.max())


def fmt_ratio(rt):
    med, lo, hi = rt
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]"


# ---------------------------------------------------------------------------------------------
# minibatch epochs


def _zero_head(X, y, lr):
    """A Linear layer from zero (as the engine's heads start, so JTT's error sets agree) and its AdamW."""
    import torch

    lin = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
    return lin, torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=0.0)


def _bare_epochs(X, y, orders, batch_size, lr):
    """The floor: for each epoch's order, index-sliced batches, a Linear layer, cross-entropy, AdamW."""
    import torch

    lin, opt = _zero_head(X, y, lr)
    y_t = torch.from_numpy(y)
    for order in orders:
        for start in range(0, order.shape[0], batch_size):
            idx = np.sort(order[start:start + batch_size])
            xb = torch.from_numpy(X[idx])
            loss = torch.nn.functional.cross_entropy(lin(xb), y_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return lin


def _bare_reduced(X, y, epochs, batch_size, lr, seed, reduce):
    """The bare loop's batches with per-row losses, the step on ``reduce(losses, idx)``."""
    import torch

    rng = np.random.default_rng(seed)
    lin, opt = _zero_head(X, y, lr)
    y_t = torch.from_numpy(y)
    for _ in range(epochs):
        order = rng.permutation(X.shape[0])
        for start in range(0, order.shape[0], batch_size):
            idx = np.sort(order[start:start + batch_size])
            losses = torch.nn.functional.cross_entropy(lin(torch.from_numpy(X[idx])), y_t[idx], reduction="none")
            loss = reduce(losses, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return lin


def bare_weighted(X, y, epochs, batch_size, lr, seed, sample_weight):
    """The weighted mean's floor: the step on mean(w_i l_i) (weights normalised to mean 1, as scikit-learn's
    sample_weight contract and the engine have them)."""
    import torch

    w = torch.as_tensor(sample_weight / sample_weight.mean(), dtype=torch.float32)
    return _bare_reduced(X, y, epochs, batch_size, lr, seed, lambda losses, idx: (w[idx] * losses).mean())


def bare_group_dro(X, y, g, epochs, batch_size, lr, seed, eta=0.01):
    """Group DRO's floor: group-balanced draws with replacement (``rng.choice`` with weights 1 / (G n_g)), then
    per batch the group mean losses through a one-hot matrix, q <- q exp(eta l_g) normalised, and the step on
    sum_g q_g l_g (kohpangwei/group_DRO ``loss.py``)."""
    import torch

    rng = np.random.default_rng(seed)
    n_groups = int(g.max()) + 1
    counts = np.bincount(g, minlength=n_groups)
    p = 1.0 / (n_groups * counts[g])
    lin, opt = _zero_head(X, y, lr)
    y_t = torch.from_numpy(y)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(g), n_groups).float()
    q = torch.full((n_groups,), 1.0 / n_groups)
    for _ in range(epochs):
        order = rng.choice(X.shape[0], X.shape[0], replace=True, p=p / p.sum())
        for start in range(0, order.shape[0], batch_size):
            idx = np.sort(order[start:start + batch_size])
            losses = torch.nn.functional.cross_entropy(lin(torch.from_numpy(X[idx])), y_t[idx], reduction="none")
            member = onehot[idx]
            count = member.sum(0)
            group_loss = (member.T @ losses) / count.clamp(min=1)
            with torch.no_grad():
                q = q * torch.exp(eta * torch.where(count > 0, group_loss.detach(), 0.0))
                q = q / q.sum()
            loss = (q * group_loss).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return lin


def bare_cvar(X, y, epochs, batch_size, lr, seed, alpha):
    """CVaR DRO's floor: the step on the mean of the batch's ceil(alpha m) largest losses (torch.topk)."""
    import math

    import torch

    return _bare_reduced(X, y, epochs, batch_size, lr, seed,
                         lambda losses, idx: torch.topk(losses, math.ceil(alpha * idx.shape[0])).values.mean())


def bare_loop(X, y, epochs, batch_size, lr, seed):
    rng = np.random.default_rng(seed)
    return _bare_epochs(X, y, (rng.permutation(X.shape[0]) for _ in range(epochs)), batch_size, lr)


def bare_jtt(X, y, id_epochs, epochs, lambda_up, batch_size, lr, seed):
    """JTT's floor: identification epochs, a forward pass over X, then epochs over the upsampled rows."""
    import torch

    rng = np.random.default_rng(seed)
    lin = _bare_epochs(X, y, (rng.permutation(X.shape[0]) for _ in range(id_epochs)), batch_size, lr)
    with torch.no_grad():
        pred = np.concatenate([lin(torch.from_numpy(X[s:s + 65536])).argmax(1).numpy()
                               for s in range(0, X.shape[0], 65536)])
    rows = np.repeat(np.arange(X.shape[0]), np.where(pred != y, lambda_up, 1))
    rng = np.random.default_rng(seed + 1)
    _bare_epochs(X, y, (rng.permutation(rows) for _ in range(epochs)), batch_size, lr)
    return rows.shape[0]


def section_epoch(args):
    import torch
    from sklearn.utils.class_weight import compute_sample_weight

    from skgroup import CVaRClassifier, ERMClassifier, GroupDROClassifier, JTTClassifier
    from skgroup._cache import SHARED_FITS

    bs, lr, lam = args.batch_size, 1e-3, 5
    e1, e2 = args.epochs, 3 * args.epochs
    out = []
    print(f"\n## Minibatch epochs against a bare torch loop over the same batches (float32, batch {bs}, AdamW "
          f"lr {lr}, l2_reg 0, fits of {e1} and of {e2} epochs (JTT: 1 identification + {e1} or {e2} final), "
          f"torch threads {torch.get_num_threads()}, BLAS threads {_blas_threads()}, {args.repeats} repeats)\n")
    print(f"epoch ratio: the cost of an epoch, (fit({e2}) - fit({e1})) / (bare({e2}) - bare({e1})); fit ratio: "
          f"whole fits of {e1} epochs, fit / bare (checks, set-up and post-fit passes included); medians over "
          "repeats [min-max], CPU time of the process; fixed: what a fit costs beyond its epochs, above the bare "
          "loop's (ms)\n")
    print("| n x d | reduction | floor | bare s/epoch | epoch ratio | fit ratio | fixed ms over bare |")
    print("|---|---|---|---|---|---|---|")
    for d in args.d:
        n = args.n
        X, y = _lbfgs_features(n, d, "embed", 0)
        g = (y * 2 + (np.arange(n) % 7 == 0)).astype(np.int64)  # four groups for Group DRO
        w = compute_sample_weight("balanced", y)
        common = dict(solver="adamw", batch_size=bs, learning_rate=lr, l2_reg=0.0, early_stopping=False,
                      random_state=0)
        # first calls (torch's lazy initialisation, AdamW's kernels) outside the timings
        bare_loop(X[:2048], y[:2048], 1, bs, lr, 0)
        ERMClassifier(max_iter=1, **common).fit(X[:2048], y[:2048])

        def contenders(e):
            return {
                "bare": lambda: bare_loop(X, y, e, bs, lr, 0),
                "bare weighted": lambda: bare_weighted(X, y, e, bs, lr, 0, w),
                "bare CVaR": lambda: bare_cvar(X, y, e, bs, lr, 0, 0.1),
                "bare Group DRO": lambda: bare_group_dro(X, y, g, e, bs, lr, 0),
                "bare JTT": lambda: bare_jtt(X, y, 1, e, lam, bs, lr, 0),
                "mean (ERMClassifier)": lambda: ERMClassifier(max_iter=e, **common).fit(X, y),
                "weighted (ERMClassifier, class_weight='balanced')":
                    lambda: ERMClassifier(max_iter=e, class_weight="balanced", **common).fit(X, y),
                "CVaR (CVaRClassifier, alpha=0.1)": lambda: CVaRClassifier(max_iter=e, alpha=0.1, **common).fit(X, y),
                "Group DRO (GroupDROClassifier)":
                    lambda: GroupDROClassifier(max_iter=e, **common).fit(X, y, group_labels=g),
                # a first fit on these rows: the shared identification model of an earlier repeat forgotten
                f"JTT (JTTClassifier, upsample, lambda_up={lam})":
                    lambda: (SHARED_FITS.clear(), JTTClassifier(max_iter=e, id_epochs=1, lambda_up=lam,
                                                                **common).fit(X, y)),
            }

        fits = {f"{k}@{e}": f for e in (e1, e2) for k, f in contenders(e).items()}
        times = paired(fits, args.repeats)
        jtt = JTTClassifier(max_iter=e1, id_epochs=1, lambda_up=lam, **common).fit(X, y)
        jtt_rows = int(n + (lam - 1) * jtt.error_set_.sum())
        bare_jtt_rows = bare_jtt(X, y, 1, 0, lam, bs, lr, 0)
        # each method against the plainest loop of the same method; CVaR and Group DRO also against the plain
        # ERM loop (the ratio then holds what the method itself costs)
        pairs = [("mean (ERMClassifier)", "bare"),
                 ("weighted (ERMClassifier, class_weight='balanced')", "bare weighted"),
                 ("weighted (ERMClassifier, class_weight='balanced')", "bare"),
                 ("CVaR (CVaRClassifier, alpha=0.1)", "bare CVaR"), ("CVaR (CVaRClassifier, alpha=0.1)", "bare"),
                 ("Group DRO (GroupDROClassifier)", "bare Group DRO"), ("Group DRO (GroupDROClassifier)", "bare"),
                 (f"JTT (JTTClassifier, upsample, lambda_up={lam})", "bare JTT")]
        cpu = {k: np.array(v["cpu"]) for k, v in times.items()}
        for name, base in pairs:
            a1, a2, b1, b2 = cpu[f"{name}@{e1}"], cpu[f"{name}@{e2}"], cpu[f"{base}@{e1}"], cpu[f"{base}@{e2}"]
            # JTT's final epochs are over the upsampled rows in both loops; the identification epoch is in
            # both fits of a pair, so it cancels from the epoch ratio and stays in the fixed cost
            epoch_r = (a2 - a1) / (b2 - b1)
            fit_r = a1 / b1
            slope_a, slope_b = (a2 - a1) / (e2 - e1), (b2 - b1) / (e2 - e1)
            fixed = ((a1 - e1 * slope_a) - (b1 - e1 * slope_b)) * 1e3
            med = lambda r: (float(np.median(r)), float(r.min()), float(r.max()))  # noqa: E731
            print(f"| {n} x {d} | {name} | {base} | {np.median(slope_b):.3f} | {fmt_ratio(med(epoch_r))} | "
                  f"{fmt_ratio(med(fit_r))} | {np.median(fixed):.0f} |", flush=True)
            out.append(dict(n=n, d=d, reduction=name, baseline=base, epochs=[e1, e2],
                            fit_cpu={e: times[f"{name}@{e}"]["cpu"] for e in (e1, e2)},
                            bare_cpu={e: times[f"{base}@{e}"]["cpu"] for e in (e1, e2)},
                            epoch_ratio=med(epoch_r), fit_ratio=med(fit_r), fixed_ms=float(np.median(fixed))))
        print(f"| {n} x {d} | (JTT's upsampled epoch: {jtt_rows} rows in the fit, {bare_jtt_rows} in the bare "
              "loop) | | | | | |", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# full-batch L-BFGS against LogisticRegression


def _blas_threads():
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)


def section_lbfgs(args):
    from sklearn.linear_model import LogisticRegression

    from skgroup import ERMClassifier

    l2, tol = 1e-4, args.tol
    print(f"\n## ERMClassifier (L-BFGS) against LogisticRegression(solver='lbfgs'): same objective (l2_reg={l2}, "
          f"C = 2 / (l2_reg n)), tol={tol}, 2 classes, both on the same array in the same dtype, threads: torch "
          f"{_torch_threads()}, BLAS {_blas_threads()}; {args.repeats} repeats\n")
    print("| features | n x d | dtype | X | ERM s (CPU) | LR s (CPU) | ERM / LR (CPU) | ERM / LR (wall) | "
          "ERM iter | LR iter | ERM test acc | LR test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = []
    tmp = tempfile.mkdtemp(prefix="skgroup-speed-engine-", dir=args.tmp_dir)

    def measure(kind, n, d, dtype, mode, X, y, X_te, y_te, path=None):
        def data():
            return X if mode == "memory" else np.load(path, mmap_mode="r")

        erm = ERMClassifier(l2_reg=l2, tol=tol, max_iter=1000, dtype=dtype)
        lr = LogisticRegression(C=2.0 / (l2 * n), tol=tol, max_iter=1000)
        times = paired({"erm": lambda: erm.fit(data(), y), "lr": lambda: lr.fit(data(), y)}, args.repeats)
        rc, rw = ratio(times, "erm", "lr", "cpu"), ratio(times, "erm", "lr", "wall")
        X_te = X_te.astype(dtype)
        row = dict(features=kind, n=n, d=d, dtype=dtype, mode=mode, erm_cpu=times["erm"]["cpu"],
                   lr_cpu=times["lr"]["cpu"], erm_wall=times["erm"]["wall"], lr_wall=times["lr"]["wall"],
                   ratio_cpu=rc, ratio_wall=rw, erm_iter=int(erm.n_iter_), lr_iter=int(np.max(lr.n_iter_)),
                   erm_acc=float(erm.score(X_te, y_te)), lr_acc=float(lr.score(X_te, y_te)))
        print(f"| {kind} | {n} x {d} | {dtype} | {mode} | {np.median(row['erm_cpu']):.3f} | "
              f"{np.median(row['lr_cpu']):.3f} | {fmt_ratio(rc)} | {fmt_ratio(rw)} | {row['erm_iter']} | "
              f"{row['lr_iter']} | {row['erm_acc']:.4f} | {row['lr_acc']:.4f} |", flush=True)
        return row

    # first calls (torch's and scipy's) outside the timings
    Xw, yw = _lbfgs_features(2000, 16, "embed", 1)
    ERMClassifier().fit(Xw, yw)
    LogisticRegression().fit(Xw, yw)
    try:
        for kind in args.features:
            for d in args.d:
                X32, y = _lbfgs_features(args.n, d, kind, 0)
                X_te, y_te = _lbfgs_features(10_000, d, kind, 2)
                for dtype in args.dtypes:
                    X = X32 if dtype == "float32" else X32.astype(dtype)
                    out.append(measure(kind, args.n, d, dtype, "memory", X, y, X_te, y_te))
                    del X
                del X32
        if args.issue_case:
            n, d = 150_000, 2048
            path = os.path.join(tmp, "X.npy")
            if n * d * 4 + (1 << 30) > shutil.disk_usage(tmp).free:
                print(f"| gauss | {n} x {d} | float32 | memmap | skipped: no room in {tmp} | | | | | | | |")
            else:
                mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
                _, y = _lbfgs_features(n, d, "gauss", 0, out=mm)
                mm.flush()
                del mm
                X_te, y_te = _lbfgs_features(10_000, d, "gauss", 2)
                out.append(measure("gauss", n, d, "float32", "memmap", None, y, X_te, y_te, path=path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _torch_threads():
    import torch

    return torch.get_num_threads()


SECTIONS = {"epoch": section_epoch, "lbfgs": section_lbfgs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--n", type=int, default=None, help="rows (default: 100,000; --quick: 5,000)")
    p.add_argument("--d", type=int, nargs="*", default=None, help="widths (default: 38 384 2048)")
    p.add_argument("--features", nargs="*", default=["gauss", "embed"], choices=["gauss", "embed"],
                   help="lbfgs: centred Gaussian and/or off-centre embedding-like features")
    p.add_argument("--dtypes", nargs="*", default=["float32"], choices=["float32", "float64"],
                   help="lbfgs: the dtype both estimators train in")
    p.add_argument("--issue-case", action="store_true",
                   help="lbfgs: also issue 20's 150,000 x 2,048 centred Gaussian float32 memory map")
    p.add_argument("--epochs", type=int, default=2,
                   help="epoch: epochs of the shorter fit (the longer has 3x; JTT: final epochs)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS/OpenMP threads of both sides (0: leave)")
    p.add_argument("--tmp-dir", default=None, help="where the memory map of --issue-case goes")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--json", default=None, help="also write the raw times to this file")
    args = p.parse_args(argv)
    args.n = args.n or (5_000 if args.quick else 100_000)
    args.d = args.d or ([38, 384] if args.quick else [38, 384, 2048])
    if args.quick:
        args.repeats = min(args.repeats, 2)
    warnings.simplefilter("ignore")
    import torch
    from threadpoolctl import threadpool_limits

    # load every thread pool (torch, BLAS, scikit-learn's OpenMP) before limiting them
    from sklearn.linear_model import LogisticRegression

    LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    if args.threads:
        torch.set_num_threads(args.threads)
        with threadpool_limits(args.threads):
            results = {s: SECTIONS[s](args) for s in args.sections}
    else:
        results = {s: SECTIONS[s](args) for s in args.sections}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
