"""The benchmark suite: every estimator on every dataset of other shapes, the quality gate of the methods.

For each dataset of ``suite_datasets.DATASETS`` (synthetic, CelebA
attributes and two cuts of them, the law-school table by race and by sex,
MultiNLI x MiniLM, spurious Fashion-MNIST x EfficientNet-Lite0), each
estimator of ``skgroup.estimators.all_estimators()`` and each seed, one cell
per mode:

* ``defaults``: ``Estimator(random_state=seed).fit(X, y)``; training group
  labels only to the estimators that request them through metadata routing
  (Group DRO, group balancing, DFR);
* ``defaults_val``: the same with ``X_val, y_val, group_labels_val``;
* ``tuned``: ``RobustSearchCV([name], selection='worst_group',
  random_state=seed)`` with training and validation group labels;
* ``label_free_inferred`` (one row per dataset and seed):
  ``RobustSearchCV('auto', 'inferred_worst_group', random_state=seed)``, the
  search's default rule (worst accuracy over groups inferred on the
  validation rows), no group labels anywhere;
* ``label_free``: the same search under ``selection='worst_class'``;
* ``reference``: the simple references of ``benchmarks/references.py``
  (scikit-learn / numpy, tuned on validation worst-group accuracy).

Each cell reports test average accuracy, worst-group accuracy (WGA), worst-class
accuracy, the majority rate (test accuracy of always answering the training
majority class), fit time and the warnings raised. Finished cells are
appended to ``cells.jsonl`` in the results folder at once: a killed run keeps
what it did and a restart skips the cells already there. At the end (and with
``--tables-only``) the tables are written: ``docs/benchmarks_results.inc``
(included by ``docs/benchmarks.rst``), ``summary.csv`` and ``summary.json`` in
the results folder.

Usage::

    nice -n 10 python benchmarks/suite.py                      # everything (hours; resumable)
    python benchmarks/suite.py --datasets law celeba-3k --seeds 0 1 2
    python benchmarks/suite.py --estimators JTTClassifier --modes tuned reference
    python benchmarks/suite.py --quick                          # synthetic only, small, one seed (CI)
    python benchmarks/suite.py --tables-only                    # re-render the tables from cells.jsonl
"""

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import references  # noqa: E402
import suite_datasets  # noqa: E402

MODES = ("defaults", "defaults_val", "tuned", "label_free_inferred", "label_free", "reference")
MODE_TITLES = {"defaults": "defaults", "defaults_val": "defaults + val", "tuned": "tuned (worst_group)",
               "label_free": "search 'auto', worst_class",
               "label_free_inferred": "search 'auto', inferred_worst_group (default)", "reference": "reference"}
#: the label-free searches: mode -> RobustSearchCV's selection (the default first)
LABEL_FREE_SEARCHES = {"label_free_inferred": "inferred_worst_group", "label_free": "worst_class"}

#: thresholds of the flags
ERM_MARGIN = 0.02
REFERENCE_MARGIN = 0.01
VAL_ACC_MARGIN = 0.01
CHANCE_MARGIN = 0.01
#: the smallest gap between ERM and tuned Group DRO a "gap closed" share is given for
GAP_MIN = 0.05


def search_name(mode):
    """The row name of a label-free search's cells."""
    return f"RobustSearchCV('auto', {LABEL_FREE_SEARCHES[mode]})"


def _estimators():
    from skgroup.estimators import all_estimators

    return dict(all_estimators())


def _requests_group_labels(est):
    from skgroup.model_selection._validation import requests

    return "group_labels" in requests(est, "fit", ["group_labels"])


def _scores(data, pred):
    te = data.test
    correct = pred == te.y
    groups = np.unique(te.group_labels)
    per_group = [float(correct[te.group_labels == g].mean()) for g in groups]
    per_class = [float(correct[te.y == c].mean()) for c in np.unique(te.y)]
    return {"test_acc": float(correct.mean()), "test_wga": min(per_group), "test_wca": min(per_class),
            "test_bacc": float(np.mean(per_class)), "test_group_acc": per_group}


def _warning_names(caught):
    return sorted({w.category.__name__ for w in caught})


def _warning_messages(caught, limit=6):
    seen = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message)[:200]}"
        if text not in seen:
            seen.append(text)
    return seen[:limit]


