"""GradTune and class balancing (MixtureBalancedClassifier) on CelebA attributes.

Each estimator is tuned on validation worst-group accuracy with
:func:`skgroup.model_selection.select_on_validation` (group labels are used
for selection only), then scored on the test split. Fit times are ratios to
``ERMClassifier()`` (default, full-batch L-BFGS) measured in this process
on the same training rows, medians of ``--repeats`` fits.

Rows:

* ERM, class-balanced ERM: references.
* class balancing: ``MixtureBalancedClassifier`` over balancing x mixture
  ratio x ``l2_reg`` (the paper's CelebA ratios 2 and 4), and the best of
  each balancing mode on validation.
* GradTune, paper protocol: a class-balanced ERM head on the training split;
  GradTune (``prefit=True``) fine-tunes it on half of the validation split
  (class-stratified) and is selected on the other half; ``lr_scale`` grid.
  Fit time: (the ERM head's fit + GradTune's) / ERM's.
* GradTune, split protocol: ``GradTuneClassifier().fit(train)`` holds out
  half of the training rows itself; selected on the validation split.

Seeds change the random draws (subsets, minibatches, hold-out splits,
fine-tuning sets); the table gives the mean over seeds and each seed's value.

Usage::

    python benchmarks/celeba_gradtune_mixture.py            # 3 seeds, about 10 minutes
    python benchmarks/celeba_gradtune_mixture.py --seeds 0  # one seed
"""

import argparse
import json
import time
import warnings

import numpy as np
from _timing import median_time, print_method_table  # benchmarks/ is on sys.path when a script runs
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs


def _scores(est, split):
    from skgroup.metrics import worst_group_accuracy

    pred = est.predict(split.X)
    return float(np.mean(pred == split.y)), float(worst_group_accuracy(split.y, pred, group_labels=split.group_labels))


def _half_split(split, seed):
    from sklearn.model_selection import train_test_split
    from sklearn.utils import Bunch

    a, b = train_test_split(np.arange(len(split.y)), test_size=0.5, stratify=split.y, random_state=seed)
    take = lambda idx: Bunch(X=split.X[idx], y=split.y[idx], group_labels=split.group_labels[idx])  # noqa: E731
    return take(np.sort(a)), take(np.sort(b))


MIXTURE_GRID = [
    {"balancing": ["subsetting", "upsampling", "upweighting"], "l2_reg": [1e-5, 1e-4, 1e-3]},
    {"balancing": ["mixture"], "mixture_ratio": [2.0, 4.0], "l2_reg": [1e-5, 1e-4, 1e-3]},
]
GRADTUNE_GRID = {"lr_scale": [0.002, 0.003, 0.005, 0.007, 0.01, 0.015]}


