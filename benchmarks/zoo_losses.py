"""The class-imbalance losses of the method zoo next to ERM: at their defaults and tuned.

Methods: ERM, Focal, CBLoss, LDAM-DRW, Balanced Softmax (SubpopBench's class-imbalance
baselines). For each benchmark and seed, each method is

* fitted at its defaults on the training split (no validation data), and
* tuned by ``RobustSearchCV([name], selection='worst_group')`` over its registered search space
  on the validation split (group labels on validation only; candidates early-stop on validation
  worst-group accuracy), the winner refitted on the training split;

and scored on the test split: average accuracy, worst-group accuracy (WGA), worst-class accuracy
(on these balanced test splits, the minority class's recall when the training classes are
imbalanced), and the fit time (defaults) or search time (tuned) with its ratio to ERM's in the
same process.

Benchmarks:

* ``synthetic``: ``make_spurious_benchmark`` (3,000 / 1,000 / 2,000 rows; the classes are
  balanced, the groups are not: these losses see no class imbalance there);
* ``synthetic-imbalanced``: the same draws with the training rows of class 1 thinned to a
  tenth (class imbalance 10:1, on top of the spurious groups); validation and test unchanged;
* ``gaussians``: two unit-covariance Gaussian classes in 5 dimensions, means 2 apart, 2,000 and
  100 training rows (20:1), 500 + 500 validation and 3,000 + 3,000 test rows; the groups are the
  classes (WGA = worst-class accuracy = the minority's recall on test). A linear head is well
  specified here: the Bayes boundary of the training distribution is ERM's;
* ``celeba``: CelebA attributes (Blond_Hair, 15% positives in training), the official split
  (L-BFGS from a zero head is deterministic: one seed suffices).

Every finished (benchmark, seed, method, mode) is appended to ``runs.jsonl`` in the results folder,
so a killed run keeps what it did and a restart skips it. Usage::

    nice -n 10 python benchmarks/zoo_losses.py --benchmark synthetic --seeds 3
    nice -n 10 python benchmarks/zoo_losses.py --benchmark synthetic-imbalanced --seeds 3
    nice -n 10 python benchmarks/zoo_losses.py --benchmark celeba --seeds 1
    python benchmarks/zoo_losses.py --table results/zoo_losses    # the tables of every run so far
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from skgroup.estimators import get_spec
from skgroup.metrics import worst_class_accuracy, worst_group_accuracy
from skgroup.model_selection import RobustSearchCV

METHODS = ["ERMClassifier", "FocalClassifier", "CBLossClassifier", "LDAMClassifier", "BalancedSoftmaxClassifier"]
#: Settings of a method run at its defaults beside it (no tuned run): LDAM without its deferred
#: re-weighting is SubpopBench's LDAM; re-weighted from the start, the paper's LDAM-RW (on a linear
#: head under L-BFGS the same minimiser as LDAM-DRW, without the first stage's cost).
VARIANTS = {"LDAMClassifier(drw_start=1)": ("LDAMClassifier", {"drw_start": 1.0}),
            "LDAMClassifier(drw_start=0)": ("LDAMClassifier", {"drw_start": 0.0})}


def load(benchmark, seed):
    from skgroup.datasets import load_celeba_attributes, make_spurious_benchmark

    if benchmark == "celeba":
        return load_celeba_attributes()
    if benchmark == "gaussians":
        rng = np.random.default_rng(seed)
        splits = {}
        for split, (n0, n1) in (("train", (2000, 100)), ("val", (500, 500)), ("test", (3000, 3000))):
            mu = np.zeros(5)
            mu[0] = 1.0
            X = np.vstack([rng.normal(size=(n0, 5)) - mu, rng.normal(size=(n1, 5)) + mu]).astype(np.float32)
            y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
            splits[split] = Bunch(X=X, y=y, group_labels=y.copy())
        return Bunch(**splits, name="gaussians")
    data = make_spurious_benchmark(3000, 1000, 2000, random_state=seed)
    if benchmark == "synthetic-imbalanced":
        tr = data.train
        rng = np.random.default_rng(seed)
        keep = (tr.y == 0) | (rng.random(tr.y.shape[0]) < 0.1)
        data.train = Bunch(**{k: v[keep] for k, v in tr.items()})
    elif benchmark != "synthetic":
        raise SystemExit(f"unknown benchmark {benchmark!r}")
    return data


def scores(est, data):
    te = data.test
    pred = est.predict(te.X)
    return {"test_acc": float(np.mean(pred == te.y)),
            "test_wga": float(worst_group_accuracy(te.y, pred, group_labels=te.group_labels)),
            "test_wca": float(worst_class_accuracy(te.y, pred))}


def run(benchmark, seed, name, mode):
    data = load(benchmark, seed)
    tr, va = data.train, data.val
    base, variant = VARIANTS.get(name, (name, {}))
    cls = get_spec(base).estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if mode == "default":
            est = cls(random_state=seed, **variant).fit(tr.X, tr.y)
            params = {}
        else:
            search = RobustSearchCV([name], selection="worst_group", random_state=seed)
            search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
            est, params = search.best_estimator_, search.best_params_
        seconds = time.perf_counter() - start
    return {"benchmark": benchmark, "seed": seed, "estimator": name, "mode": mode, "seconds": seconds,
            "params": {k: (v if isinstance(v, (int, float, str)) or v is None else repr(v)) for k, v in params.items()},
            "n_train": int(len(tr.y)), "train_class_counts": np.bincount(tr.y).tolist(), **scores(est, data)}


def table(records, benchmark):
    rows = [r for r in records if r["benchmark"] == benchmark]
    if not rows:
        return ""
    seeds = sorted({r["seed"] for r in rows})
    out = [f"{benchmark}: {len(seeds)} seed(s); test average / worst-group / worst-class accuracy "
           "(mean ± std of WGA and WCA over seeds), time and its ratio to ERM's", ""]
    header = ("estimator", "mode", "avg acc", "WGA", "worst-class", "seconds", "x ERM")
    lines = []
    for mode in ("default", "tuned"):
        erm = [r["seconds"] for r in rows if r["estimator"] == "ERMClassifier" and r["mode"] == mode]
        for name in [*METHODS, *VARIANTS]:
            rs = [r for r in rows if r["estimator"] == name and r["mode"] == mode]
            if not rs:
                continue
            acc = np.mean([r["test_acc"] for r in rs])
            wga = [r["test_wga"] for r in rs]
            wca = [r["test_wca"] for r in rs]
            sec = np.mean([r["seconds"] for r in rs])
            ratio = f"{sec / np.mean(erm):.2f}" if erm else "-"
            lines.append((name, mode, f"{acc:.3f}", f"{np.mean(wga):.3f} ± {np.std(wga):.3f}",
                          f"{np.mean(wca):.3f} ± {np.std(wca):.3f}", f"{sec:.2f}", ratio))
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    rule = " ".join("=" * w for w in widths)
    fmt = lambda row: " ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    out += [rule, fmt(header), rule, *map(fmt, lines), rule]
    tuned = [r for r in rows if r["mode"] == "tuned" and r["params"]]
    if tuned:
        out += ["", "tuned picks (seed: params):"]
        for name in METHODS:
            picks = [f"{r['seed']}: {r['params']}" for r in tuned if r["estimator"] == name]
            if picks:
                out.append(f"  {name}: " + "; ".join(picks))
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="synthetic",
                        choices=["synthetic", "synthetic-imbalanced", "gaussians", "celeba"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=[*METHODS, *VARIANTS])
    parser.add_argument("--modes", nargs="*", default=["default", "tuned"])
    parser.add_argument("--out", default="results/zoo_losses")
    parser.add_argument("--table", metavar="FOLDER", help="print the tables of the runs in FOLDER and exit")
    args = parser.parse_args(argv)
    use_project_data()
    folder = Path(args.table or args.out)
    path = folder / "runs.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.table:
        import torch

        torch.set_num_threads(1)
        folder.mkdir(parents=True, exist_ok=True)
        # the first fit of a process pays for imports and torch's set-up: not any method's time
        warm = load(args.benchmark, 0).train
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step = max(1, len(warm.y) // 500)
            get_spec("ERMClassifier").estimator(max_iter=5).fit(warm.X[::step], warm.y[::step])
        done = {(r["benchmark"], r["seed"], r["estimator"], r["mode"]) for r in records}
        for seed in range(args.seeds):
            for mode in args.modes:
                for name in args.methods:
                    if (args.benchmark, seed, name, mode) in done or (mode == "tuned" and name in VARIANTS):
                        continue
                    record = run(args.benchmark, seed, name, mode)
                    records.append(record)
                    with path.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    print(f"{args.benchmark} seed {seed} {mode:7s} {name:26s} acc {record['test_acc']:.3f} "
                          f"wga {record['test_wga']:.3f} wca {record['test_wca']:.3f} {record['seconds']:.2f}s",
                          file=sys.stderr, flush=True)
    for benchmark in ([args.benchmark] if not args.table else sorted({r["benchmark"] for r in records})):
        print(table(records, benchmark), end="\n\n")


if __name__ == "__main__":
    main()