def run_cell(data, estimator, mode, seed):
    """One cell: a dict of its scores (or its error)."""
    import torch

    from skgroup.model_selection import RobustSearchCV

    tr, va = data.train, data.val
    out = {}
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start, cpu = time.perf_counter(), time.process_time()
        if mode == "reference":
            res = references.fit_reference(estimator, data, seed)
            pred = res.pop("pred")
            out.update(params=res.pop("params"), val_wga=res.pop("val_wga"), val_acc=res.pop("val_acc"),
                       n_configs=res.pop("n_configs"))
        elif mode in LABEL_FREE_SEARCHES:
            search = RobustSearchCV("auto", LABEL_FREE_SEARCHES[mode], random_state=seed)
            search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
            pred = search.predict(data.test.X)
            out.update(_search_info(search))
        elif mode == "tuned":
            search = RobustSearchCV([estimator], selection="worst_group", random_state=seed)
            search.fit(tr.X, tr.y, group_labels=tr.group_labels, X_val=va.X, y_val=va.y,
                       group_labels_val=va.group_labels)
            pred = search.predict(data.test.X)
            out.update(_search_info(search))
        else:
            est = _estimators()[estimator](random_state=seed)
            kw = {"group_labels": tr.group_labels} if _requests_group_labels(est) else {}
            if mode == "defaults_val":
                kw.update(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
            est.fit(tr.X, tr.y, **kw)
            pred = est.predict(data.test.X)
            for attr in ("n_iter_", "best_iteration_"):
                value = getattr(est, attr, None)
                if isinstance(value, (int, np.integer)):
                    out[attr] = int(value)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    out.update(_scores(data, pred), fit_time=seconds, cpu_time=cpu, warnings=_warning_names(caught),
               warning_messages=_warning_messages(caught))
    return out


def _search_info(search):
    r = search.results_
    i = search.best_index_
    pick_warnings = r["warnings"][i]
    return {"pick": search.best_estimator_name_, "params": _jsonable(search.best_params_),
            "val_score": float(search.best_score_), "n_candidates": int(len(r["score"])),
            "n_indistinguishable": int(search.n_indistinguishable_),
            "pick_warnings": [w for w in str(pick_warnings).split(", ") if w]}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


# ---------------------------------------------------------------------------
# the run


def _key(rec):
    return (rec["dataset"], rec["estimator"], rec["mode"], int(rec["seed"]))


def read_cells(path):
    cells = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    cells.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: that cell runs again
                    pass
    return cells


def _append(path, rec):
    # one write() on an O_APPEND descriptor: two suite processes (e.g. the small and the large
    # datasets side by side) can share one cells.jsonl without interleaving their lines
    line = (json.dumps(rec, default=_jsonable) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def plan(datasets, estimators, modes, seeds):
    """The cells to run, in order: per dataset, seed-major, the modes of each estimator together."""
    cells = []
    for ds in datasets:
        for seed in seeds:
            for est in estimators:
                for mode in ("defaults", "defaults_val", "tuned"):
                    if mode in modes:
                        cells.append((ds, est, mode, seed))
            for mode in LABEL_FREE_SEARCHES:
                if mode in modes:
                    cells.append((ds, search_name(mode), mode, seed))
            if "reference" in modes:
                for ref in references.REFERENCES:
                    if references.LIBRARY_COUNTERPART[ref] in estimators:
                        cells.append((ds, ref, "reference", seed))
    return cells


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cells.jsonl"
    done = {_key(c) for c in read_cells(path)}
    todo = [c for c in plan(args.datasets, args.estimators, args.modes, args.seeds) if c not in done]
    print(f"[suite] {len(done)} cells done, {len(todo)} to run -> {path}", flush=True)
    loaded = {}
    for ds, est, mode, seed in todo:
        if ds not in loaded:
            loaded.clear()  # one dataset in memory at a time
            start = time.perf_counter()
            try:
                loaded[ds] = suite_datasets.load(ds, cache_root=args.cache_root, quick=args.quick)
            except (FileNotFoundError, ImportError) as exc:
                print(f"[suite] skipping {ds}: {exc}", flush=True)
                loaded[ds] = None
            load_seconds = time.perf_counter() - start
            if loaded[ds] is not None:
                print(f"[suite] {ds}: {loaded[ds].shape} loaded in {load_seconds:.1f} s", flush=True)
                _append(out / "datasets.jsonl", {"dataset": ds, "shape": loaded[ds].shape,
                                                  "majority_rate": loaded[ds].majority_rate,
                                                  "kind": loaded[ds].kind,
                                                  "description": loaded[ds].description,
                                                  "load_seconds": load_seconds, "quick": args.quick})
        data = loaded[ds]
        if data is None:
            continue
        rec = {"dataset": ds, "estimator": est, "mode": mode, "seed": seed, "majority_rate": data.majority_rate,
               "n_classes": data.shape["n_classes"]}
        if mode == "reference" and references.REFERENCES[est][1]:
            # deterministic: the same fit for every seed, computed once
            same = [c for c in read_cells(path) if c["dataset"] == ds and c["estimator"] == est
                    and c["mode"] == mode and "error" not in c]
            if same:
                rec.update({k: v for k, v in same[0].items() if k not in rec}, same_as_seed=same[0]["seed"])
                _append(path, rec)
                continue
        start = time.perf_counter()
        try:
            rec.update(run_cell(data, est, mode, seed))
        except Exception as exc:  # a failing cell is a finding, not the end of the run
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()[-2000:]
        rec["wall"] = time.perf_counter() - start
        _append(path, rec)
        shown = (f"acc {rec['test_acc']:.3f} WGA {rec['test_wga']:.3f}" if "error" not in rec
                 else rec["error"][:200])
        print(f"[suite] {ds} {est} {mode} seed {seed}: {shown} ({rec['wall']:.1f} s)", flush=True)


# ---------------------------------------------------------------------------
# tables


def _mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None, 0
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def aggregate(cells):
    """(dataset, estimator, mode) -> mean / std over seeds of the scores, and the cells' errors."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["dataset"], c["estimator"], c["mode"])].append(c)
    agg = {}
    for key, cs in groups.items():
        ok = [c for c in cs if "error" not in c]
        row = {"dataset": key[0], "estimator": key[1], "mode": key[2], "seeds": sorted(c["seed"] for c in ok),
               "errors": [c["error"] for c in cs if "error" in c], "majority_rate": cs[0]["majority_rate"],
               "n_classes": cs[0]["n_classes"]}
        for metric in ("test_acc", "test_wga", "test_wca", "test_bacc", "fit_time", "cpu_time"):
            row[metric], row[metric + "_std"], _ = _mean_std([c.get(metric) for c in ok])
        row["warnings"] = sorted({w for c in ok for w in c.get("warnings", [])})
        row["pick_warnings"] = sorted({w for c in ok for w in c.get("pick_warnings", [])})
        row["picks"] = [(c.get("pick"), c.get("params")) for c in sorted(ok, key=lambda c: c["seed"])
                        if "params" in c]
        row["deterministic"] = any("same_as_seed" in c for c in ok)
        agg[key] = row
    return agg


#: Failures that stand, with their reason: (dataset, estimator, flag) -> why (shown in the failing table).
EXCEPTIONS = {
    ("law", "MMDClassifier", "E"):
        "ERM's WGA on law is 0.04 (it answers 'pass' almost everywhere); MMD, like CORAL, Mixup and "
        "regularized MTL, stays at that floor, 0.03 below it: 6 rows of the smallest test group (194)",
    ("synthetic", "RegularizedMTLClassifier", "E"):
        "without validation rows the last of its 20 epochs is kept (WGA 0.40-0.45 over seeds 0-2); Kulkarni et "
        "al. choose the epoch on validation (Val-GP / No-GP), and given X_val the defaults reach 0.49-0.50, "
        "above ERM's 0.48",
    ("fashion-lite0", "RegularizedMTLClassifier", "E"):
        "as on synthetic: without validation rows the last of its 20 epochs is kept, and it swings with the seed "
        "(WGA 0.544 / 0.404 / 0.357, seeds 0-2); given X_val the defaults reach 0.501 / 0.578 / 0.580, above "
        "ERM's 0.497",
    ("law", "RegularizedMTLClassifier", "E"):
        "at ERM's floor on law (WGA 0.04-0.06), 0.02 below it: 4 rows of the smallest test group (194)",
    ("celeba-3k", "GroupBalancedClassifier", "R"):
        "the search picks 'resample' on a validation split whose smallest group has 9 rows (one row: 0.11 "
        "WGA); at defaults (reweight) the library reaches the reference (0.659 vs 0.658)",
    ("celeba-3k", "JTTClassifier", "R"):
        "the same noisy validation split (smallest group 9 rows) chooses among JTT's grid; within one "
        "standard deviation over seeds of the reference",
    ("celeba-glasses", "CVaRClassifier", "R"):
        "the reference minimises the exact full-batch CVaR (alpha 0.1, l2 0.1, 340 steps chosen on "
        "validation); the library's minibatch estimate needs alpha * batch >= 2, and its search picks "
        "alpha 0.05 in every seed, a degenerate fit (DegenerateCVaRWarning says so), WGA 0.457 / 0.592 / "
        "0.572 over seeds 0-2 (with alpha 0.1 in the space since: the same picks and scores)",
    ("law", "GroupBalancedClassifier", "R"):
        "the reference picks l2 = 1 where the library's space stops at 1e-3 (SubpopBench's weight-decay "
        "range); a space up to 1 was tried on the suite: the search still picked <= 1e-3 here (same WGA) "
        "and lost 0.03 on synthetic. On law-sex the library is above the reference (0.70 vs 0.64)",
    ("celeba-3k", "DFRClassifier", "V"):
        "DFR retrains its last layer on group-balanced subsets of X_val, whose smallest group has 9 rows "
        "(TinyHeldOutGroupWarning says so); without X_val it holds out training rows, which have more",
    ("celeba-3k", "MixtureBalancedClassifier", "V"):
        "the validation split chooses the mixture's epoch on a smallest group of 9 rows",
    ("synthetic", "CORALClassifier", "E"):
        "the default budget more than the penalty: 10 AdamW epochs underfit the noisy core features; with "
        "penalty_weight=0 (minibatch ERM on the same budget) the same runs reach 0.442 (seeds 0-2), the "
        "penalty costs 0.02 more",
    ("synthetic", "MMDClassifier", "E"):
        "the default budget, not the penalty: with penalty_weight=0 the same runs reach 0.442, with the "
        "penalty 0.449 (seeds 0-2)",
    ("law-sex", "JTTClassifier", "R"):
        "the reference's final model is a logistic regression with l2 = 0.01 fitted to convergence; the "
        "library's space searches the identification length and lambda_up with the final model's default "
        "(weak L2, 2 CelebA epochs of steps). l2_reg in {1e-4, 1e-2} added to the space was tried on the "
        "suite: here 0.674 -> 0.687, but celeba-glasses 0.611 -> 0.591 and MultiNLI 0.291 -> 0.275 (a "
        "wider grid, a noisier pick); not kept",
    ("law-sex", "MMDClassifier", "E"):
        "as on law: at ERM's floor (ERM's WGA 0.12, it answers 'pass' almost everywhere), MMD 0.02 below it",
    ("mnli-minilm", "CVaRClassifier", "E"):
        "the siamese MiniLM features carry little signal (ERM accuracy 0.52 over 3 classes); at defaults "
        "CVaR's worst 5 % are rows no head fits and the fit is degenerate (DegenerateCVaRWarning says so, "
        "with what to search); tuned CVaR is above ERM",
    ("mnli-minilm", "GroupDROClassifier", "E"):
        "little signal and a worst group of 21 test rows: without validation Group DRO's WGA ranges "
        "0.05-0.24 over l2_reg 1e-4 ... 0.1 (one row = 0.048); with validation data it is at ERM's "
        "(0.276 vs 0.286), tuned above it",
    ("mnli-minilm", "MixtureBalancedClassifier", "E"):
        "two rows of the 21-row worst test group below ERM, chosen on a 21-row worst validation group",
    ("mnli-minilm", "MixtureBalancedClassifier", "V"):
        "the validation split chooses the mixture's epoch on a 21-row worst group (one row = 0.048)",
    ("mnli-minilm", "MMDClassifier", "E"):
        "penalty_weight 1 (DomainBed's default) outweighs a cross-entropy that stays near log 3 on these "
        "weak features: the hidden layer collapses (training loss 1.15) and the head answers one class; "
        "penalty_weight 0.1 gives WGA 0.23, 0 gives 0.29 (seed 0); with validation data the fit warns "
        "(BelowERMWarning, BelowMajorityWarning) and names penalty_weight among what to search",
    ("mnli-minilm", "MMDClassifier", "C"):
        "the collapse above; the fit warns (BelowMajorityWarning)",
    ("mnli-minilm", "LfFClassifier", "M"):
        "the epoch chosen on a 21-row worst validation group is at chance on the rest; since this run the "
        "fit warns on its validation rows (BelowMajorityWarning 'on its validation rows')",
    ("mnli-minilm", "ERMClassifier", "R"):
        "the search picks l2 = 0.01 on a 21-row worst validation group; its test accuracy is higher than "
        "the reference's (0.533 vs 0.480), its worst group 4 rows of 21 lower",
    ("mnli-minilm", "JTTClassifier", "R"):
        "little signal (ERM accuracy 0.52): JTT's error set is 40 % of the rows (LargeErrorSetWarning); "
        "the reference's pick, 5 L-BFGS iterations as the identification model, has no counterpart in "
        "the library's epoch-based space",
    ("fashion-lite0", "InferredGroupsClassifier", "E"):
        "the default inferrer (GEORGE-style clusters of the features, class by class) finds clothing "
        "structure, not the background colour: its clusters are unrelated to the true groups (adjusted "
        "Rand index -0.02 and 0.01 within the classes), and balancing them hurts; with validation data the "
        "fit warns (BelowERMWarning); the tuned search picks DFR on the inferred groups (WGA 0.834)",
    ("fashion-lite0", "CVaRClassifier", "E"):
        "degenerate at the default alpha (DegenerateCVaRWarning says so, with what to search); tuned CVaR "
        "is above ERM (0.542 vs 0.497)",
    ("fashion-lite0", "CVaRClassifier", "V"):
        "the same degenerate fit, its epoch chosen on validation",
    ("celeba-glasses", "LDAMClassifier", "M"):
        "LDAM's margins at the default scale collapse to the majority class on this 93.5 % cut (3 of "
        "19,962 test rows answered with the small class); since this run the fit warns that it does no "
        "better than the majority class, with max_margin and scale to search",
    ("mnli-minilm", "MMDClassifier", "M"):
        "the collapse of MMD's hidden layer under penalty_weight 1 (see its E row); the fit warns "
        "(BelowMajorityWarning)",
    ("synthetic", "MixupClassifier", "E"):
        "partly the default budget (mixed, soft targets fit more slowly): 0.38 after 10 epochs, 0.45 after "
        "30, 0.39 after 100 (seed 0); at ERM's 1e-3 step 0.22: on this data Mixup does not lift the worst "
        "group at any budget",
    ("fashion-lite0", "MixupClassifier", "E"):
        "as on synthetic: 0.29 after 10 epochs, 0.43 after 30, 0.44 after 100 (seed 0), ERM 0.497; tuned "
        "Mixup is at ERM's level (0.497)",
    ("synthetic", "GroupDROClassifier", "R"):
        "0.013 below: the reference trains up to 100 epochs of group-balanced minibatches of 128 and keeps "
        "the best epoch (2,400 steps at most); the library's space trains 15 CelebA-equivalent epochs (2,385 "
        "steps, 25 epochs here) at its own batch (32) and learning rate; with 5 it was 0.756",
}


def _within_noise(wga, info):
    """For a WGA flag, (the cell's WGA, the one it falls short of), when the gap is within two binomial standard
    errors of an accuracy on the smallest test group: says so (one model's worst-group accuracy moves that much
    between test draws of that size)."""
    n = (info or {}).get("shape", {}).get("min_test_group")
    if wga is None or not n:
        return ""
    gap, p = wga[1] - wga[0], min(max(wga[1], 1.0 / n), 1 - 1.0 / n)
    se = math.sqrt(p * (1 - p) / n)
    if gap > 2 * se:
        return ""
    return (f"{gap:.3f} is within two standard errors ({2 * se:.3f}) of an accuracy of {p:.2f} on the smallest "
            f"test group ({n} rows): not told apart from test noise")


def flags(agg):
    """Each aggregated cell's failures: a list of (code, text, wga) with wga the (cell's WGA, the WGA it falls
    short of) for the WGA flags (E, R, V), else None."""
    out = defaultdict(list)
    for key, row in agg.items():
        ds, est, mode = key
        if row["test_acc"] is None:
            if row["errors"]:
                out[key].append(("X", f"failed: {row['errors'][0][:120]}", None))
            continue
        if mode == "reference":
            continue
        # below the majority class as skgroup.metrics.below_majority defines it: worse on average *and* no
        # better class by class; a lower average alone is the trade a robust method makes for the small classes
        constant_like = row["test_bacc"] is not None and row["test_bacc"] <= 1.0 / row["n_classes"] + CHANCE_MARGIN
        if constant_like and row["test_acc"] < row["majority_rate"]:
            out[key].append(("M", f"average accuracy {row['test_acc']:.3f} < majority rate "
                                  f"{row['majority_rate']:.3f}, balanced accuracy {row['test_bacc']:.3f}", None))
        elif constant_like:
            out[key].append(("C", f"balanced accuracy {row['test_bacc']:.3f}: no better than a constant "
                                  f"(1/{row['n_classes']})", None))
        erm_mode = "tuned" if mode == "tuned" else "defaults"
        erm = agg.get((ds, "ERMClassifier", erm_mode))
        if (erm and erm["test_wga"] is not None and (ds, est, mode) != (ds, "ERMClassifier", erm_mode)):
            if row["test_wga"] < erm["test_wga"] - ERM_MARGIN:
                out[key].append(("E", f"WGA {row['test_wga']:.3f} < ERM ({MODE_TITLES[erm_mode]}) "
                                      f"{erm['test_wga']:.3f} - {ERM_MARGIN}", (row["test_wga"], erm["test_wga"])))
        if mode == "tuned":
            for ref, lib in references.LIBRARY_COUNTERPART.items():
                r = agg.get((ds, ref, "reference"))
                if lib == est and r and r["test_wga"] is not None and row["test_wga"] < r["test_wga"] - REFERENCE_MARGIN:
                    out[key].append(("R", f"WGA {row['test_wga']:.3f} < reference {ref} {r['test_wga']:.3f} - "
                                          f"{REFERENCE_MARGIN}", (row["test_wga"], r["test_wga"])))
        if mode == "defaults_val":
            a = agg.get((ds, est, "defaults"))
            if a and a["test_acc"] is not None:
                if est == "ERMClassifier" and row["test_acc"] < a["test_acc"] - VAL_ACC_MARGIN:
                    out[key].append(("V", f"X_val lowers ERM's average accuracy {a['test_acc']:.3f} -> "
                                          f"{row['test_acc']:.3f}", None))
                noise = max(ERM_MARGIN, 2 * math.hypot(a["test_wga_std"] or 0, row["test_wga_std"] or 0))
                if est != "ERMClassifier" and row["test_wga"] < a["test_wga"] - noise:
                    out[key].append(("V", f"X_val lowers WGA {a['test_wga']:.3f} -> {row['test_wga']:.3f} "
                                          f"(beyond {noise:.3f}, twice the seeds' std)", (row["test_wga"], a["test_wga"])))
    return out


def _fmt(mean, std, digits=3):
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _csv_table(header, rows, widths=None):
    lines = [".. csv-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(str(w) for w in widths))
    lines.append("")

    def q(v):  # a '|' would open a reST substitution reference
        return '"' + str(v).replace('"', '""').replace("|", "\\|") + '"'

    lines.append("   " + ", ".join(q(h) for h in header))
    for r in rows:
        lines.append("   " + ", ".join(q(v) for v in r))
    return "\n".join(lines) + "\n"


def _short(name):
    return name.replace("Classifier", "")


def _params_text(params):
    if not params:
        return ""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def render(cells, datasets_info, estimators_order, command):
    agg = aggregate(cells)
    fl = flags(agg)
    ds_order = [d for d in suite_datasets.DATASETS if any(k[0] == d for k in agg)]
    parts = [f".. This file is generated by ``{command}``; edit benchmarks/suite.py, not this file.\n"]

    # datasets
    rows = []
    for ds in ds_order:
        info = datasets_info.get(ds)
        if info is None:
            continue
        s = info["shape"]
        rows.append([ds, info["kind"], f"{s['n_train']:,} / {s['n_val']:,} / {s['n_test']:,}", s["n_features"],
                     s["n_classes"], s["n_groups"], f"{s['min_train_group']:,} / {s['min_val_group']:,} / "
                     f"{s['min_test_group']:,}", f"{info['majority_rate']:.3f}", info["description"]])
    parts.append("Datasets\n--------\n\n" + _csv_table(
        ["dataset", "kind", "train / val / test", "features", "classes", "groups", "smallest group (tr / va / te)",
         "majority rate", "how"], rows) + "\n")

    # wall time
    rows, total, total_cpu = [], 0.0, 0.0
    for ds in ds_order:
        wall, cpu = defaultdict(float), defaultdict(float)
        for c in cells:
            if c["dataset"] == ds and "same_as_seed" not in c:
                wall[c["mode"]] += c.get("wall", 0.0)
                cpu[c["mode"]] += c.get("cpu_time", 0.0)
        seeds = sorted({c["seed"] for c in cells if c["dataset"] == ds})
        rows.append([ds, len(seeds)] + [f"{wall[m] / 60:.1f} ({cpu[m] / 60:.1f})" for m in MODES] +
                    [f"{sum(wall.values()) / 60:.1f} ({sum(cpu.values()) / 60:.1f})"])
        total += sum(wall.values())
        total_cpu += sum(cpu.values())
    parts.append("Wall time\n---------\n\n"
                 f"Minutes of wall time (and of the process's CPU time) per dataset and mode, summed over the "
                 f"cells, on this machine: {os.cpu_count()} CPU cores shared with other work, ``nice -n 10``. All "
                 f"cells: **{total / 3600:.2f} h** wall, {total_cpu / 3600:.2f} h CPU.\n\n" + _csv_table(
                     ["dataset", "seeds"] + [MODE_TITLES[m] for m in MODES] + ["all"], rows) + "\n")

    # library against the references
    rows = []
    for ds in ds_order:
        for ref, lib in references.LIBRARY_COUNTERPART.items():
            a, r = agg.get((ds, lib, "tuned")), agg.get((ds, ref, "reference"))
            if not a or not r or a["test_wga"] is None or r["test_wga"] is None:
                continue
            diff = a["test_wga"] - r["test_wga"]
            bad = diff < -REFERENCE_MARGIN
            ref_text = _fmt(r["test_wga"], r["test_wga_std"]) + (" (deterministic)" if r["deterministic"] else "")
            picks = "; ".join(_params_text(p) for _, p in r["picks"][:1])
            rows.append([ds, _short(lib), ref, _fmt(a["test_wga"], a["test_wga_std"]), ref_text,
                         f"{diff:+.3f}" + (" **below**" if bad else ""), picks])
    parts.append(
        "Library against the references\n------------------------------\n\n"
        "Test WGA (mean ± std over seeds) of each estimator tuned by the library "
        "(``RobustSearchCV([name], selection='worst_group')``) and of its reference in "
        "``benchmarks/references.py`` tuned on validation WGA; **below**: library < reference - "
        f"{REFERENCE_MARGIN}. The reference's pick (seed 0) in the last column.\n\n" +
        _csv_table(["dataset", "estimator", "reference", "library WGA", "reference WGA", "difference",
                    "reference's pick"], rows) + "\n")

    # without group labels: each label-free search against ERM and Group DRO given group labels
    rows = []
    for ds in ds_order:
        erm, dro = agg.get((ds, "ERMClassifier", "defaults")), agg.get((ds, "GroupDROClassifier", "tuned"))
        found = [agg.get((ds, search_name(mode), mode)) for mode in LABEL_FREE_SEARCHES]
        if not any(found):
            continue
        row = [ds, "" if not erm else _fmt(erm["test_wga"], erm["test_wga_std"]),
               "" if not dro else _fmt(dro["test_wga"], dro["test_wga_std"])]
        for a in found:
            if not a or a["test_wga"] is None:
                row += ["", ""]
                continue
            gap = None if not (erm and dro) else dro["test_wga"] - erm["test_wga"]
            closed = (f"{100 * (a['test_wga'] - erm['test_wga']) / gap:.0f} %" if gap is not None
                      and gap >= GAP_MIN else "")
            row += [_fmt(a["test_wga"], a["test_wga_std"]), closed]
        rows.append(row)
    if rows:
        header = ["dataset", "ERM (defaults)", "Group DRO (tuned, group labels)"]
        for mode in LABEL_FREE_SEARCHES:
            header += [MODE_TITLES[mode], "gap closed"]
        parts.append(
            "Without group labels\n--------------------\n\n"
            "Test WGA (mean ± std over seeds) of the label-free searches against ERM at defaults and Group DRO "
            "trained and tuned with group labels; \"gap closed\": the share of the gap between those two that "
            f"the search closes (shown where the gap is at least {GAP_MIN}).\n\n" + _csv_table(header, rows) + "\n")

    # per dataset
    parts.append("Every estimator, every dataset\n------------------------------\n\n"
                 "Test average accuracy and worst-group accuracy, mean ± std over seeds. Flags: **M** below the "
                 "majority class: average accuracy below the majority rate and balanced accuracy (mean per-class "
                 f"accuracy) at most 1/K + {CHANCE_MARGIN} (a robust method trading average accuracy for the "
                 "small classes, balanced accuracy above chance, is not flagged); **C** balanced accuracy at most "
                 f"1/K + {CHANCE_MARGIN} at or above the majority rate, no better than a constant answer; "
                 "**E** WGA below ERM's - "
                 f"{ERM_MARGIN} (ERM at defaults for the default modes, tuned ERM for the tuned mode); **R** tuned "
                 f"WGA below the reference - {REFERENCE_MARGIN}; **V** passing ``X_val`` lowers ERM's average "
                 f"accuracy by more than {VAL_ACC_MARGIN}, or another estimator's WGA beyond seed noise; **X** "
                 "the fit failed.\n\n")
    for ds in ds_order:
        info = datasets_info.get(ds, {})
        maj = info.get("majority_rate")
        title = f"{ds}" + (f" (majority rate {maj:.3f})" if maj is not None else "")
        rows = []
        names = [e for e in estimators_order if any(k[0] == ds and k[1] == e for k in agg)]
        searches = {search_name(m): m for m in LABEL_FREE_SEARCHES if (ds, search_name(m), m) in agg}
        names += list(searches)
        for est in names:
            row = [_short(est)]
            for mode in ("defaults", "defaults_val", "tuned"):
                # a label-free search fills the tuned columns
                m = searches.get(est, mode)
                a = agg.get((ds, est, m)) if (est not in searches or mode == "tuned") else None
                if a is None:
                    row += ["", ""]
                    continue
                codes = "".join(sorted({c for c, *_ in fl.get((ds, est, m), [])}))
                row += [_fmt(a["test_acc"], a["test_acc_std"]), _fmt(a["test_wga"], a["test_wga_std"]) +
                        (f" **{codes}**" if codes else "")]
            times = []
            for mode in ("defaults", "defaults_val", "tuned"):
                m = searches.get(est, mode)
                a = agg.get((ds, est, m))
                times.append("" if a is None or a["fit_time"] is None or (est in searches and mode != "tuned")
                             else f"{a['fit_time']:.1f}")
            row.append(" / ".join(t for t in times if t))
            rows.append(row)
        for ref in references.REFERENCES:
            a = agg.get((ds, ref, "reference"))
            if a:
                rows.append([f"reference: {ref}", "", "", "", "", _fmt(a["test_acc"], a["test_acc_std"]),
                             _fmt(a["test_wga"], a["test_wga_std"]),
                             "" if a["fit_time"] is None else f"{a['fit_time']:.1f}"])
        parts.append(f"{title}\n{'~' * len(title)}\n\n" + _csv_table(
            ["estimator", "defaults: acc", "WGA", "defaults + val: acc", "WGA", "tuned: acc", "WGA",
             "seconds (defaults / + val / tuned)"], rows) + "\n")
        for name, mode in searches.items():
            picks = agg[(ds, name, mode)]
            if picks["picks"]:
                text = "; ".join(f"{_short(p or '?')} ({_params_text(q)})" for p, q in picks["picks"])
                parts.append(f"The label-free search under selection='{LABEL_FREE_SEARCHES[mode]}' picked, by "
                             f"seed: {text}.\n\n")

    # the failing cells
    rows = []
    for key in sorted(fl, key=lambda k: (ds_order.index(k[0]) if k[0] in ds_order else 99, k[1], MODES.index(k[2]))):
        for code, text, wga in fl[key]:
            a = agg[key]
            warn = ", ".join(a["pick_warnings"] or a["warnings"])
            rows.append([key[0], _short(key[1]), MODE_TITLES[key[2]], code, text, warn,
                         EXCEPTIONS.get((key[0], key[1], code)) or _within_noise(wga, datasets_info.get(key[0]))])
    traded = sum(1 for k, a in agg.items() if k[2] != "reference" and a["test_acc"] is not None
                 and a["test_acc"] < a["majority_rate"] and not any(c == "M" for c, *_ in fl.get(k, ())))
    parts.append("Failing cells\n-------------\n\n"
                 f"{len(rows)} failures over {len(fl)} cells ({traded} other cells have an average accuracy "
                 "below the majority rate with a balanced accuracy above chance: the trade of a robust method on "
                 "imbalanced classes, not a failure). The warnings column: those the fit raised (for a search, "
                 "those recorded for its pick); the last column: why the failure stands, where it is "
                 "understood.\n\n" +
                 (_csv_table(["dataset", "estimator", "mode", "flag", "what", "warnings", "why"], rows) if rows else
                  "None.\n") + "\n")
    return "\n".join(parts), agg, fl


def write_tables(args):
    out = Path(args.out)
    cells = read_cells(out / "cells.jsonl")
    if not cells:
        print("[suite] no cells yet", flush=True)
        return None
    info = {}
    for d in read_cells(out / "datasets.jsonl"):
        info[d["dataset"]] = d
    order = list(_estimators())
    command = "python benchmarks/suite.py" + (" --quick" if args.quick else "")
    text, agg, fl = render(cells, info, order, command)
    docs = Path(args.docs)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = ["dataset", "estimator", "mode", "seeds", "majority_rate", "test_acc", "test_acc_std", "test_wga",
                "test_wga_std", "test_wca", "test_wca_std", "fit_time", "flags", "warnings", "errors"]
        w.writerow(cols)
        for key, row in agg.items():
            w.writerow([row["dataset"], row["estimator"], row["mode"], " ".join(map(str, row["seeds"])),
                        row["majority_rate"], row["test_acc"], row["test_acc_std"], row["test_wga"],
                        row["test_wga_std"], row["test_wca"], row["test_wca_std"], row["fit_time"],
                        "".join(c for c, *_ in fl.get(key, [])), " ".join(row["warnings"]),
                        " | ".join(row["errors"])])
    summary = {"cells": len(cells), "platform": platform.platform(), "cpus": os.cpu_count(),
               "failures": [{"dataset": k[0], "estimator": k[1], "mode": k[2], "flag": c, "what": t}
                            for k, v in fl.items() for c, t, _ in v]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[suite] tables -> {docs}, {out / 'summary.csv'}; {len(summary['failures'])} failures", flush=True)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=list(suite_datasets.DATASETS))
    p.add_argument("--estimators", nargs="+", help="estimator class names (default: all_estimators())")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--quick", action="store_true",
                   help="the synthetic data only, 400 training rows, seed 0; results and tables under --out")
    p.add_argument("--out", help="results folder (default results/suite, or results/suite-quick with --quick)")
    p.add_argument("--docs", help="the generated table file (default docs/benchmarks_results.inc; with --quick "
                                  "<out>/benchmarks_results.inc)")
    p.add_argument("--cache-root", help="extracted features (default $SKGROUP_CACHE or ~/skgroup_data/cache)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--tables-only", action="store_true", help="render the tables from cells.jsonl, run nothing")
    args = p.parse_args(argv)
    known = list(_estimators())
    args.estimators = args.estimators or known
    unknown = sorted(set(args.estimators) - set(known))
    if unknown:
        p.error(f"unknown estimators {unknown}; choose from {known}")
    if args.quick:
        args.datasets = args.datasets or ["synthetic"]
        if args.datasets != ["synthetic"]:
            p.error("--quick runs the synthetic data only")
        args.seeds = args.seeds or [0]
        args.out = args.out or str(ROOT / "results" / "suite-quick")
        args.docs = args.docs or str(Path(args.out) / "benchmarks_results.inc")
    args.datasets = args.datasets or list(suite_datasets.DATASETS)
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    args.out = args.out or str(ROOT / "results" / "suite")
    args.docs = args.docs or str(ROOT / "docs" / "benchmarks_results.inc")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.tables_only:
        start = time.perf_counter()
        run(args)
        _append(Path(args.out) / "runs.jsonl", {"argv": sys.argv[1:] if argv is None else argv,
                                                 "wall": time.perf_counter() - start, "end": time.time()})
    return write_tables(args)


if __name__ == "__main__":
    main()
