"""JTT, Group DRO and CVaR DRO on CelebA attributes, tuned as users will.

Label Blond_Hair, spurious attribute Male, the other 38 attributes as 0/1
features, official split. Each method is tuned on validation worst-group
accuracy with :func:`skgroup.model_selection.select_on_validation`
(``GridSearchCV`` + ``worst_group_scorer`` over the fixed validation split,
refit on train only), then scored on test. Fit time is the selected
configuration's, as a ratio to ``ERMClassifier()``'s fit time on the same
training data in this process (median of ``--repeats`` interleaved fits:
fit times vary by ~30% between processes on shared machines).

Usage::

    python benchmarks/celeba_jtt_dro_cvar.py [--data-home DIR] [--seeds 0 1 2]
        [--threads 1] [--repeats 5]

About 1 minute per seed on 2 shared CPU cores (one torch thread: with more,
torch's intra-op threads collapse on tiny minibatch ops when the cores are busy).
"""

import argparse
import time
import warnings

import numpy as np
import torch

from skgroup.datasets import load_celeba_attributes
from skgroup.estimators import ERMClassifier
from skgroup.estimators._cvar import CVaRClassifier, DegenerateCVaRWarning
from skgroup.estimators._group_dro import GroupDROClassifier
from skgroup.estimators._jtt import JTTClassifier
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import select_on_validation
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs

# Small grids faithful to the papers: Group DRO is barely sensitive to eta and L2 once
# the epoch is selected, so both are searched coarsely; JTT needs the identification model's strength
# (T and its L2) and lambda_up searched together; CVaR needs small alpha and strong L2.
GRIDS = {
    "Group DRO": (
        GroupDROClassifier,
        {"l2_reg": [1e-3, 1e-2, 1e-1, 1.0], "eta": [0.01, 0.1]},
        True,
    ),
    "JTT": (
        JTTClassifier,
        {"id_epochs": [1, 2, 5], "id_l2_reg": [None, 0.1], "lambda_up": [5, 10, 20, "auto"]},
        False,
    ),
    "CVaR DRO": (
        CVaRClassifier,
        {"alpha": [0.2, 0.1, 0.05], "l2_reg": [1e-2, 1e-1, 1.0]},
        False,
    ),
}


def scores(model, split):
    pred = model.predict(split.X)
    acc = float(np.mean(pred == split.y))
    return acc, worst_group_accuracy(split.y, pred, group_labels=split.group_labels)


def fit_seconds(make, data, kwargs):
    t = time.perf_counter()
    make().fit(data.X, data.y, **kwargs)
    return time.perf_counter() - t


def main(argv=None):
    use_project_data()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per configuration")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", DegenerateCVaRWarning)  # counted and reported below

    data = load_celeba_attributes(args.data_home)
    tr, va, te = data.train, data.val, data.test
    print(f"CelebA attributes: {len(tr.y)} train / {len(va.y)} val / {len(te.y)} test rows, "
          f"{tr.X.shape[1]} features; torch threads = {torch.get_num_threads()}")

    rows = []
    erm = ERMClassifier().fit(tr.X, tr.y)  # also warms torch up before any timing
    rows.append(("ERM (default)", *scores(erm, va)[1:], *scores(erm, te), "", 0))
    timed = {"ERM": (ERMClassifier, {}, {})}

    for name, (cls, grid, uses_groups) in GRIDS.items():
        fit_kw = {"group_labels": tr.group_labels} if uses_groups else {}
        default = cls(random_state=args.seeds[0]).fit(tr.X, tr.y, **fit_kw)
        rows.append((f"{name} (defaults)", *scores(default, va)[1:], *scores(default, te), "", 0))
        for seed in args.seeds:
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DegenerateCVaRWarning)
                best, search = select_on_validation(cls(random_state=seed), grid, tr, va)
            n_degenerate = sum(issubclass(w.category, DegenerateCVaRWarning) for w in caught)
            params = {k: v for k, v in search.best_params_.items()}
            print(f"  {name} seed {seed}: searched {len(search.cv_results_['params'])} configs "
                  f"in {time.perf_counter() - t:.0f}s; best {params}")
            rows.append((f"{name} (tuned, seed {seed})", *scores(best, va)[1:], *scores(best, te),
                         params, n_degenerate))
            if seed == args.seeds[0]:
                timed[name] = (cls, {**params, "random_state": seed}, fit_kw)

    # timings: interleaved rounds, so load from other processes hits every method alike
    times = {k: [] for k in timed}
    for _ in range(args.repeats):
        for key, (cls, params, fit_kw) in timed.items():
            times[key].append(fit_seconds(lambda: cls(**params), tr, fit_kw))
    erm_t = float(np.median(times["ERM"]))
    ratio = {k: float(np.median(v)) / erm_t for k, v in times.items()}

    print()
    print("| method | val WGA | test avg acc | test WGA | selected params | fit time / ERM |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, val_wga, acc, wga, params, n_deg in rows:
        key = next((k for k in timed if label.startswith(k) and "tuned" in label), None)
        r = f"{ratio[key]:.2f}x" if key and label.endswith(f"seed {args.seeds[0]})") else ""
        if label.startswith("ERM"):
            r = f"1.00x ({erm_t:.2f}s)"
        p = ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""
        if n_deg:
            p += f" [{n_deg} degenerate-CVaR warnings in the search]"
        print(f"| {label} | {val_wga:.3f} | {acc:.3f} | {wga:.3f} | {p} | {r} |")
    print()
    print("fit seconds (median of %d): " % args.repeats
          + ", ".join(f"{k} {np.median(v):.2f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
