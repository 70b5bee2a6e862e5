"""Group inference: planted groups recovered, methods on inferred groups, label-free selection rules.

Four sections, each appending one JSON record per (section, dataset, seed) to ``runs.jsonl`` in the
results folder as soon as it is done (a killed run keeps what it did; a restart skips it):

* ``recovery``: every inferrer of :mod:`skgroup.groups` fitted on the training rows; the adjusted Rand
  index (ARI) of its groups against the true (class, attribute) groups on the training rows and, by
  ``predict``, on the validation rows: over all rows (the issue's number), the class alone (the floor
  that number has to beat: groups contain the class) and within each class (how well the attribute is
  recovered; 0 = not at all);
* ``methods``: Group DRO, group balancing, DFR and DPE trained with the true group labels (tuned on
  validation worst-group accuracy with validation group labels, the papers' protocol) next to the same
  methods on inferred groups (no group labels anywhere; Group DRO's grid chosen by the label-free
  default rule); DPE also without any groups (class-balanced subsets, the paper's no-annotation setting);
* ``rules``: ``RobustSearchCV('auto')`` with no group labels anywhere under every label-free rule
  (worst_class, bias_unsupervised, class_diff, inferred_worst_group), set against ERM tuned on
  validation worst-group accuracy and Group DRO trained and tuned with group labels: the share of that
  gap each rule's pick closes (of the means over seeds), as ``benchmarks/search.py`` does;
* ``time``: ``RobustSearchCV('auto')`` on the synthetic benchmark against the same search without the
  methods this issue added (InferredGroupsClassifier, DPEClassifier), in one process, alternating.

Datasets: ``synthetic`` (Sagawa et al.'s, 3,000 training rows, a new draw per seed), ``celeba``
(CelebA attributes, the official split), ``law`` (the LSAC law-school table, label first_pf, attribute
race, a group-stratified 60/20/20 split), ``mnli`` and ``fashion`` (MiniLM / EfficientNet-Lite0
features, built by ``feature_extraction.real`` into ``$SKGROUP_CACHE`` when missing). Usage::

    python benchmarks/groups.py --section recovery --datasets synthetic celeba law --seeds 3
    python benchmarks/groups.py --section methods --datasets synthetic law celeba --seeds 3
    python benchmarks/groups.py --section rules --datasets synthetic law --seeds 3
    python benchmarks/groups.py --section time
    python benchmarks/groups.py --table results/groups --rst docs/groups   # docs/groups_<table>.inc
"""

import argparse
import csv
import gzip
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils import Bunch

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from compare import load_benchmark
from search import gap
from skgroup import DFRClassifier, DPEClassifier, GroupBalancedClassifier, GroupDROClassifier
from skgroup._cache import SHARED_FITS
from skgroup.analysis import candidate_label
from skgroup.datasets import get_data_home
from skgroup.estimators import method_specs
from skgroup.groups import SPARE, EIIL, ClusterInferrer, ErrorSplit, InferredGroupsClassifier, group_recovery
from skgroup.metrics import group_accuracies, make_group_labels
from skgroup.model_selection import RobustSearchCV

RULES = ("worst_class", "bias_unsupervised", "class_diff", "inferred_worst_group")
#: The methods this issue added to 'auto' (left out of the 'time' section's baseline).
NEW = ("InferredGroupsClassifier", "DPEClassifier")


#: --quick: small synthetic data and a short EIIL (the test suite's smoke run)
QUICK = {"on": False}


def inferrers(seed):
    return {
        "ErrorSplit": ErrorSplit(random_state=seed),
        "Cluster (features)": ClusterInferrer("features", random_state=seed),
        "Cluster (probabilities)": ClusterInferrer("probabilities", random_state=seed),
        "Cluster (gradients)": ClusterInferrer("gradients", random_state=seed),
        "EIIL": EIIL(n_steps=300 if QUICK["on"] else 10000, random_state=seed),
        "SPARE": SPARE(random_state=seed),
    }


# -- data ------------------------------------------------------------------------------------

