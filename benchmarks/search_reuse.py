"""Searches do not repeat work: plain GridSearchCV over JTT's lambda_up and GradTune's lr_scale.

JTT's identification model does not depend on ``lambda_up``, and GradTune's
base ERM model does not depend on ``lr_scale``; skgroup fits each once per
distinct (data, settings) and reuses it (``skgroup._cache``). For each grid
this prints the search's time against ``candidates x one fit`` (what a search
that repeats the shared work costs), the same search with the reuse turned
off (every candidate fits its own sub-model: the sum of the candidates'
separate fits), and how many sub-models were fitted. Candidates differ in
cost (JTT's upsampled epochs grow with lambda_up), so the search without
reuse, not candidates x one default fit, is the baseline of the ratio. One process, so only the ratios
mean something on a busy machine::

    python benchmarks/search_reuse.py --data celeba
    python benchmarks/search_reuse.py --data synthetic
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.model_selection import GridSearchCV

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs
from skgroup import GradTuneClassifier, JTTClassifier
from skgroup._cache import SHARED_FITS
from skgroup.metrics import worst_class_scorer
from skgroup.model_selection import ValidationSplit

GRIDS = {
    "JTTClassifier (lambda_up)": (JTTClassifier(random_state=0), {"lambda_up": [5, 10, 20, 50]}),
    "GradTuneClassifier (lr_scale)": (GradTuneClassifier(random_state=0), {"lr_scale": [0.003, 0.005, 0.01, 0.02]}),
}


def _load(name):
    from skgroup.datasets import load_celeba_attributes, make_spurious_benchmark

    data = load_celeba_attributes() if name == "celeba" else make_spurious_benchmark(20000, 5000, 10, random_state=0)
    X = np.concatenate([data.train.X, data.val.X])
    y = np.concatenate([data.train.y, data.val.y])
    return X, y, ValidationSplit(len(data.train.y), len(data.val.y))


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="celeba", choices=["celeba", "synthetic"])
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    X, y, cv = _load(args.data)
    train = next(cv.split(X))[0]
    JTTClassifier(max_iter=1, id_epochs=1).fit(X[:500], y[:500])  # torch's first-call cost outside the timings
    print(f"\n## Shared work in plain GridSearchCV ({args.data}, {len(train)} training rows, validation split)\n")
    print("| grid | candidates | one fit (defaults) s | candidates x one fit s | search without reuse s | search s "
          "| search / without reuse | shared sub-models fitted (with / without reuse) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (est, grid) in GRIDS.items():
        n = len(next(iter(grid.values())))
        with SHARED_FITS.disabled():
            one = _time(lambda: est.fit(X[train], y[train]))
        SHARED_FITS.clear()
        search = GridSearchCV(est, grid, scoring=worst_class_scorer, cv=cv, refit=False)
        t_search = _time(lambda: search.fit(X, y))
        with_reuse = sum(SHARED_FITS.fits.values())
        SHARED_FITS.clear()
        with SHARED_FITS.disabled():
            t_plain = _time(lambda: GridSearchCV(est, grid, scoring=worst_class_scorer, cv=cv, refit=False).fit(X, y))
        print(f"| {label} | {n} | {one:.2f} | {n * one:.2f} | {t_plain:.2f} | {t_search:.2f} "
              f"| {t_search / t_plain:.2f} | {with_reuse} / {n} |")


if __name__ == "__main__":
    main()
