"""Group-robust gradient boosting and random forests: skgroup.meta around them, next to the linear heads.

For each benchmark and seed, every model is tuned on the validation split's
worst-group accuracy by :class:`skgroup.model_selection.RobustSearchCV`
(``selection='worst_group'``) and scored on the test split:

* the linear skgroup heads (ERM, Group DRO, JTT, CVaR DRO, group and class
  balancing) over their registered search spaces, early stopping on the
  validation split as the search does;
* ``HistGradientBoostingClassifier`` and ``RandomForestClassifier`` unwrapped
  (one configuration each, below) and wrapped by each meta-estimator of
  :mod:`skgroup.meta` over the method's registered space (the base estimator
  fixed); the reductions get the validation split to select their rounds.

The base estimators: ``HistGradientBoostingClassifier(random_state=seed)``
(scikit-learn's defaults); on the synthetic set behind a 255-bin quantile
``KBinsDiscretizer`` fitted without weights, because scikit-learn 1.9 fits
HGB's bins with *weighted* quantiles below 200,000 rows, one sort per bin and
feature (issue #34304, sped up by PR #34248): on 200 continuous features a
weighted fit took 16x an unweighted one, while features with at most 255
distinct values (binary, one-hot, binned) take the fast path.
``RandomForestClassifier(n_estimators=100, min_samples_leaf=10)``: leaves of
at least 10 rows, so that its training losses are not all zero (Group DRO
and JTT read the training errors; full trees have none).

Sections (``--section``):

* ``table`` (default): the table above, appended run by run to
  ``runs.jsonl`` in the results folder (a restart skips what is done);
* ``cost``: the time of a reductions fit of k rounds as a multiple of one
  fit of the base estimator (target: at most k + 1), with its parts;
* ``steps``: Group DRO by reductions of gradient boosting at step sizes
  0.1-10 (the game's end, the rounds validation keeps, the scores);
* ``agreement``: Group DRO by reductions of a logistic regression against
  :class:`skgroup.GroupDROClassifier` on the synthetic task of
  ``tests/test_meta.py`` over many seeds (the test's tolerance).

Usage::

    python benchmarks/wrappers.py --benchmark law --seeds 3
    python benchmarks/wrappers.py --benchmark celeba --seeds 3
    python benchmarks/wrappers.py --benchmark synthetic --seeds 3
    python benchmarks/wrappers.py --section cost --benchmark law
    python benchmarks/wrappers.py --section steps --benchmark law
    python benchmarks/wrappers.py --section agreement --seeds 10
    python benchmarks/wrappers.py --quick                       # smoke test
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import KBinsDiscretizer
from sklearn.utils import Bunch

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from skgroup import GroupDROClassifier
from skgroup.estimators import get_spec
from skgroup.meta import WRAPPERS, CVaRMetaClassifier, GroupDROMetaClassifier
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import RobustSearchCV

LINEAR = ("ERMClassifier", "GroupDROClassifier", "JTTClassifier", "CVaRClassifier", "GroupBalancedClassifier",
          "MixtureBalancedClassifier")
FAMILIES = ("linear", "hgb", "rf")


# -- data ------------------------------------------------------------------------------------------------------

def load_law(seed):
    """The law-school table: skgroup.datasets.load_law_school when it exists, else the same recipe here.

    Label first_pf, attribute race (White vs not), ZFYA dropped; LSAT, UGPA and sander_index standardised on the
    training split, region_first one-hot, sex as one 0/1 column; within each group the rows are permuted with
    ``seed`` and cut 60/20/20 into train / val / test.
    """
    try:
        from skgroup.datasets import load_law_school
    except ImportError:
        pass
    else:
        return load_law_school(attribute="race", random_state=seed)
    import csv
    import gzip

    from skgroup.datasets import get_data_home
    from skgroup.datasets._real import _stratified_split
    from skgroup.metrics import make_group_labels

    regions = ("FW", "GL", "MS", "MW", "Mt", "NE", "NG", "NW", "PO", "SC", "SE")
    with gzip.open(get_data_home() / "law" / "law_data.csv.gz", "rt", newline="") as f:
        rows = list(csv.reader(f))
    col = {name: i for i, name in enumerate(rows[0])}
    rows = rows[1:]
    race = np.array([r[col["race"]] for r in rows])
    sex = np.array([r[col["sex"]] for r in rows])
    region = np.array([r[col["region_first"]] for r in rows])
    y = np.array([float(r[col["first_pf"]]) for r in rows]).astype(np.int64)
    numeric = np.array([[float(r[col[c]]) for c in ("LSAT", "UGPA", "sander_index")] for r in rows])
    a = (race == "White").astype(np.int64)
    groups, _ = make_group_labels(y, a)
    split = _stratified_split(groups, (0.6, 0.2, 0.2), seed)
    train = split == "train"
    mean, std = numeric[train].mean(axis=0), numeric[train].std(axis=0)
    X = np.hstack([(numeric - mean) / std, region[:, None] == np.array(regions)[None, :],
                   (sex == "2")[:, None]]).astype(np.float32)
    out = {s: Bunch(X=X[split == s], y=y[split == s], group_labels=groups[split == s]) for s in ("train", "val",
                                                                                                    "test")}
    return Bunch(**out, name="law-school-race")


def load(benchmark, seed, quick=False):
    from skgroup.datasets import load_celeba_attributes, make_spurious_benchmark

    if benchmark == "synthetic":
        return make_spurious_benchmark(*((600, 300, 600) if quick else (3000, 1000, 2000)), random_state=seed)
    if benchmark == "law":
        data = load_law(seed)
    elif benchmark == "celeba":
        data = load_celeba_attributes()
    else:
        raise SystemExit(f"unknown benchmark {benchmark!r}: synthetic, law or celeba")
    if quick:  # a few hundred rows of each split
        rng = np.random.RandomState(seed)
        parts = {}
        for split in ("train", "val", "test"):
            part = data[split]
            rows = np.sort(rng.choice(len(part.y), min(len(part.y), 800), replace=False))
            parts[split] = Bunch(X=part.X[rows], y=part.y[rows], group_labels=part.group_labels[rows])
        data = Bunch(**parts)
    return data


def base_estimator(family, benchmark, seed):
    if family == "hgb":
        hgb = HistGradientBoostingClassifier(random_state=seed)
        if benchmark == "synthetic":  # weighted binning of 200 continuous features: see the module docstring
            return make_pipeline(KBinsDiscretizer(n_bins=255, encode="ordinal", strategy="quantile",
                                                  quantile_method="averaged_inverted_cdf", subsample=None), hgb)
        return hgb
    return RandomForestClassifier(n_estimators=100, min_samples_leaf=10, n_jobs=1, random_state=seed)


# -- the table ---------------------------------------------------------------------------------------------------

def _score(model, split):
    pred = model.predict(split.X)
    return float(np.mean(pred == split.y)), float(worst_group_accuracy(split.y, pred, group_labels=split.group_labels))


def _search(candidate, grid, data, seed):
    tr, va = data.train, data.val
    search = RobustSearchCV([(candidate, grid)], selection="worst_group", include_erm=False, n_bootstrap=200,
                            random_state=seed)
    start = time.perf_counter()
    search.fit(tr.X, tr.y, group_labels=tr.group_labels, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
    seconds = time.perf_counter() - start
    return search.best_estimator_, search.best_params_, float(search.best_score_), seconds


def _quick_grid(grid):
    """The first value of every knob: a smoke test's one configuration."""
    first = grid[0] if isinstance(grid, list) else grid
    return {k: v[:1] for k, v in first.items()}


