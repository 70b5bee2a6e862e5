"""``python -m skgroup``: compare every estimator on a benchmark, then let the search choose.

By default the built-in synthetic benchmark of Sagawa et al. (2020b) (group-
balanced validation and test draws). Two tables:

1. every estimator with its default parameters, over three seeds (DFR and
   DPE train on the validation split, their held-out data, with its group
   labels; ``InferredGroupsClassifier`` is Group DRO on groups inferred from
   the training rows; the others train on the training split);
2. what :class:`~skgroup.model_selection.RobustSearchCV` (``candidates='auto'``)
   picks on the validation split under label-free rules (by default
   ``inferred_worst_group``, the search's default, which scores the
   candidates on groups inferred on the validation rows, and
   ``worst_class``; ``--rules`` adds ``bias_unsupervised`` and
   ``class_diff``), with no
   group labels anywhere: the pick, whether
   it trains on inferred groups (``InferredGroupsClassifier``: Group DRO,
   group balancing or DFR on groups of :mod:`skgroup.groups`), its
   validation score with a bootstrap interval, how many candidates the
   bootstrap cannot tell from it, and its test accuracy and worst-group
   accuracy (with a bootstrap interval).

``--dataset celeba`` uses CelebA attributes from the data folder;
``--dataset PATH`` any embeddings cache written by ``feature_extraction``.
Tuned comparisons over seeds and datasets: ``benchmarks/``.
"""

import argparse
import sys
import time
import warnings

import numpy as np


def _load(dataset, seed, n_train):
    from .datasets import load_celeba_attributes, make_spurious_benchmark, split_embeddings

    if dataset == "synthetic":
        return make_spurious_benchmark(n_train, 1000, 2000, random_state=seed)
    if dataset == "celeba":
        return load_celeba_attributes()
    return split_embeddings(dataset)


def _fit(est, split, val=None):
    params = {}
    if getattr(est, "_fits_on_validation", False):
        # DFR's held-out rows are the validation split, with their group labels
        params.update(X_val=val.X, y_val=val.y, group_labels_val=val.group_labels)
    elif "group_labels" in est.get_metadata_routing().consumes("fit", ["group_labels"]):
        params["group_labels"] = split.group_labels
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a table, not a log: warnings belong to interactive use
        est.fit(split.X, split.y, **params)
    return time.perf_counter() - start


def compare(dataset="synthetic", seeds=(0, 1, 2), n_train=3000, names=None, out=sys.stdout):
    """Fit every estimator per seed; return rows of mean/std metrics."""
    import sklearn

    from .estimators import all_estimators
    from .metrics import worst_class_accuracy, worst_group_accuracy

    chosen = [(n, c) for n, c in all_estimators() if names is None or n in names]
    if not chosen:
        raise SystemExit(f"No estimator matches {names}; choose from {[n for n, _ in all_estimators()]}.")
    results = {name: [] for name, _ in chosen}
    with sklearn.config_context(enable_metadata_routing=True):
        for seed in seeds:
            data = _load(dataset, seed, n_train)
            for name, cls in chosen:
                est = cls(random_state=seed)
                seconds = _fit(est, data.train, data.val)
                pred = est.predict(data.test.X)
                y, g = data.test.y, data.test.group_labels
                results[name].append(
                    (np.mean(pred == y), worst_group_accuracy(y, pred, group_labels=g),
                     worst_class_accuracy(y, pred), seconds)
                )
    rows = []
    for name, runs in results.items():
        arr = np.array(runs)
        rows.append((name, arr.mean(0), arr.std(0)))
    return rows


def format_table(rows, n_seeds):
    head = f"| {'estimator':<27} | {'avg acc':>13} | {'worst-group acc':>15} | {'worst-class acc':>15} | {'fit s':>6} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for name, mean, std in rows:
        cells = [f"{mean[i]:.3f} ± {std[i]:.3f}" for i in range(3)]
        lines.append(f"| {name:<27} | {cells[0]:>13} | {cells[1]:>15} | {cells[2]:>15} | {mean[3]:>6.2f} |")
    return "\n".join(lines)


#: The label-free rules of the second table, RobustSearchCV's default first.
RULES = ("inferred_worst_group", "worst_class", "bias_unsupervised", "class_diff")
#: Shown by default: RobustSearchCV's default rule, which infers groups, and worst-class accuracy (each
#: search takes a minute or two here; ``--rules`` adds the others).
DEFAULT_RULES = ("inferred_worst_group", "worst_class")


