"""Choosing the method without group labels: RobustSearchCV against the Group DRO reference.

For each benchmark and seed, with **no group labels anywhere** (neither in
training nor on validation), ``RobustSearchCV(candidates='auto')`` picks a
method and its settings on the validation split under each label-free rule
(``worst_class``, ``bias_unsupervised``). Its test worst-group accuracy is
set against the two ends of the gap the JTT paper measures:

* ERM tuned on validation worst-group accuracy (the registry's ERM space,
  early stopping on validation WGA: the papers' ERM baseline);
* Group DRO trained with group labels and tuned on validation worst-group
  accuracy (the registry's Group DRO space).

``gap closed = (pick - ERM) / (Group DRO - ERM)`` of the means over seeds;
JTT's headline is 73 %
(Liu et al., 2021), with group labels on validation. On the first seed the
search's wall time is also set against the sum of its candidates' separate
fits (each fitted alone, no sub-model shared), which shows the shared work.

Every finished (benchmark, seed) is appended to ``runs.jsonl`` in the
results folder at once, so a killed run keeps what it did and a restart
skips it. Usage::

    python benchmarks/search.py --benchmark synthetic --seeds 3
    python benchmarks/search.py --benchmark celeba --seeds 3
    python benchmarks/search.py --benchmark mnli --seeds 3      # MiniLM embeddings (built if missing)
    python benchmarks/search.py --benchmark fashion --seeds 3   # spurious Fashion-MNIST (built if missing)
    python benchmarks/search.py --table results/search          # tables of every benchmark run so far
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from compare import load_benchmark
from skgroup import ERMClassifier
from skgroup._cache import SHARED_FITS
from skgroup.analysis import candidate_label
from skgroup.metrics import group_accuracies
from skgroup.estimators import method_specs
from skgroup.model_selection import RobustSearchCV

RULES = ("worst_class", "bias_unsupervised")


def _test(est, data, seed):
    te = data.test
    report = group_accuracies(te.y, est.predict(te.X), group_labels=te.group_labels, confidence_level=0.95,
                              n_bootstrap=1000, random_state=seed)
    return {"test_acc": report.accuracy, "test_wga": report.worst_group_accuracy,
            "test_wga_ci": list(report.worst_group_ci)}


def _separate_fits(search, data):
    """Seconds to fit every candidate of ``search`` alone (no shared sub-model)."""
    tr, va = data.train, data.val
    total = 0.0
    with SHARED_FITS.disabled():
        for _, estimator, params in search._configs(len(tr.y), tr.X.shape[1], len(np.unique(tr.y))):
            est = search._prepare(estimator, params, search.random_state, "worst_class_accuracy", True)
            kw = {}
            if search._validates(est):
                kw = {"X_val": va.X, "y_val": va.y}
            start = time.perf_counter()
            est.fit(tr.X, tr.y, **kw)
            total += time.perf_counter() - start
    return total


def run_seed(benchmark, seed, n_jobs=None, separate=False, exclude=()):
    data = load_benchmark(benchmark, seed)
    tr, va = data.train, data.val
    record = {"benchmark": benchmark, "seed": seed, "n_train": int(len(tr.y)), "n_val": int(len(va.y)),
              "n_features": int(tr.X.shape[1])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the two ends of the gap, both tuned with validation group labels
        erm = RobustSearchCV(["ERMClassifier"], selection="worst_group", random_state=seed, n_jobs=n_jobs)
        erm.fit(tr.X, tr.y, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
        record["erm_tuned"] = {"params": erm.best_params_, **_test(erm, data, seed)}
        record["erm_default"] = _test(ERMClassifier(random_state=seed).fit(tr.X, tr.y), data, seed)
        dro = RobustSearchCV(["GroupDROClassifier"], selection="worst_group", random_state=seed, n_jobs=n_jobs)
        dro.fit(tr.X, tr.y, group_labels=tr.group_labels, X_val=va.X, y_val=va.y,
                group_labels_val=va.group_labels)
        record["group_dro"] = {"params": dro.best_params_, **_test(dro, data, seed)}
        for rule in RULES:
            SHARED_FITS.clear()  # each search pays for its own shared work
            candidates = "auto"
            if exclude:
                candidates = [s.name for s in method_specs(with_group_labels=False) if s.name not in exclude]
            search = RobustSearchCV(candidates, selection=rule, random_state=seed, n_jobs=n_jobs)
            search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)  # no group labels anywhere
            res = search.results_
            record[rule] = {
                "pick": candidate_label(search.best_estimator_name_, search.best_params_),
                "val_score": search.best_score_, "val_ci": list(search.best_score_ci_),
                "indistinguishable": search.n_indistinguishable_,
                "n_candidates": int(len(res["score"])),
                "search_seconds": search.search_time_,
                "candidate_fit_seconds": float(np.nansum(np.asarray(res["fit_time"], dtype=float))),
                "shared_fits": search.shared_fits_,
                **_test(search, data, seed),
            }
            if separate and rule == RULES[0]:
                record[rule]["separate_fit_seconds"] = _separate_fits(search, data)
    return record


def gap(value, erm, dro):
    return (value - erm) / (dro - erm) if dro > erm else float("nan")


def tables(records):
    """Markdown: per benchmark, the ends of the gap and each rule's pick (mean over seeds)."""
    lines = ["| benchmark | seeds | ERM default | ERM (tuned, val WGA) | Group DRO (group labels, val WGA) "
             "| pick: worst_class | gap closed | pick: bias_unsupervised | gap closed |",
             "|---|---|---|---|---|---|---|---|---|"]
    cost = ["| benchmark | candidates | search s | candidates' separate fits s | ratio | shared sub-models |",
            "|---|---|---|---|---|---|"]
    picks = ["| benchmark | seed | rule | pick | val score [95% CI] | indistinguishable | test acc "
             "| test WGA [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in records:
        by.setdefault(r["benchmark"], []).append(r)
    for bench, rs in by.items():
        rs = sorted(rs, key=lambda r: r["seed"])

        def m(f):
            v = np.array([f(r) for r in rs], dtype=float)
            return v.mean(), v.std()

        erm_d, erm, dro = m(lambda r: r["erm_default"]["test_wga"]), m(lambda r: r["erm_tuned"]["test_wga"]), \
            m(lambda r: r["group_dro"]["test_wga"])
        cells = []
        for rule in RULES:
            w = m(lambda r, rule=rule: r[rule]["test_wga"])
            g = gap(w[0], erm[0], dro[0])  # of the means: per-seed ratios explode when the gap is small
            cells += [f"{w[0]:.3f} ± {w[1]:.3f}", f"{100 * g:.0f} %" if np.isfinite(g) else "(no gap)"]
        excluded = sorted({e for r in rs for e in r.get("excluded", [])})
        if excluded:
            bench = f"{bench} (without {', '.join(excluded)})"
        lines.append(f"| {bench} | {len(rs)} | {erm_d[0]:.3f} ± {erm_d[1]:.3f} | {erm[0]:.3f} ± {erm[1]:.3f} "
                     f"| {dro[0]:.3f} ± {dro[1]:.3f} | " + " | ".join(cells) + " |")
        first = rs[0][RULES[0]]
        if "separate_fit_seconds" in first:
            shared = ", ".join(f"{k} {v}" for k, v in sorted(first["shared_fits"].items()))
            cost.append(f"| {bench} | {first['n_candidates']} | {first['search_seconds']:.1f} | "
                        f"{first['separate_fit_seconds']:.1f} | "
                        f"{first['search_seconds'] / first['separate_fit_seconds']:.2f} | {shared} |")
        for r in rs:
            for rule in RULES:
                p = r[rule]
                picks.append(f"| {bench} | {r['seed']} | {rule} | {p['pick']} | {p['val_score']:.3f} "
                             f"[{p['val_ci'][0]:.3f}, {p['val_ci'][1]:.3f}] | {p['indistinguishable']} of "
                             f"{p['n_candidates'] - 1} | {p['test_acc']:.3f} | {p['test_wga']:.3f} "
                             f"[{p['test_wga_ci'][0]:.3f}, {p['test_wga_ci'][1]:.3f}] |")
    return "\n".join(lines), "\n".join(cost), "\n".join(picks)


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="synthetic", help="synthetic, celeba, mnli, fashion, or a cache path")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="results/search", help="results folder (runs.jsonl, results.md)")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--table", default=None, help="only print the tables of the runs in this folder")
    p.add_argument("--rst", default=None, help="also write the tables as reStructuredText to this file")
    p.add_argument("--exclude", nargs="*", default=(),
                   help="estimators left out of 'auto' (say so when reporting; e.g. RegularizedMTLClassifier, "
                        "whose d x d trunk takes minutes a fit on wide features here)")
    p.add_argument("--no-cost", action="store_true",
                   help="skip timing the candidates' separate fits on the first seed (it doubles that seed's time)")
    args = p.parse_args(argv)
    out = Path(args.table or args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if args.table is None:
        name = Path(args.benchmark).name if Path(args.benchmark).exists() else args.benchmark
        finished = {(r["benchmark"], r["seed"]) for r in done}
        for seed in range(args.seeds):
            if (args.benchmark, seed) in finished:
                continue
            start = time.perf_counter()
            record = run_seed(args.benchmark, seed, args.n_jobs, separate=seed == 0 and not args.no_cost,
                              exclude=tuple(args.exclude))
            record["excluded"] = list(args.exclude)
            record["benchmark"] = args.benchmark
            with open(log, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
            done.append(record)
            print(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    text = "\n\n".join(tables(done))
    (out / "results.md").write_text(text + "\n")
    if args.rst:
        Path(args.rst).write_text(_rst(tables(done)))
    print(text)


def _rst(markdown_tables):
    """The Markdown tables as reStructuredText csv-tables (for docs/search_results.inc)."""
    out = []
    for table in markdown_tables:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
                if not line.startswith("|---")]
        out += [".. csv-table::", "   :header-rows: 1", ""]
        out += ["   " + ", ".join('"' + c.replace('"', '""') + '"' for c in row) for row in rows]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
