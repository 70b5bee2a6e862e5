"""Compare every skgroup estimator on a benchmark, tuned on validation.

For each seed and estimator, one ``GridSearchCV`` over the validation split
scores every configuration with four selection rules at once:

* ``wga``  — validation worst-group accuracy (group labels on validation only;
  Kulkarni et al.'s "Val-GP");
* ``acc``  — average validation accuracy (no group labels at all; Kulkarni et
  al.'s "No-GP");
* ``wca``  — validation worst-class accuracy (no group labels at all);
* ``bias`` — the bias-unsupervised score of LaBonte et al. (2023), with the
  predictions of an ERM model trained without class balancing standing in
  for the spurious attribute (no group labels at all).

The best configuration of each rule is refitted on the training split and
evaluated on test. DFR trains on the validation split itself (its held-out
rows, with their group labels) and tunes its C on halves of it: it gets the
validation split as ``X_val`` and is reported under the ``wga`` rule only. Every finished run is appended to ``runs.jsonl`` in the
results folder at once, so a killed run keeps what it did and a restart skips
it; the tables (Markdown and CSV, mean and std over seeds) and a plot are
written at the end.

Usage::

    python benchmarks/compare.py --quick                       # CI smoke test
    python benchmarks/compare.py --benchmark celeba --seeds 3
    python benchmarks/compare.py --benchmark celeba-small        # 3,000 training rows of it, drawn per seed
    python benchmarks/compare.py --benchmark mnli              # MiniLM embeddings (built if missing)
    python benchmarks/compare.py --benchmark fashion           # spurious-background Fashion-MNIST
    python benchmarks/compare.py --benchmark /path/to/cache    # any embeddings cache
"""

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skgroup import ERMClassifier
from skgroup.estimators import all_estimators, get_spec
from skgroup.metrics import (
    bias_unsupervised_scorer,
    worst_class_accuracy,
    worst_class_scorer,
    worst_group_accuracy,
    worst_group_scorer,
)
from skgroup.model_selection import ValidationSplit
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs

RULES = {"wga": worst_group_scorer, "acc": "accuracy", "wca": worst_class_scorer, "bias": bias_unsupervised_scorer}


def benchmark_grid(spec, data, quick):
    """The grid a method is tuned over here: its spec's benchmark grid (the papers' wider ranges; JTT's
    identification strength and lambda_up both), else its search space at this data's shape; ``quick``:
    the spec's smoke-test grid, else its fast settings as one configuration."""
    if quick:
        return spec.quick_grid if spec.quick_grid is not None else {k: [v] for k, v in spec.fast_params.items()}
    if spec.benchmark_grid is not None:
        return spec.benchmark_grid
    tr = data.train
    return spec.grid(tr.X.shape[0], tr.X.shape[1], len(np.unique(tr.y)))


def load_benchmark(name, seed, quick=False):
    from skgroup.datasets import load_celeba_attributes, make_spurious_benchmark, split_embeddings

    if name == "synthetic":
        n = (1000, 400, 800) if quick else (3000, 1000, 2000)
        return make_spurious_benchmark(*n, random_state=seed)
    if name == "celeba":
        return load_celeba_attributes()
    if name == "celeba-small":
        return celeba_subsample(load_celeba_attributes(), seed)
    if name in ("mnli", "fashion"):
        from feature_extraction import real

        path = real.build_mnli_minilm() if name == "mnli" else real.build_fashion_spurious()
        return split_embeddings(path)
    return split_embeddings(name)


def celeba_subsample(data, seed, n_train=3000, n_val=1000):
    """Small real data: ``n_train`` training and ``n_val`` validation rows of CelebA attributes
    drawn by ``seed`` (the full test split), where the defaults tuned on 162,770 rows must still hold."""
    from sklearn.utils import Bunch

    rng = np.random.RandomState(seed)
    out = dict(data)
    for split, n in (("train", n_train), ("val", n_val)):
        part = data[split]
        rows = np.sort(rng.choice(len(part.y), n, replace=False))
        out[split] = Bunch(**{k: v[rows] for k, v in part.items()})
    return Bunch(**out)


def _uses_group_labels_in_fit(est):
    return "group_labels" in est.get_metadata_routing().consumes("fit", ["group_labels"])