def load_law(seed=0):
    """The LSAC law-school table as issue 18's ``load_law_school`` reads it (until that lands in
    skgroup.datasets): label first_pf, attribute race (White vs not, not a feature), LSAT / UGPA /
    sander_index standardised on the training split, region one-hot, sex; groups stratified 60/20/20."""
    path = get_data_home() / "law" / "law_data.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    head, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(head)}
    y = np.array([float(r[col["first_pf"]]) for r in rows]).astype(np.int64)
    a = np.array([r[col["race"]] == "White" for r in rows]).astype(np.int64)
    numeric = np.array([[float(r[col[c]]) for c in ("LSAT", "UGPA", "sander_index")] for r in rows])
    region = np.array([r[col["region_first"]] for r in rows])
    sex = np.array([r[col["sex"]] == "2" for r in rows], dtype=np.float64)
    groups, _ = make_group_labels(y, a)
    rng = np.random.RandomState(seed)
    split = np.empty(len(y), dtype=object)
    for gid in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == gid))
        n_val = n_test = int(0.2 * len(idx))
        split[idx[:n_val]], split[idx[n_val:n_val + n_test]], split[idx[n_val + n_test:]] = "val", "test", "train"
    train = split == "train"
    mean, std = numeric[train].mean(axis=0), numeric[train].std(axis=0)
    X = np.column_stack([(numeric - mean) / std, region[:, None] == np.unique(region)[None, :], sex]).astype(np.float32)
    out = {s: Bunch(X=X[split == s], y=y[split == s], group_labels=groups[split == s])
           for s in ("train", "val", "test")}
    return Bunch(**out, name="law")


def load(name, seed):
    if name == "law":
        return load_law(0)  # one split, as CelebA's; the seed varies the models
    return load_benchmark(name, seed, quick=QUICK["on"])


def _test(est, data, seed):
    te = data.test
    report = group_accuracies(te.y, est.predict(te.X), group_labels=te.group_labels, confidence_level=0.95,
                              n_bootstrap=1000, random_state=seed)
    return {"test_acc": report.accuracy, "test_wga": report.worst_group_accuracy,
            "test_wga_ci": list(report.worst_group_ci)}


def _timed(fn):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn()
    return out, time.perf_counter() - start


# -- sections --------------------------------------------------------------------------------

def run_recovery(data, seed):
    tr, va = data.train, data.val
    out = {}
    for name, inferrer in inferrers(seed).items():
        SHARED_FITS.clear()
        labels, seconds = _timed(lambda: inferrer.fit_predict(tr.X, tr.y))
        val = inferrer.predict(va.X, va.y)
        out[name] = {"train": group_recovery(tr.group_labels, labels, tr.y),
                     "val": group_recovery(va.group_labels, val, va.y),
                     "groups_per_class": inferrer.n_groups_per_class_.tolist(), "fit_seconds": seconds}
        print(f"  {name}: within-class ARI {out[name]['train']['ari_within_class']:.3f} "
              f"({seconds:.0f} s)", file=sys.stderr, flush=True)
    return out