def run_one(benchmark, seed, family, method, data, quick):
    tr = data.train
    shape = (len(tr.y), tr.X.shape[1], len(np.unique(tr.y)))
    if family == "linear":
        cls = get_spec(method).estimator
        grid = get_spec(method).grid(*shape)
        model, params, val, seconds = _search(cls(), _quick_grid(grid) if quick else grid, data, seed)
    elif method == "none":
        model = clone(base_estimator(family, benchmark, seed))
        start = time.perf_counter()
        model.fit(tr.X, tr.y)
        seconds = time.perf_counter() - start
        params, val = {}, _score(model, data.val)[1]
    else:
        cls = next(c for c in WRAPPERS if c.__name__ == method)
        grid = get_spec(method).grid(*shape)
        if quick:
            grid = _quick_grid(grid)
            if "n_iter" in grid:
                grid["n_iter"] = [2]
        model, params, val, seconds = _search(cls(base_estimator(family, benchmark, seed)), grid, data, seed)
    acc, wga = _score(model, data.test)
    extra = {}
    if hasattr(model, "n_average_"):
        extra["n_average"] = int(model.n_average_)
    return {"benchmark": benchmark, "seed": seed, "family": family, "method": method, "test_acc": acc,
            "test_wga": wga, "val_wga": val, "params": {**params, **extra}, "search_seconds": seconds}