def main(argv=None):
    use_project_data()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="fits per timing (median)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from sklearn.frozen import FrozenEstimator

    from skgroup.datasets import load_celeba_attributes
    from skgroup.estimators._erm import ERMClassifier
    from skgroup.estimators._gradtune import GradTuneClassifier
    from skgroup.estimators._mixture import MixtureBalancedClassifier
    from skgroup.model_selection import select_on_validation

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.perf_counter()
    d = load_celeba_attributes(args.data_home)
    tr, va, te = d.train, d.val, d.test
    print(f"CelebA attributes: train {tr.X.shape}, val {len(va.y)}, test {len(te.y)}")

    erm = ERMClassifier()
    t_erm = median_time(lambda: erm.fit(tr.X, tr.y), args.repeats)
    erm_bal = ERMClassifier(class_weight="balanced")
    t_erm_bal = median_time(lambda: erm_bal.fit(tr.X, tr.y), args.repeats)
    rows = [
        dict(method="ERM", params="default", test=[_scores(erm, te)], ratio=1.0),
        dict(method="ERM, class_weight='balanced'", params="default", test=[_scores(erm_bal, te)], ratio=t_erm_bal / t_erm),
    ]
    results = {"erm_fit_s": t_erm}

    # -- class balancing ---------------------------------------------------
    mix_rows, per_mode, mix_best = [], {}, []
    for seed in args.seeds:
        best, search = select_on_validation(MixtureBalancedClassifier(random_state=seed), MIXTURE_GRID, tr, va)
        mix_best.append((best, search.best_params_, _scores(best, te)))
        res = search.cv_results_
        for mode in ("subsetting", "upsampling", "upweighting", "mixture"):
            idx = [i for i, p in enumerate(res["params"]) if p["balancing"] == mode]
            i = max(idx, key=lambda i: (res["mean_test_score"][i], -i))
            est = MixtureBalancedClassifier(random_state=seed, **res["params"][i]).fit(tr.X, tr.y)
            per_mode.setdefault(mode, []).append((res["params"][i], _scores(est, te)))
        print(f"[{time.perf_counter() - t0:.0f}s] mixture seed {seed}: {search.best_params_} -> test {mix_best[-1][2]}")
    best0, params0, _ = mix_best[0]
    t_mix = median_time(lambda: best0.fit(tr.X, tr.y), args.repeats)
    mix_rows.append(
        dict(
            method="MixtureBalancedClassifier (selected)",
            params="; ".join(f"s{s}: {_fmt(p)}" for s, (_, p, _) in zip(args.seeds, mix_best)),
            test=[s for _, _, s in mix_best],
            ratio=t_mix / t_erm,
        )
    )
    for mode, items in per_mode.items():
        p0 = items[0][0]
        t_mode = median_time(lambda: MixtureBalancedClassifier(random_state=0, **p0).fit(tr.X, tr.y), 1)
        mix_rows.append(
            dict(
                method=f"  best '{mode}'",
                params="; ".join(f"s{s}: {_fmt(p, drop=('balancing',))}" for s, (p, _) in zip(args.seeds, items)),
                test=[s for _, s in items],
                ratio=t_mode / t_erm,
            )
        )
    default_mix = MixtureBalancedClassifier(random_state=0)
    t_default = median_time(lambda: default_mix.fit(tr.X, tr.y), args.repeats)
    mix_rows.append(
        dict(method="MixtureBalancedClassifier (defaults)", params="balancing='mixture', ratio 2",
             test=[_scores(default_mix, te)], ratio=t_default / t_erm)
    )
    rows += mix_rows

    # -- GradTune, paper protocol (fine-tune on half of val, select on the other half)
    erm_head = ERMClassifier(class_weight="balanced").fit(tr.X, tr.y)
    gt_rows = []
    for seed in args.seeds:
        va_a, va_b = _half_split(va, seed)
        est = GradTuneClassifier(estimator=FrozenEstimator(erm_head), prefit=True, random_state=seed)
        best, search = select_on_validation(est, GRADTUNE_GRID, va_a, va_b)
        gt_rows.append((best, search.best_params_, _scores(best, te), va_a))
        print(f"[{time.perf_counter() - t0:.0f}s] gradtune (paper) seed {seed}: {search.best_params_} -> test {gt_rows[-1][2]}")
    best0, _, _, va_a0 = gt_rows[0]
    t_gt = median_time(lambda: best0.fit(va_a0.X, va_a0.y), args.repeats)
    comp = np.bincount(va_a0.group_labels[best0.finetune_indices_], minlength=4)
    rows.append(
        dict(
            method="GradTune, prefit, fine-tuned on val/2 (paper)",
            params="; ".join(f"s{s}: {_fmt(p)}" for s, (_, p, _, _) in zip(args.seeds, gt_rows)),
            test=[s for _, _, s, _ in gt_rows],
            ratio=(t_erm_bal + t_gt) / t_erm,
            note=f"GradTune phases 2-3 alone: {t_gt / t_erm:.2f}x; fine-tuning set by group (s0): {comp.tolist()}",
        )
    )

    # -- GradTune, split protocol (fit(train) holds out half of train) ------
    split_rows = []
    for seed in args.seeds:
        best, search = select_on_validation(GradTuneClassifier(random_state=seed), GRADTUNE_GRID, tr, va)
        split_rows.append((best, search.best_params_, _scores(best, te)))
        print(f"[{time.perf_counter() - t0:.0f}s] gradtune (split) seed {seed}: {search.best_params_} -> test {split_rows[-1][2]}")
    best0 = split_rows[0][0]
    t_split = median_time(lambda: best0.fit(tr.X, tr.y), args.repeats)
    comp = np.bincount(tr.group_labels[best0.finetune_indices_], minlength=4)
    rows.append(
        dict(
            method="GradTune, fit(train), holdout_fraction=0.5",
            params="; ".join(f"s{s}: {_fmt(p)}" for s, (_, p, _) in zip(args.seeds, split_rows)),
            test=[s for _, _, s in split_rows],
            ratio=t_split / t_erm,
            note=f"fine-tuning set by group (s0): {comp.tolist()}",
        )
    )
    default_gt = GradTuneClassifier(random_state=0)
    t_gt_default = median_time(lambda: default_gt.fit(tr.X, tr.y), args.repeats)
    rows.append(dict(method="GradTuneClassifier (defaults), fit(train)", params="lr_scale=0.005",
                     test=[_scores(default_gt, te)], ratio=t_gt_default / t_erm))

    # -- table ---------------------------------------------------------------
    print(f"\nCelebA attributes, seeds {args.seeds}; ERMClassifier fit {t_erm:.2f} s "
          f"(median of {args.repeats}); total {time.perf_counter() - t0:.0f} s\n")
    print_method_table(rows, "selected params")
    for r in rows:
        if r.get("note"):
            print(f"\n{r['method']}: {r['note']}")
    results["rows"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


def _fmt(params, drop=()):
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k not in drop)


if __name__ == "__main__":
    main()
