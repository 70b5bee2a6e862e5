"""The invariance / alignment penalties (IRM, V-REx, CORAL, MMD) next to ERM, on data where the answer is known.

Sections (``--sections``, all by default), each over ``--seeds`` draws:

* ``defaults``: every method at its defaults, trained on the training split
  with its group labels, no validation; test average and worst-group
  accuracy and the fit time as a multiple of ``ERMClassifier``'s (same
  process, same data, interleaved).
* ``tuned``: ``RobustSearchCV([name], selection='worst_group')`` over the
  registered search space, on the validation split (with its group labels,
  early stopping on validation worst-group accuracy), next to ERM tuned the
  same way; the configuration each seed picked.
* ``environments``: the other reading of the group labels
  (``environments='attribute'`` / ``'groups'``) at the defaults.
* ``shift``: IRM's own setting (Colored MNIST, Arjovsky et al., 2019, Sec.
  5.2): two training environments whose spurious correlation differs (a = y
  for 95% and for 80% of the rows), given as ``group_labels`` with
  ``environments='groups'``; tested on the group-balanced test split.
* ``scale``: CORAL and MMD at penalty weights 0 (the MLP head alone), 0.1, 1
  and 10, on the raw features (row norm about 100) and standardised ones: the
  penalties' scale (CORAL's covariance term is quartic in the features, MMD's
  bandwidths are fixed) makes the useful weight depend on the features' scale.

Results are printed as reStructuredText tables (the method pages' tables)::

    nice -n 10 python benchmarks/zoo_penalties.py --seeds 3
    nice -n 10 python benchmarks/zoo_penalties.py --seeds 3 --sections defaults tuned
    python benchmarks/zoo_penalties.py --quick          # a smoke test of every section
"""

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from compare import load_benchmark  # benchmarks/ is on sys.path when a script runs
from skgroup import CORALClassifier, ERMClassifier, IRMClassifier, MMDClassifier, VRExClassifier
from skgroup.datasets import make_spurious_benchmark, make_spurious_features
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import RobustSearchCV

METHODS = [IRMClassifier, VRExClassifier, CORALClassifier, MMDClassifier]
ALL_METHODS = list(METHODS)
SECTIONS = ("defaults", "tuned", "environments", "shift", "scale")


def _scores(est, X, split):
    pred = est.predict(X)
    return float(np.mean(pred == split.y)), worst_group_accuracy(split.y, pred, group_labels=split.group_labels)


def _fit(est, X, y, **kwargs):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, **kwargs)
    return time.perf_counter() - start