def methods_of(family):
    if family == "linear":
        return list(LINEAR)
    return ["none"] + [c.__name__ for c in WRAPPERS]


def table(records, benchmark):
    rows = {}
    for r in records:
        rows.setdefault((r["family"], r["method"]), []).append(r)
    lines = [f"### {benchmark}", "",
             "| model | method | test avg acc | test WGA (mean ± std) | WGA per seed | search s | selected (seed 0) |",
             "|---|---|---|---|---|---|---|"]
    best = {}
    order = {m: i for i, m in enumerate(list(LINEAR) + methods_of("hgb"))}
    for (family, method), rs in sorted(rows.items(), key=lambda kv: (FAMILIES.index(kv[0][0]), order[kv[0][1]])):
        rs = sorted(rs, key=lambda r: r["seed"])
        wga = np.array([r["test_wga"] for r in rs])
        acc = np.mean([r["test_acc"] for r in rs])
        label = method.replace("MetaClassifier", "").replace("Classifier", "")
        per = ", ".join(f"{w:.3f}" for w in wga)
        lines.append(f"| {family} | {label} | {acc:.3f} | {wga.mean():.3f} ± {wga.std():.3f} | {per} | "
                     f"{np.mean([r['search_seconds'] for r in rs]):.1f} | {json.dumps(rs[0]['params'])} |")
        robust = method not in ("none", "ERMClassifier")
        if robust and wga.mean() > best.get(family, ("", -1))[1]:
            best[family] = (label, wga.mean(), {r["seed"]: r["test_wga"] for r in rs})
    lines.append("")
    for family, (label, value, _) in best.items():
        lines.append(f"best robust {family}: {label} {value:.3f}")
    if "linear" in best and "hgb" in best:
        verdict = "meets" if best["hgb"][1] >= best["linear"][1] else "misses"
        seeds = sorted(set(best["hgb"][2]) & set(best["linear"][2]))
        diffs = ", ".join(f"{best['hgb'][2][s] - best['linear'][2][s]:+.3f}" for s in seeds)
        lines.append(f"target (best wrapped GBM >= best linear robust): {verdict} "
                     f"({best['hgb'][1]:.3f} vs {best['linear'][1]:.3f}; per seed {diffs})")
    return "\n".join(lines)


