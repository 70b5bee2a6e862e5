"""How well a label-free rule ranks the candidates: every candidate's validation score next to its test WGA.

``RobustSearchCV('auto')`` keeps only its pick. This script records, for every candidate configuration of
one search on a suite dataset (``benchmarks/suite_datasets.py``), the rule's validation score and
bootstrap verdict (``results_``) together with the candidate's test accuracy and worst-group accuracy,
then reports the pick, the best candidate in hindsight (the oracle), the test WGA range of the candidates
the bootstrap cannot tell from the pick, and the Spearman correlation of validation score and test WGA.
Cross-fitted candidates (GradTune, DFR, DPE) are scored by the mean over their two half-validation fits.

Usage::

    python benchmarks/rule_ranking.py --dataset mnli-minilm --seed 1 --selection worst_class
    python benchmarks/rule_ranking.py --dataset celeba --seed 0 --selection inferred_worst_group

Writes ``results/rule_ranking/<dataset>_<seed>_<selection>.csv``.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite_datasets  # noqa: E402


def rank_candidates(data, seed, selection):
    """The search's ``results_`` as a DataFrame with ``test_acc`` and ``test_wga`` columns added."""
    import pandas as pd
    from scipy.stats import spearmanr

    import skgroup.model_selection._search as search_module
    from skgroup.metrics import worst_group_accuracy
    from skgroup.model_selection import RobustSearchCV

    te = data.test
    fitted = []
    fit_candidate = search_module._fit_candidate

    def recording(estimator, *args, **kwargs):
        # the search runs its candidates through this function (in process with n_jobs=None)
        out = fit_candidate(estimator, *args, **kwargs)
        if out["estimator"] is not None:
            pred = out["estimator"].predict(te.X)
            fitted.append((type(estimator).__name__, estimator.get_params(deep=True),
                           worst_group_accuracy(te.y, pred, group_labels=te.group_labels), float(np.mean(pred == te.y))))
        return out

    search_module._fit_candidate = recording
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search = RobustSearchCV("auto", selection, random_state=seed).fit(
                data.train.X, data.train.y, X_val=data.val.X, y_val=data.val.y)
    finally:
        search_module._fit_candidate = fit_candidate
    df = pd.DataFrame({k: list(v) for k, v in dict(search.results_).items()})
    test_wga, test_acc = [], []
    def same(value, wanted):
        # an estimator in the grid (InferredGroups' estimator) is matched by its class: the fit set its
        # nested parameters (estimator__eta, ...), which are matched on their own
        if hasattr(wanted, "get_params"):
            return type(value) is type(wanted)
        return str(value) == str(wanted)

    for name, params in zip(df["estimator"], df["params"]):
        match = [(w, a) for n, p, w, a in fitted
                 if n == name and all(same(p.get(k), v) for k, v in params.items())]
        test_wga.append(np.mean([w for w, _ in match]) if match else np.nan)
        test_acc.append(np.mean([a for _, a in match]) if match else np.nan)
    df["test_wga"], df["test_acc"] = test_wga, test_acc
    ok = df["score"].notna() & df["test_wga"].notna()
    summary = {
        "pick": f"{search.best_estimator_name_} {search.best_params_}",
        "pick_test_wga": float(df["test_wga"][search.best_index_]),
        "oracle_test_wga": float(df["test_wga"].max()),
        "indistinguishable": int(search.n_indistinguishable_),
        "indistinguishable_test_wga": (float(df["test_wga"][~df["distinguishable"].astype(bool)].min()),
                                       float(df["test_wga"][~df["distinguishable"].astype(bool)].max())),
        "spearman": float(spearmanr(df["score"][ok], df["test_wga"][ok]).statistic),
        "n_candidates": int(len(df)),
    }
    return df, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic", choices=list(suite_datasets.DATASETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--selection", default="inferred_worst_group")
    p.add_argument("--cache-root", default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "rule_ranking"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    data = suite_datasets.load(args.dataset, cache_root=args.cache_root)
    df, summary = rank_candidates(data, args.seed, args.selection)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.dataset}_{args.seed}_{args.selection}.csv"
    df.drop(columns=[c for c in ("params",) if c in df]).assign(params=df["params"].astype(str)).to_csv(path)
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