def _cell(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def _table(header, rows, out):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    rule = " ".join("=" * w for w in widths)
    print(rule, file=out)
    print(" ".join(str(h).ljust(w) for h, w in zip(header, widths)), file=out)
    print(rule, file=out)
    for r in rows:
        print(" ".join(str(c).ljust(w) for c, w in zip(r, widths)), file=out)
    print(rule + "\n", file=out)


def defaults(seeds, quick, out):
    res = {}
    for seed in seeds:
        data = load_benchmark("synthetic", seed, quick)
        tr, te = data.train, data.test
        erm = ERMClassifier(random_state=seed)
        t_erm = _fit(erm, tr.X, tr.y)
        res.setdefault("ERMClassifier", []).append((*_scores(erm, te.X, te), t_erm, 1.0, np.nan))
        for cls in METHODS:
            est = cls(random_state=seed)
            t = _fit(est, tr.X, tr.y, group_labels=tr.group_labels)
            t_erm = _fit(clone(erm), tr.X, tr.y)  # ERM's time again, next to it
            # the same schedule without the penalty (a weight of 0 is not evaluated): its overhead
            t_bare = _fit(clone(est).set_params(penalty_weight=0.0), tr.X, tr.y, group_labels=tr.group_labels)
            res.setdefault(cls.__name__, []).append((*_scores(est, te.X, te), t, t / t_erm, t / t_bare))
        print(f"defaults: seed {seed} done", file=sys.stderr)
    print(f"Defaults, synthetic benchmark, {len(seeds)} seeds (test accuracy, worst-group accuracy, fit seconds, "
          "fit time / ERMClassifier's, fit time / the same estimator's with penalty_weight=0):\n", file=out)
    rows = [(name, _cell([r[0] for r in v]), _cell([r[1] for r in v]), f"{np.mean([r[2] for r in v]):.1f}",
             f"{np.mean([r[3] for r in v]):.1f}x",
             "" if name == "ERMClassifier" else f"{np.mean([r[4] for r in v]):.2f}x") for name, v in res.items()]
    _table(("estimator", "accuracy", "worst-group", "seconds", "/ ERM", "/ no penalty"), rows, out)


def tuned(seeds, quick, out):
    res, picks = {}, {}
    for seed in seeds:
        data = load_benchmark("synthetic", seed, quick)
        tr, va, te = data.train, data.val, data.test
        for name in ["ERMClassifier", *(c.__name__ for c in METHODS)]:
            search = RobustSearchCV([name], selection="worst_group", random_state=seed)
            kwargs = dict(X_val=va.X, y_val=va.y, group_labels_val=va.group_labels)
            t = _fit(search, tr.X, tr.y, group_labels=tr.group_labels, **kwargs)
            res.setdefault(name, []).append((*_scores(search.best_estimator_, te.X, te), t))
            picks.setdefault(name, []).append(search.best_params_)
        print(f"tuned: seed {seed} done", file=sys.stderr)
    print(f"Tuned by RobustSearchCV([name], selection='worst_group') on the validation split, synthetic "
          f"benchmark, {len(seeds)} seeds (test accuracy, worst-group accuracy, search seconds, the picks):\n",
          file=out)
    rows = []
    for name, v in res.items():
        shown = "; ".join(", ".join(f"{k}={p[k]:g}" if isinstance(p[k], float) else f"{k}={p[k]}"
                                    for k in sorted(p) if k != "max_iter") for p in picks[name])
        rows.append((name, _cell([r[0] for r in v]), _cell([r[1] for r in v]), f"{np.mean([r[2] for r in v]):.0f}",
                     shown))
    _table(("estimator", "accuracy", "worst-group", "seconds", "picked (per seed)"), rows, out)


def environments(seeds, quick, out):
    res = {}
    for seed in seeds:
        data = load_benchmark("synthetic", seed, quick)
        tr, te = data.train, data.test
        for cls in METHODS:
            for env in ("attribute", "groups"):
                est = cls(environments=env, random_state=seed)
                _fit(est, tr.X, tr.y, group_labels=tr.group_labels)
                res.setdefault((cls.__name__, env), []).append(_scores(est, te.X, te))
        print(f"environments: seed {seed} done", file=sys.stderr)
    print(f"Environments read from the (class, attribute) group labels, defaults otherwise, synthetic benchmark, "
          f"{len(seeds)} seeds (test accuracy / worst-group accuracy):\n", file=out)
    rows = [(name, env, _cell([r[0] for r in v]), _cell([r[1] for r in v])) for (name, env), v in res.items()]
    _table(("estimator", "environments", "accuracy", "worst-group"), rows, out)


def two_environments(n, seed, fractions=(0.95, 0.8)):
    """Two environments with a = y for ``fractions[0]`` and ``fractions[1]`` of their rows."""
    parts = [make_spurious_features(n // 2 + (n % 2) * e, majority_fraction=f, random_state=seed + 100 * e)
             for e, f in enumerate(fractions)]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    env = np.concatenate([np.full(p[1].shape[0], e) for e, p in enumerate(parts)])
    return X, y, env


def shift(seeds, quick, out):
    res = {}
    n = 1000 if quick else 3000
    for seed in seeds:
        X, y, env = two_environments(n, seed)
        te = make_spurious_benchmark(400, 400, 800 if quick else 2000, random_state=seed + 1000).test
        erm = ERMClassifier(random_state=seed)
        _fit(erm, X, y)
        res.setdefault("ERMClassifier", []).append(_scores(erm, te.X, te))
        for cls in METHODS:
            for weight in ([None, 1e4] if cls in (IRMClassifier, VRExClassifier) else [None, 10.0]):
                est = cls(environments="groups", random_state=seed)
                if weight is not None:
                    est.set_params(penalty_weight=weight)
                _fit(est, X, y, group_labels=env)
                res.setdefault(f"{cls.__name__} (penalty_weight={est.penalty_weight:g})", []).append(
                    _scores(est, te.X, te))
        print(f"shift: seed {seed} done", file=sys.stderr)
    print(f"Two training environments of different spurious correlation (a = y for 95% / 80% of their rows), "
          f"environments='groups', {len(seeds)} seeds (test accuracy / worst-group accuracy):\n", file=out)
    rows = [(name, _cell([r[0] for r in v]), _cell([r[1] for r in v])) for name, v in res.items()]
    _table(("estimator", "accuracy", "worst-group"), rows, out)


def scale(seeds, quick, out):
    res = {}
    for seed in seeds:
        data = load_benchmark("synthetic", seed, quick)
        tr, te = data.train, data.test
        scaler = StandardScaler().fit(tr.X)
        for scaled in (False, True):
            Xtr, Xte = (scaler.transform(tr.X), scaler.transform(te.X)) if scaled else (tr.X, te.X)
            for cls in (CORALClassifier, MMDClassifier):
                for weight in (0.0, 0.1, 1.0, 10.0):
                    est = cls(penalty_weight=weight, random_state=seed)
                    _fit(est, Xtr, tr.y, group_labels=tr.group_labels)
                    res.setdefault((cls.__name__, "standardised" if scaled else "raw", weight), []).append(
                        _scores(est, Xte, te))
        print(f"scale: seed {seed} done", file=sys.stderr)
    print(f"CORAL and MMD by penalty weight on raw and standardised features, synthetic benchmark, {len(seeds)} "
          "seeds (test accuracy / worst-group accuracy):\n", file=out)
    rows = [(name, feats, f"{w:g}", _cell([r[0] for r in v]), _cell([r[1] for r in v]))
            for (name, feats, w), v in res.items()]
    _table(("estimator", "features", "penalty_weight", "accuracy", "worst-group"), rows, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small data and one seed: a smoke test")
    parser.add_argument("--methods", nargs="+", choices=[c.__name__ for c in ALL_METHODS],
                        help="only these methods (and ERM) in the defaults, tuned and environments sections")
    args = parser.parse_args(argv)
    if args.methods:
        METHODS[:] = [c for c in ALL_METHODS if c.__name__ in args.methods]
    import torch

    torch.set_num_threads(1)
    seeds = [0] if args.quick else list(range(args.seeds))
    runners = dict(defaults=defaults, tuned=tuned, environments=environments, shift=shift, scale=scale)
    for section in args.sections:
        start = time.perf_counter()
        runners[section](seeds, args.quick, sys.stdout)
        sys.stdout.flush()
        print(f"{section}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