def run_table(args):
    out = Path(args.out or Path("results") / f"wrappers-{args.benchmark}{'-quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    finished = {(r["seed"], r["family"], r["method"]) for r in done}
    seeds = [0] if args.quick else list(range(args.seeds))
    families = args.families or FAMILIES
    for seed in seeds:
        data = None
        for family in families:
            for method in methods_of(family):
                if args.methods and method not in args.methods:
                    continue
                if (seed, family, method) in finished:
                    continue
                if data is None:
                    data = load(args.benchmark, seed, args.quick)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    record = run_one(args.benchmark, seed, family, method, data, args.quick)
                print(f"seed {seed} {family:6s} {method:28s} test WGA {record['test_wga']:.3f} acc "
                      f"{record['test_acc']:.3f} ({record['search_seconds']:.0f}s) {record['params']}", flush=True)
                with open(log, "a") as f:
                    f.write(json.dumps(record, default=str) + "\n")
                done.append(record)
    text = table([r for r in done if r["seed"] in seeds], args.benchmark)
    (out / "results.md").write_text(text + "\n")
    print(text)


# -- cost ------------------------------------------------------------------------------------------------------

def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_cost(args):
    """A reductions fit of k rounds against one fit of its base estimator, in the same process."""
    data = load(args.benchmark, 0, args.quick)
    tr, va = data.train, data.val
    k = 2 if args.quick else 10
    repeats = 1 if args.quick else 3
    print(f"### cost on {args.benchmark} ({len(tr.y)} training rows), k = {k} rounds, median of {repeats}\n")
    print("| base | one fit s | one weighted fit s | method | validation | fit s | / one fit | / (k + 1) | "
          "in the k fits | predicting |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family in args.families or ("hgb", "rf"):
        base = base_estimator(family, args.benchmark, 0)
        weights = np.ones(len(tr.y))
        weights[tr.group_labels == np.argmin(np.bincount(tr.group_labels))] = 10.0
        one = _median_seconds(lambda: clone(base).fit(tr.X, tr.y), repeats)
        key = "sample_weight" if not hasattr(base, "steps") else f"{base.steps[-1][0]}__sample_weight"
        weighted = _median_seconds(lambda: clone(base).fit(tr.X, tr.y, **{key: weights}), repeats)
        for cls in (GroupDROMetaClassifier, CVaRMetaClassifier):
            for validation in (False, True):
                kw = dict(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels) if validation else {}
                fitted = []

                def fit():
                    fitted.append(cls(base, n_iter=k, random_state=0).fit(tr.X, tr.y, group_labels=tr.group_labels,
                                                                          **kw))

                total = _median_seconds(fit, repeats)
                inner = float(fitted[-1].history_["fit_time"].sum())
                print(f"| {family} | {one:.2f} | {weighted:.2f} | {cls.__name__} | {'yes' if validation else 'no'} "
                      f"| {total:.2f} | {total / one:.2f} | {total / one / (k + 1):.2f} | {inner / total:.0%} | "
                      f"{(total - inner) / total:.0%} |", flush=True)


# -- step sizes ------------------------------------------------------------------------------------------------

def run_steps(args):
    """Group DRO by reductions of gradient boosting at several step sizes: the game's end and the validation pick."""
    data = load(args.benchmark, 0, args.quick)
    tr, va, te = data.train, data.val, data.test
    base = base_estimator("hgb", args.benchmark, 0)
    print(f"### Group DRO by reductions of gradient boosting on {args.benchmark} (seed 0), 10 rounds\n")
    print("| eta | worst group log loss of the average, rounds 1 / 5 / 10 | rounds kept | val WGA | test WGA | "
          "final q |")
    print("|---|---|---|---|---|---|")
    for eta in (0.1, 0.3, 1.0, 3.0, 10.0):
        clf = GroupDROMetaClassifier(base, eta=eta, n_iter=2 if args.quick else 10, random_state=0).fit(
            tr.X, tr.y, group_labels=tr.group_labels, X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
        curve = clf.history_["mixture_worst_group_loss"]
        marks = " / ".join(f"{curve[min(i, len(curve)) - 1]:.3f}" for i in (1, 5, 10))
        test = _score(clf, te)[1]
        print(f"| {eta} | {marks} | {clf.n_average_} | {clf.validation_scores_['average'].max():.3f} | {test:.3f} | "
              f"{np.round(clf.q_, 2).tolist()} |", flush=True)


# -- agreement ---------------------------------------------------------------------------------------------------

def run_agreement(args):
    """GroupDROClassifier against Group DRO by reductions of LogisticRegression, the setting of tests/test_meta.py."""
    from skgroup.datasets import make_spurious_benchmark

    small = dict(n_core=10, n_spurious=10, sigma_core=10 / np.sqrt(10))
    rows = []
    for seed in range(args.seeds):
        data = make_spurious_benchmark(2000, 500, 2000, random_state=seed, **small)
        tr, te = data.train, data.test
        head = GroupDROClassifier(random_state=seed).fit(tr.X, tr.y, group_labels=tr.group_labels)
        wrapped = GroupDROMetaClassifier(LogisticRegression(C=1 / (head.l2_reg * len(tr.y))), n_iter=10,
                                         random_state=seed).fit(tr.X, tr.y, group_labels=tr.group_labels)
        rows.append([worst_group_accuracy(te.y, m.predict(te.X), group_labels=te.group_labels)
                     for m in (head, wrapped)])
        print(f"seed {seed}: GroupDROClassifier {rows[-1][0]:.3f}, reductions LR {rows[-1][1]:.3f}", flush=True)
    rows = np.array(rows)
    gap = np.abs(rows[:, 0] - rows[:, 1])
    print(f"\nGroupDROClassifier test WGA {rows[:, 0].mean():.3f} ± {rows[:, 0].std():.3f}; reductions "
          f"LogisticRegression {rows[:, 1].mean():.3f} ± {rows[:, 1].std():.3f}; |gap| mean {gap.mean():.3f}, "
          f"max {gap.max():.3f} over {args.seeds} seeds")


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=("table", "cost", "steps", "agreement"), default="table")
    p.add_argument("--benchmark", default="synthetic", help="synthetic, law or celeba")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--families", nargs="*", choices=FAMILIES, default=None)
    p.add_argument("--methods", nargs="*", default=None, help="only these methods (class names, or 'none')")
    p.add_argument("--out", default=None, help="results folder (default results/wrappers-<benchmark>)")
    p.add_argument("--quick", action="store_true", help="a few hundred rows, one configuration, one seed")
    args = p.parse_args(argv)
    {"table": run_table, "cost": run_cost, "steps": run_steps, "agreement": run_agreement}[args.section](args)


if __name__ == "__main__":
    sys.exit(main())
