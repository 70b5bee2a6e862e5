"""Mixup, LISA and LfF next to ERM: defaults, defaults with early stopping, and tuned by RobustSearchCV.

For every seed and method: the defaults without validation; the defaults with
early stopping on the validation worst-group accuracy (``X_val``, ``y_val``,
``group_labels_val``); and ``RobustSearchCV([name], selection='worst_group')``
over the registered search space (each candidate early-stopped on the same
validation rows). LISA trains on the training group labels; the others get
none in training. Test average / worst-group accuracy, mean ± std over seeds;
fit time of the defaults (median over seeds) and its ratio to ERM's (L-BFGS)
in the same process; search time::

    python benchmarks/zoo_augment.py --benchmark synthetic --seeds 3
    python benchmarks/zoo_augment.py --benchmark celeba --seeds 1 --no-search

``--learning-rates`` instead fits each method with early stopping at each
given learning rate (how the reference rate of ``learning_rate='auto'`` was
chosen; on CelebA attributes 'auto' is the rate itself)::

    python benchmarks/zoo_augment.py --benchmark celeba --seeds 1 --learning-rates 1e-3 1e-2 3e-2
"""

import argparse
import sys
import time
import warnings

import numpy as np
import torch

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from compare import load_benchmark
from skgroup.estimators import get_spec
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import RobustSearchCV

METHODS = ["ERMClassifier", "MixupClassifier", "LISAClassifier", "LfFClassifier"]


def _test(est, te):
    pred = est.predict(te.X)
    return float(np.mean(pred == te.y)), float(worst_group_accuracy(te.y, pred, group_labels=te.group_labels))


def run(benchmark, seeds, methods, out=sys.stdout, search=True):
    rows = {}
    for seed in seeds:
        data = load_benchmark(benchmark, seed)
        tr, va, te = data.train, data.val, data.test
        for name in methods:
            spec = get_spec(name)
            train_kw = {"group_labels": tr.group_labels} if spec.trains_on_group_labels else {}
            val_kw = dict(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
            record = rows.setdefault(name, {"defaults": [], "early": [], "tuned": [], "time": [], "search": []})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                est = spec.estimator(random_state=seed).fit(tr.X, tr.y, **train_kw)
                record["time"].append(time.perf_counter() - start)
                record["defaults"].append(_test(est, te))
                if "early_stopping" in est.get_params():
                    est = spec.estimator(random_state=seed).fit(tr.X, tr.y, **train_kw, **val_kw)
                    record["early"].append(_test(est, te))
                if search:
                    start = time.perf_counter()
                    cv = RobustSearchCV([name], selection="worst_group", random_state=seed)
                    cv.fit(tr.X, tr.y, **train_kw, **val_kw)
                    record["search"].append(time.perf_counter() - start)
                    record["tuned"].append(_test(cv.best_estimator_, te))
            print(f"seed {seed} {name} done", file=sys.stderr, flush=True)

    def cell(values):
        if not values:
            return "-"
        a = np.array(values)
        return f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f}"

    erm_time = np.median(rows["ERMClassifier"]["time"]) if "ERMClassifier" in rows else np.nan
    print(f"\n{benchmark}: test avg acc / worst-group acc (± std over {len(seeds)} seeds)\n", file=out)
    header = ["estimator", "defaults", "defaults, early stopping (val WGA)", "tuned (RobustSearchCV, val WGA)",
              "fit s", "x ERM", "search s"]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" for _ in header) + "|", file=out)
    for name, r in rows.items():
        t = np.median(r["time"])
        search_t = f"{np.median(r['search']):.1f}" if r["search"] else "-"
        print(f"| {name} | {cell(r['defaults'])} | {cell(r['early'])} | {cell(r['tuned'])} | {t:.2f} | "
              f"{t / erm_time:.1f} | {search_t} |", file=out)
    return rows


def learning_rates(benchmark, seeds, methods, rates, out=sys.stdout):
    """Test avg / worst-group accuracy of each method early-stopped on validation WGA, per learning rate."""
    rows = {}
    for seed in seeds:
        data = load_benchmark(benchmark, seed)
        tr, va, te = data.train, data.val, data.test
        for name in methods:
            spec = get_spec(name)
            if "learning_rate" not in spec.estimator().get_params() or name == "ERMClassifier":
                continue
            train_kw = {"group_labels": tr.group_labels} if spec.trains_on_group_labels else {}
            for rate in rates:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est = spec.estimator(learning_rate=rate, random_state=seed)
                    est.fit(tr.X, tr.y, **train_kw, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
                rows.setdefault((name, rate), []).append(_test(est, te) + (est.best_iteration_,))
            print(f"seed {seed} {name} done", file=sys.stderr, flush=True)
    print(f"\n{benchmark}: test avg acc / worst-group acc, early stopping on validation WGA, by learning rate "
          f"(mean over {len(seeds)} seeds; best epoch)\n", file=out)
    print("| estimator | learning rate | test acc / WGA | best epoch |", file=out)
    print("|---|---|---|---|", file=out)
    for (name, rate), values in rows.items():
        a = np.array(values, dtype=float)
        print(f"| {name} | {rate:g} | {a[:, 0].mean():.3f} / {a[:, 1].mean():.3f} | {a[:, 2].mean():.1f} |", file=out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="synthetic")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--no-search", action="store_true", help="skip the RobustSearchCV column")
    parser.add_argument("--learning-rates", type=float, nargs="*", default=None,
                        help="the learning-rate table instead of the comparison")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    use_project_data()
    methods = args.methods if "ERMClassifier" in args.methods else ["ERMClassifier", *args.methods]
    if args.learning_rates:
        learning_rates(args.benchmark, list(range(args.seeds)), methods, args.learning_rates)
    else:
        run(args.benchmark, list(range(args.seeds)), methods, search=not args.no_search)


if __name__ == "__main__":
    main()