def search_picks(dataset="synthetic", seed=0, n_train=3000, rules=RULES, n_jobs=None):
    """RobustSearchCV('auto') under each rule on the validation split, no group labels anywhere."""
    from .analysis import candidate_label
    from .metrics import group_accuracies
    from .model_selection import RobustSearchCV

    data = _load(dataset, seed, n_train)
    tr, va, te = data.train, data.val, data.test
    rows = []
    for rule in rules:
        search = RobustSearchCV("auto", selection=rule, random_state=seed, n_jobs=n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)  # no group_labels, no group_labels_val
        n_candidates = len(search.results_["score"])
        report = group_accuracies(te.y, search.predict(te.X), group_labels=te.group_labels,
                                  confidence_level=0.95, n_bootstrap=1000, random_state=seed)
        inferred = search.best_estimator_name_ == "InferredGroupsClassifier"
        rows.append({
            "rule": rule, "pick": candidate_label(search.best_estimator_name_, search.best_params_),
            "groups": ("inferred (" + type(search.best_estimator_.inferrer_).__name__ + ")") if inferred else "none",
            "score": search.best_score_, "ci": search.best_score_ci_, "ties": search.n_indistinguishable_,
            "n": n_candidates, "acc": report.accuracy, "wga": report.worst_group_accuracy,
            "wga_ci": report.worst_group_ci, "seconds": search.search_time_,
        })
    return rows


def below_erm_notes(rows):
    """A note per estimator whose default is below ERM's mean test worst-group accuracy: what to search."""
    from .model_selection import searched_parameters

    erm = next((mean for name, mean, _ in rows if name == "ERMClassifier"), None)
    if erm is None:
        return ""
    notes = []
    for name, mean, _ in rows:
        if name == "ERMClassifier" or mean[1] >= erm[1]:
            continue
        keys = searched_parameters(name)
        knobs = ", ".join(keys) if keys else "its settings"
        notes.append(f"  {name}: {mean[1]:.3f} < ERM's {erm[1]:.3f}; search {knobs} "
                     f"(RobustSearchCV(['{name}', 'ERMClassifier']))")
    if not notes:
        return ""
    return ("Below ERM's worst-group accuracy at default settings here (their best settings depend on the\n"
            "data; the search below tries them):\n" + "\n".join(notes))


def format_picks(rows):
    lines = ["| selection (no group labels) | pick | trains on groups | val score [95% CI] | indistinguishable "
             "| test acc | test worst-group acc [95% CI] | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['pick']} | {r['groups']} | {r['score']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] "
            f"| {r['ties']} of {r['n'] - 1} | {r['acc']:.3f} | {r['wga']:.3f} [{r['wga_ci'][0]:.3f}, "
            f"{r['wga_ci'][1]:.3f}] | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="skgroup", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic",
                        help="'synthetic' (default), 'celeba', or the path of an embeddings cache")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds of the defaults table (default 3)")
    parser.add_argument("--n-train", type=int, default=3000, help="synthetic training size (default 3000)")
    parser.add_argument("--estimators", nargs="*", default=None, help="names of estimators to run (default all)")
    parser.add_argument("--no-search", action="store_true", help="only the defaults table")
    parser.add_argument("--n-jobs", type=int, default=None, help="parallel candidates of the search")
    parser.add_argument("--rules", nargs="*", default=list(DEFAULT_RULES), choices=RULES,
                        help="the label-free selection rules of the search table, each one search (default: "
                             f"{' '.join(DEFAULT_RULES)}; all: {' '.join(RULES)})")
    args = parser.parse_args(argv)
    seeds = tuple(range(args.seeds))
    start = time.perf_counter()
    rows = compare(args.dataset, seeds, args.n_train, args.estimators)
    print(f"skgroup: test metrics on '{args.dataset}', default parameters, mean ± std over {len(seeds)} seeds\n")
    print(format_table(rows, len(seeds)))
    below = below_erm_notes(rows)
    if below:
        print("\n" + below)
    if not args.no_search:
        picks = search_picks(args.dataset, 0, args.n_train, rules=tuple(args.rules), n_jobs=args.n_jobs)
        print("\nChoosing the method without group labels: RobustSearchCV(candidates='auto') on the validation"
              "\nsplit (seed 0); candidates the paired bootstrap cannot tell from the pick are 'indistinguishable'\n")
        print(format_picks(picks))
    print(f"\n(total {time.perf_counter() - start:.1f} s)")
    print("Tuned comparisons over seeds and datasets, with group labels and without:"
          "\npython benchmarks/search.py --benchmark synthetic   (and compare.py)")


if __name__ == "__main__":
    main()