def _fit(est, split):
    params = {"group_labels": split.group_labels} if _uses_group_labels_in_fit(est) else {}
    start = time.perf_counter()
    est.fit(split.X, split.y, **params)
    return time.perf_counter() - start


def _fits_on_validation(cls):
    # on an instance: a meta-estimator (InferredGroupsClassifier) answers for the method it wraps
    return bool(getattr(cls(), "_fits_on_validation", False))


def run_on_validation(name, cls, grid, data, seed):
    """A method that trains on the validation split (DFR): one fit, the worst-group rule only."""
    from sklearn.model_selection import ParameterGrid

    configs = list(ParameterGrid(grid))
    if len(configs) != 1:
        raise SystemExit(
            f"{name} trains on the validation split and selects its own hyperparameters there; give "
            f"it one configuration in its MethodSpec's benchmark_grid, not {len(configs)}."
        )
    tr, va, te = data.train, data.val, data.test
    model = cls(random_state=seed, **configs[0])
    start = time.perf_counter()
    model.fit(tr.X, tr.y, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
    seconds = time.perf_counter() - start
    pred = model.predict(te.X)
    scores = getattr(model, "C_scores_", None)
    return [{
        "estimator": name, "rule": "wga", "seed": seed,
        "test_avg_acc": float(np.mean(pred == te.y)),
        "test_wga": worst_group_accuracy(te.y, pred, group_labels=te.group_labels),
        "test_wca": worst_class_accuracy(te.y, pred),
        "val_score": float(np.max(scores)) if scores is not None else float("nan"),
        "fit_seconds": seconds, "search_seconds": seconds,
        "params": {**configs[0], **({"C_": model.C_} if hasattr(model, "C_") else {})},
        "group_labels_in_training": False,
        "group_labels_in_validation": True,
    }]


def run_one(name, cls, grid, data, seed, biased, n_jobs):
    """One grid search, every selection rule; returns one record per rule."""
    if _fits_on_validation(cls):
        return run_on_validation(name, cls, grid, data, seed)
    tr, va, te = data.train, data.val, data.test
    X = np.concatenate([np.asarray(tr.X), np.asarray(va.X)])
    y = np.concatenate([tr.y, va.y])
    params = {
        "group_labels": np.concatenate([tr.group_labels, va.group_labels]),
        "y_pred_biased": np.concatenate([biased.predict(tr.X), biased.predict(va.X)]),
    }
    est = cls(random_state=seed)
    search = GridSearchCV(est, grid, scoring=RULES, refit=False, cv=ValidationSplit(len(tr.y), len(va.y)),
                          n_jobs=n_jobs, error_score="raise")
    start = time.perf_counter()
    search.fit(X, y, **params)
    search_seconds = time.perf_counter() - start
    records, refits = [], {}
    for rule in RULES:
        best = int(np.argmin(search.cv_results_[f"rank_test_{rule}"]))
        best_params = search.cv_results_["params"][best]
        key = json.dumps(best_params, sort_keys=True, default=str)
        if key not in refits:
            model = clone(est).set_params(**{k: clone(v, safe=False) for k, v in best_params.items()})
            refits[key] = (model, _fit(model, tr))
        model, seconds = refits[key]
        pred = model.predict(te.X)
        records.append({
            "estimator": name, "rule": rule, "seed": seed,
            "test_avg_acc": float(np.mean(pred == te.y)),
            "test_wga": worst_group_accuracy(te.y, pred, group_labels=te.group_labels),
            "test_wca": worst_class_accuracy(te.y, pred),
            "val_score": float(search.cv_results_[f"mean_test_{rule}"][best]),
            "fit_seconds": seconds, "search_seconds": search_seconds,
            "params": best_params,
            "group_labels_in_training": _uses_group_labels_in_fit(est),
            "group_labels_in_validation": rule == "wga",
        })
    return records


def summarise(records):
    rows = {}
    for r in records:
        rows.setdefault((r["estimator"], r["rule"]), []).append(r)
    table = []
    for (est, rule), rs in rows.items():
        row = {"estimator": est, "rule": rule, "seeds": len(rs)}
        for k in ("test_avg_acc", "test_wga", "test_wca", "fit_seconds"):
            vals = np.array([r[k] for r in rs])
            row[k] = float(vals.mean())
            row[k + "_std"] = float(vals.std())
        used = [name for name, key in (("train", "group_labels_in_training"), ("val", "group_labels_in_validation"))
                if rs[0][key]]
        row["group_labels"] = "+".join(used) or "none"
        row["params"] = json.dumps(rs[0]["params"], default=str) if len(rs) == 1 else "per seed"
        table.append(row)
    return table


def write_outputs(table, out, title):
    out.mkdir(parents=True, exist_ok=True)
    fields = ["estimator", "rule", "group_labels", "test_avg_acc", "test_avg_acc_std", "test_wga", "test_wga_std",
              "test_wca", "test_wca_std", "fit_seconds", "fit_seconds_std", "seeds", "params"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(table)
    lines = [f"# {title}", "",
             "| estimator | selection | group labels | test avg acc | test worst-group acc | test worst-class acc | fit s |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['estimator']} | {r['rule']} | {r['group_labels']} | {r['test_avg_acc']:.3f} ± {r['test_avg_acc_std']:.3f} "
                     f"| {r['test_wga']:.3f} ± {r['test_wga_std']:.3f} | {r['test_wca']:.3f} ± {r['test_wca_std']:.3f} "
                     f"| {r['fit_seconds']:.2f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "\n".join(lines)
    ests = list(dict.fromkeys(r["estimator"] for r in table))
    fig, ax = plt.subplots(figsize=(1.6 * len(ests) + 2, 3.5))
    width = 0.8 / len(RULES)
    for j, rule in enumerate(RULES):
        vals = [next((r["test_wga"] for r in table if r["estimator"] == e and r["rule"] == rule), np.nan) for e in ests]
        errs = [next((r["test_wga_std"] for r in table if r["estimator"] == e and r["rule"] == rule), 0) for e in ests]
        ax.bar(np.arange(len(ests)) + j * width, vals, width, yerr=errs, label=f"selected by {rule}")
    ax.set_xticks(np.arange(len(ests)) + width * (len(RULES) - 1) / 2)
    ax.set_xticklabels([e.replace("Classifier", "") for e in ests], rotation=20)
    ax.set_ylabel("test worst-group accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "wga.png", dpi=120)
    plt.close(fig)
    return "\n".join(lines)


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="synthetic", help="synthetic, celeba, mnli, fashion, or a cache path")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--estimators", nargs="*", default=None)
    p.add_argument("--out", default=None, help="results folder (default results/<benchmark>)")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="small data and grids, one seed: a smoke test")
    args = p.parse_args(argv)
    seeds = [0] if args.quick else list(range(args.seeds))
    bench_name = Path(args.benchmark).name if Path(args.benchmark).exists() else args.benchmark
    out = Path(args.out or Path("results") / (bench_name + ("-quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = []
    if log.exists():
        done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    finished = {(r["estimator"], r["seed"]) for r in done}
    chosen = [(n, c) for n, c in all_estimators() if args.estimators is None or n in args.estimators]
    todo = [(s, n, c) for s in seeds for n, c in chosen if (n, s) not in finished]
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="runs")
    except ImportError:  # pragma: no cover
        bar = None
    data_cache = {}
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed, name, cls in todo:
            if seed not in data_cache:
                data = load_benchmark(args.benchmark, seed, args.quick)
                # biased model for the bias-unsupervised rule: ERM without class balancing
                data_cache = {seed: (data, ERMClassifier(random_state=seed).fit(data.train.X, data.train.y))}
            data, biased = data_cache[seed]
            grid = benchmark_grid(get_spec(name), data, args.quick)
            records = run_one(name, cls, grid, data, seed, biased, args.n_jobs)
            with open(log, "a") as f:
                for r in records:
                    f.write(json.dumps(r, default=str) + "\n")
            done += records
            if bar is not None:
                bar.update(1)
                bar.set_postfix(last=name)
    if bar is not None:
        bar.close()
    table = summarise([r for r in done if r["seed"] in seeds])
    text = write_outputs(table, out, f"{bench_name}: test metrics, tuned on validation ({len(seeds)} seeds)")
    print(text)
    print(f"\nwritten to {out}/ (results.md, results.csv, runs.jsonl, wga.png)")


if __name__ == "__main__":
    sys.exit(main())