def run_methods(data, seed, inferrer_names):
    tr, va = data.train, data.val
    out = {}

    def record(name, fn):
        SHARED_FITS.clear()
        est, seconds = _timed(fn)
        out[name] = {**_test(est, data, seed), "seconds": seconds,
                     "pick": candidate_label(est.best_estimator_name_, est.best_params_)
                     if hasattr(est, "best_params_") else ""}
        print(f"  {name}: WGA {out[name]['test_wga']:.3f} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    labels = dict(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
    record("ERM (tuned, val WGA)", lambda: RobustSearchCV(["ERMClassifier"], "worst_group", random_state=seed)
           .fit(tr.X, tr.y, **labels))
    record("Group DRO (group labels)", lambda: RobustSearchCV(["GroupDROClassifier"], "worst_group",
                                                              random_state=seed)
           .fit(tr.X, tr.y, group_labels=tr.group_labels, **labels))
    record("Group balancing (group labels)", lambda: RobustSearchCV(["GroupBalancedClassifier"], "worst_group",
                                                                    random_state=seed)
           .fit(tr.X, tr.y, group_labels=tr.group_labels, **labels))
    record("DFR (group labels)", lambda: DFRClassifier(random_state=seed).fit(tr.X, tr.y, **labels))
    # DPE at the reference's row standardisation and without it (which the label shifts of the synthetic
    # features need; RobustSearchCV searches both)
    for std in (True, False):
        tag = "" if std else ", no row standardisation"
        dpe = DPEClassifier(standardize=std, random_state=seed)
        record(f"DPE (group labels{tag})", lambda: clone(dpe).fit(tr.X, tr.y, **labels))
        record(f"DPE (no groups{tag})", lambda: clone(dpe).fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
    epochs = GroupDROClassifier().max_iter
    for iname in inferrer_names:
        inf = inferrers(seed)[iname]
        grid = {"estimator__eta": [0.01, 0.1], "estimator__l2_reg": [1e-3, 0.1]}
        meta = InferredGroupsClassifier(GroupDROClassifier(max_iter=epochs), inf, random_state=seed)
        record(f"Group DRO (inferred: {iname})", lambda: RobustSearchCV([(meta, grid)], DEFAULT_RULE,
                                                                         random_state=seed)
               .fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
        record(f"Group balancing (inferred: {iname})", lambda: RobustSearchCV(
            [(InferredGroupsClassifier(GroupBalancedClassifier(), inf, random_state=seed),
              {"estimator__balancing": ["reweight", "sqrt_reweight"]})], DEFAULT_RULE, random_state=seed)
            .fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
        record(f"DFR (inferred: {iname})", lambda: InferredGroupsClassifier(DFRClassifier(), inf, random_state=seed)
               .fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
        for std in (True, False):
            tag = "" if std else ", no row standardisation"
            record(f"DPE (inferred: {iname}{tag})", lambda: InferredGroupsClassifier(
                DPEClassifier(standardize=std), inf, random_state=seed).fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
    return out


def run_rules(data, seed, rules):
    tr, va = data.train, data.val
    out = {}
    labels = dict(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        erm = RobustSearchCV(["ERMClassifier"], "worst_group", random_state=seed).fit(tr.X, tr.y, **labels)
        out["erm_tuned"] = _test(erm, data, seed)
        dro = RobustSearchCV(["GroupDROClassifier"], "worst_group", random_state=seed)
        dro.fit(tr.X, tr.y, group_labels=tr.group_labels, **labels)
        out["group_dro"] = _test(dro, data, seed)
    for rule in rules:
        SHARED_FITS.clear()  # each search pays for its own shared work
        # 'inferred_worst_group:EIIL' is the rule with another inferrer than the default one
        base, _, inferrer = rule.partition(":")
        kw = {"group_inferrer": inferrers(seed)[inferrer]} if inferrer else {}
        search, seconds = _timed(lambda: RobustSearchCV("auto", selection=base, random_state=seed, **kw)
                                 .fit(tr.X, tr.y, X_val=va.X, y_val=va.y))  # no group labels anywhere
        out[rule] = {"pick": candidate_label(search.best_estimator_name_, search.best_params_),
                     "estimator": search.best_estimator_name_, "val_score": search.best_score_,
                     "indistinguishable": search.n_indistinguishable_,
                     "n_candidates": int(len(search.results_["score"])), "search_seconds": seconds,
                     **_test(search, data, seed)}
        print(f"  {rule}: {out[rule]['pick']} WGA {out[rule]['test_wga']:.3f} ({seconds:.0f} s)", file=sys.stderr,
              flush=True)
    return out


def run_time(repeats=2):
    """Wall and CPU seconds of the search before this issue's methods and of 'auto' now, alternating.

    CPU seconds (the process's, all threads) are the robust number on a shared machine, where the
    wall time of one configuration varied 2x between repeats."""
    data = load_benchmark("synthetic", 0)
    tr, va = data.train, data.val
    before = [s.name for s in method_specs(with_group_labels=False) if s.name not in NEW]
    configs = [("before", before, "worst_class"), ("auto", "auto", "worst_class")]
    if DEFAULT_RULE != "worst_class":
        configs.append((f"auto, {DEFAULT_RULE}", "auto", DEFAULT_RULE))
    times = {key: {"wall": [], "cpu": []} for key, _, _ in configs}
    for _ in range(repeats):
        for key, cands, rule in configs:
            SHARED_FITS.clear()
            cpu = time.process_time()
            search, seconds = _timed(lambda: RobustSearchCV(cands, rule, random_state=0)
                                     .fit(tr.X, tr.y, X_val=va.X, y_val=va.y))
            times[key]["wall"].append(seconds)
            times[key]["cpu"].append(time.process_time() - cpu)
            times[key]["candidates"] = int(len(search.results_["score"]))
            times[key]["rule"] = rule
    for key in times:
        for kind in ("wall", "cpu"):
            times[key][f"{kind}_ratio"] = float(np.median(times[key][kind]) / np.median(times["before"][kind]))
    return times


#: The label-free rule the 'methods' section tunes the inferred-group methods with: RobustSearchCV's default.
DEFAULT_RULE = RobustSearchCV().selection


# -- tables ----------------------------------------------------------------------------------

def _mean(values):
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v.mean():.3f}"


def tables(records):
    by = {}
    for r in records:
        by.setdefault((r["section"], r["dataset"]), []).append(r)
    out = []
    rec = ["| dataset | seeds | inferrer | groups per class | ARI train | ARI val | class-only ARI | within-class ARI "
           "train | within-class ARI val | fit s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (section, ds), rs in by.items():
        if section != "recovery":
            continue
        for name in rs[0]["result"]:
            rows = [r["result"][name] for r in rs]
            rec.append(f"| {ds} | {len(rs)} | {name} | {rows[0]['groups_per_class']} "
                       f"| {_mean([x['train']['ari'] for x in rows])} | {_mean([x['val']['ari'] for x in rows])} "
                       f"| {_mean([x['train']['ari_class_only'] for x in rows])} "
                       f"| {_mean([x['train']['ari_within_class'] for x in rows])} "
                       f"| {_mean([x['val']['ari_within_class'] for x in rows])} "
                       f"| {np.mean([x['fit_seconds'] for x in rows]):.1f} |")
    out.append("\n".join(rec))
    meth = ["| dataset | seeds | method | group labels | test avg acc | test WGA | fit s |",
            "|---|---|---|---|---|---|---|"]
    for (section, ds), rs in by.items():
        if section != "methods":
            continue
        for name in rs[0]["result"]:
            rows = [r["result"][name] for r in rs if name in r["result"]]
            where = ("val (tuning)" if name.startswith("ERM") else "none" if "(group labels" not in name
                     else "val (training)" if name.startswith(("DFR", "DPE")) else "train + val (tuning)")
            meth.append(f"| {ds} | {len(rows)} | {name} | {where} | {_mean([x['test_acc'] for x in rows])} "
                        f"| {_mean([x['test_wga'] for x in rows])} | {np.mean([x['seconds'] for x in rows]):.0f} |")
    out.append("\n".join(meth))
    names = [k for k in dict.fromkeys(k for r in records if r["section"] == "rules" for k in r["result"])
             if k not in ("erm_tuned", "group_dro")]
    rules = ["| dataset | seeds | ERM (tuned, val WGA) | Group DRO (group labels) | gap | "
             + " | ".join(f"pick: {r} | gap closed" for r in names) + " |",
             "|---|---|---|---|---|" + "---|---|" * len(names)]
    picks = ["| dataset | seed | rule | pick | test acc | test WGA [95% CI] | candidates | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for (section, ds), rs in by.items():
        if section != "rules":
            continue
        erm = np.mean([r["result"]["erm_tuned"]["test_wga"] for r in rs])
        dro = np.mean([r["result"]["group_dro"]["test_wga"] for r in rs])
        cells = []
        for rule in names:
            have = [r["result"][rule]["test_wga"] for r in rs if rule in r["result"]]
            if not have:
                cells += ["", ""]
                continue
            g = gap(np.mean(have), erm, dro)
            cells += [_mean(have), f"{100 * g:.0f} %" if np.isfinite(g) else "(no gap)"]
        rules.append(f"| {ds} | {len(rs)} | {_mean([r['result']['erm_tuned']['test_wga'] for r in rs])} "
                     f"| {_mean([r['result']['group_dro']['test_wga'] for r in rs])} | {dro - erm:.3f} | "
                     + " | ".join(cells) + " |")
        for r in sorted(rs, key=lambda r: r["seed"]):
            for rule in names:
                if rule not in r["result"]:
                    continue
                p = r["result"][rule]
                picks.append(f"| {ds} | {r['seed']} | {rule} | {p['pick']} | {p['test_acc']:.3f} | {p['test_wga']:.3f} "
                             f"[{p['test_wga_ci'][0]:.3f}, {p['test_wga_ci'][1]:.3f}] | {p['n_candidates']} "
                             f"| {p['search_seconds']:.0f} |")
    out += ["\n".join(rules), "\n".join(picks)]
    timing = ["| search | rule | candidates | CPU s (each repeat) | CPU ratio | wall s (each repeat) | wall ratio |",
              "|---|---|---|---|---|---|---|"]
    for (section, ds), rs in by.items():
        if section != "time":
            continue
        for key, t in rs[-1]["result"].items():
            label = f"without {', '.join(NEW)}" if key == "before" else "'auto'"
            timing.append(f"| {label} | {t['rule']} | {t['candidates']} | {', '.join(f'{x:.1f}' for x in t['cpu'])} "
                          f"| {t['cpu_ratio']:.2f} | {', '.join(f'{x:.1f}' for x in t['wall'])} "
                          f"| {t['wall_ratio']:.2f} |")
    out.append("\n".join(timing))
    return out


#: The tables, in the order ``tables`` returns them (the names of their ``--rst`` files).
TABLES = ("recovery", "methods", "rules", "picks", "time")


def _rst(markdown_tables):
    out = []
    for table in markdown_tables:
        lines = [line for line in table.splitlines() if not line.startswith("|---")]
        if len(lines) < 2:
            continue
        out += [".. csv-table::", "   :header-rows: 1", ""]
        for line in lines:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.append("   " + ", ".join('"' + c.replace('"', '""') + '"' for c in cells))
        out.append("")
    return "\n".join(out)


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=("recovery", "methods", "rules", "time"), default="recovery")
    p.add_argument("--datasets", nargs="*", default=["synthetic"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--inferrers", nargs="*", default=["Cluster (features)"],
                   help="inferrers of the 'methods' section's inferred-group rows")
    p.add_argument("--rules", nargs="*", default=list(RULES))
    p.add_argument("--out", default="results/groups")
    p.add_argument("--quick", action="store_true", help="small synthetic data, short EIIL (a smoke test)")
    p.add_argument("--table", default=None, help="only print the tables of the runs in this folder")
    p.add_argument("--rst", default=None,
                   help="also write each table as reStructuredText to <RST>_<table>.inc (e.g. docs/groups)")
    args = p.parse_args(argv)
    QUICK["on"] = args.quick
    out = Path(args.table or args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if args.table is None:
        finished = {(r["section"], r["dataset"], r["seed"]) for r in done}
        jobs = [("synthetic", 0)] if args.section == "time" else [
            (ds, s) for ds in args.datasets for s in range(args.first_seed, args.first_seed + args.seeds)]
        for ds, seed in jobs:
            if (args.section, ds, seed) in finished:
                continue
            print(f"{args.section} {ds} seed {seed}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            if args.section == "time":
                result = run_time()
            else:
                data = load(ds, seed)
                result = {"recovery": lambda: run_recovery(data, seed),
                          "methods": lambda: run_methods(data, seed, args.inferrers),
                          "rules": lambda: run_rules(data, seed, args.rules)}[args.section]()
            record = {"section": args.section, "dataset": ds, "seed": seed, "result": result,
                      "seconds": time.perf_counter() - start}
            with open(log, "a") as f:
                f.write(json.dumps(record, default=float) + "\n")
            done.append(record)
    text = "\n\n".join(tables(done))
    (out / "results.md").write_text(text + "\n")
    if args.rst:
        for name, table in zip(TABLES, tables(done)):
            Path(f"{args.rst}_{name}.inc").write_text(_rst([table]))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
