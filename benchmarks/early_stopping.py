"""Every estimator at its defaults, without and with early stopping on validation.

Three variants: no validation; ``early_stopping=True,
monitor='worst_group_accuracy'`` with validation group labels; and
``monitor='worst_class_accuracy'`` without any group label. The column
"BelowERMWarning" counts the fits whose own validation split showed them
below ERM with no gain (``skgroup.estimators.BelowERMWarning``).

``early_stopping=True, monitor='worst_group_accuracy'`` selects the epoch (or
L-BFGS iteration) with the best validation worst-group accuracy, the
checkpoint selection of Group DRO (Sagawa et al., 2020) and JTT (Liu et al.,
2021); group labels are used on the validation split only (and in training
by the methods that need them). Test average and worst-group accuracy,
mean ± std over seeds::

    python benchmarks/early_stopping.py --benchmark synthetic --seeds 3
    python benchmarks/early_stopping.py --benchmark celeba --seeds 3
    python benchmarks/early_stopping.py --benchmark celeba-small --seeds 3   # 3,000 training rows
    python benchmarks/early_stopping.py --benchmark synthetic --max-iter-scale 5   # longer schedules
"""

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.base import clone

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from compare import load_benchmark
from skgroup.estimators import all_estimators
from skgroup.estimators import BelowERMWarning
from skgroup.metrics import worst_group_accuracy


def _fit_params(est, split):
    consumes = est.get_metadata_routing().consumes("fit", ["group_labels"])
    return {"group_labels": split.group_labels} if "group_labels" in consumes else {}


def run(benchmark, seeds, names=None, scale=1, out=sys.stdout):
    rows = {}
    for seed in seeds:
        data = load_benchmark(benchmark, seed)
        tr, va, te = data.train, data.val, data.test
        for name, cls in all_estimators():
            if names and name not in names:
                continue
            base = cls(random_state=seed)
            if "early_stopping" not in base.get_params():
                continue  # DFR: X_val is its held-out training data, not an early-stopping split
            if scale != 1 and base.get_params().get("max_iter"):
                base.set_params(max_iter=int(base.get_params()["max_iter"] * scale))
            variants = {
                "without": clone(base),
                "with": clone(base).set_params(early_stopping=True, monitor="worst_group_accuracy"),
                "label-free": clone(base).set_params(early_stopping=True, monitor="worst_class_accuracy"),
            }
            for variant, est in variants.items():
                kwargs = _fit_params(est, tr)
                if variant == "with":
                    kwargs.update(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
                elif variant == "label-free":
                    kwargs.update(X_val=va.X, y_val=va.y)
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    est.fit(tr.X, tr.y, **kwargs)
                seconds = time.perf_counter() - start
                below = any(issubclass(w.category, BelowERMWarning) for w in caught)
                pred = est.predict(te.X)
                rows.setdefault((name, variant), []).append((
                    np.mean(pred == te.y), worst_group_accuracy(te.y, pred, group_labels=te.group_labels),
                    est.n_iter_, seconds, below,
                ))
            print(f"seed {seed} {name} done", file=sys.stderr)
    print(f"\n{benchmark}: test avg acc / worst-group acc, defaults, mean ± std over {len(seeds)} seeds"
          f"{'' if scale == 1 else f' (max_iter x{scale})'}\n", file=out)
    print("| estimator | without early stopping | with early stopping (val WGA) | early stopping without group "
          "labels (val worst-class) | epochs run (with) | BelowERMWarning (with / label-free) |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    names_seen = list(dict.fromkeys(n for n, _ in rows))
    for name in names_seen:
        cells = []
        for variant in ("without", "with", "label-free"):
            a = np.array(rows[(name, variant)])
            cells.append(f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f}")
        epochs = np.array(rows[(name, "with")])[:, 2]
        warned = [int(np.array(rows[(name, v)])[:, 4].sum()) for v in ("with", "label-free")]
        print(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | {epochs.mean():.1f} | {warned[0]} / {warned[1]} "
              f"of {len(epochs)} |", file=out)
    return rows


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="synthetic")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--estimators", nargs="*")
    p.add_argument("--max-iter-scale", type=float, default=1)
    args = p.parse_args(argv)
    run(args.benchmark, range(args.seeds), args.estimators, args.max_iter_scale)


if __name__ == "__main__":
    main()
