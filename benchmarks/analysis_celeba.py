"""skgroup.analysis on CelebA attributes (label Blond_Hair, spurious Male).

Prints, and saves as CSV and plots under ``--out``:

1. JTT's error-set analysis (Liu et al. 2021, Sec. 5.3): per group, the
   precision, recall, empirical rate and enrichment of the identification
   model's error set on the training split. The identification model is a
   ``JTTClassifier``'s when that estimator exists, else an ERM head trained
   T = 2 epochs with AdamW at batch 128.
2. The spectral imbalance of the training features (LaBonte et al. 2023,
   Sec. 5): top eigenvalues per (class, group) and rho(y) per class.
3. Last-layer gradient norms per group on the validation split (GradTune).
4. The group composition of CVaR DRO's worst-alpha set after every epoch
   (JTT, Fig. 4), at alpha = 0.05 (CVaRClassifier's default).
5. With ``--ablation``: static JTT against an error set recomputed every K
   epochs (JTT, Table 6), scored on the validation split.
6. Per-group test accuracy bars of the models trained here.

Usage::

    python benchmarks/analysis_celeba.py                     # results/analysis
    python benchmarks/analysis_celeba.py --ablation --out results/analysis
    python benchmarks/analysis_celeba.py --quick             # 20k training rows
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from skgroup import ERMClassifier
from skgroup import analysis as A
from skgroup.datasets import load_celeba_attributes
from skgroup.metrics import worst_group_accuracy
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs


def _frame(table):
    return A.table_columns(table)


def show(title, table, names=None, floats=4):
    cols = _frame(table)
    print(f"\n== {title}")
    keys = list(cols)
    rows = [[("%.*f" % (floats, v)) if isinstance(v, (float, np.floating)) else str(v) for v in r]
            for r in zip(*(cols[k] for k in keys))]
    if names is not None and "group" in cols:
        keys = keys + ["group name"]
        rows = [r + [names[int(g)] if str(g).isdigit() else ""] for r, g in zip(rows, cols["group"])]
    widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))


def save(table, path):
    cols = _frame(table)
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        for r in zip(*cols.values()):
            f.write(",".join(str(v) for v in r) + "\n")


def identification_model(X, y, args):
    """(error-set mask, fitted identification model, description)."""
    try:
        from skgroup.estimators import JTTClassifier
    except ImportError:
        try:
            from skgroup.estimators._jtt import JTTClassifier
        except ImportError:
            JTTClassifier = None
    if args.no_jtt:
        JTTClassifier = None
    if JTTClassifier is not None:
        jtt = JTTClassifier(random_state=args.seed).fit(X, y)
        return jtt.error_set_, jtt.identification_model_, f"JTTClassifier defaults (lambda_up={jtt.lambda_up_})", jtt
    erm = ERMClassifier(solver="adamw", max_iter=args.identification_epochs, batch_size=128,
                        learning_rate=1e-3, random_state=args.seed).fit(X, y)
    return (A.misclassified(erm, X, y), erm,
            f"ERM, AdamW, {args.identification_epochs} epochs, batch 128 (JTTClassifier not available)", None)


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/analysis")
    p.add_argument("--data-home", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identification-epochs", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.05, help="CVaR alpha (training and the analysed set)")
    p.add_argument("--cvar-l2", type=float, default=1e-3)
    p.add_argument("--cvar-epochs", type=int, default=5)
    p.add_argument("--ablation", action="store_true", help="run the dynamic error-set ablation (JTT Table 6)")
    p.add_argument("--ablation-epochs", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="20,000 training rows (smoke run)")
    p.add_argument("--no-jtt", action="store_true",
                   help="use the ERM identification model even when JTTClassifier exists")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for batch-128 loops on a shared machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_celeba_attributes(args.data_home)
    tr, va, te = data.train, data.val, data.test
    if args.quick:
        rows = np.random.default_rng(args.seed).permutation(tr.X.shape[0])[:20000]
        tr = type(tr)(**{k: v[rows] for k, v in tr.items()})
    names = data.group_names
    print(f"CelebA attributes: {tr.X.shape[0]} training rows, groups {np.bincount(tr.group_labels).tolist()}")
    for i, n in enumerate(names):
        print(f"  group {i}: {n}")

    def figure(plot, table, name, **kw):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot(table, ax=ax, **kw)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)

    # 1. JTT error set
    t0 = time.perf_counter()
    E, id_model, how, jtt = identification_model(tr.X, tr.y, args)
    err = A.error_set_analysis(E, tr.group_labels)
    show(f"JTT error set ({how}): |E| = {int(E.sum())} of {E.shape[0]} ({time.perf_counter() - t0:.1f} s)",
         err, names)
    save(err, out / "error_set.csv")
    figure(A.plot_error_set_enrichment, err, "error_set_enrichment.png", group_names=names)

    # 2. spectral imbalance
    t0 = time.perf_counter()
    rho, spectra = A.spectral_imbalance(tr.X, tr.y, group_labels=tr.group_labels, n_components=10,
                                        return_spectra=True)
    show(f"Spectral imbalance, training features ({time.perf_counter() - t0:.1f} s)", rho)
    top = _frame(spectra)
    first = top["rank"] <= 3
    show("Top-3 eigenvalues per (class, group)",
         {k: top[k][first] for k in ("class", "group", "n_samples", "rank", "eigenvalue")}, names)
    save(rho, out / "spectral_rho.csv")
    save(spectra, out / "spectra.csv")
    figure(A.plot_spectra, spectra, "spectra.png", group_names=names)

    # 3. gradient norms on validation
    grads = A.gradient_norms_by_group(id_model, va.X, va.y, group_labels=va.group_labels)
    show("Last-layer gradient norms on validation (identification model)", A.gradient_norm_summary(grads), names)
    figure(A.plot_gradient_norms, grads, "gradient_norms.png", group_names=names, log_scale=True)

    # 4. CVaR worst-alpha set over training
    t0 = time.perf_counter()
    cvar = A.cvar_set_composition(tr.X, tr.y, group_labels=tr.group_labels, alpha=args.alpha,
                                  l2_reg=args.cvar_l2, max_iter=args.cvar_epochs, batch_size=128,
                                  learning_rate=1e-3, random_state=args.seed)
    c = _frame(cvar)
    show(f"CVaR DRO (alpha={args.alpha}, l2_reg={args.cvar_l2}) worst-alpha set by epoch "
         f"({time.perf_counter() - t0:.1f} s)",
         {k: c[k] for k in ("epoch", "group", "n_in_set", "precision", "recall", "enrichment", "cvar_loss")},
         names)
    save(cvar, out / "cvar_set_composition.csv")
    figure(A.plot_cvar_set_composition, cvar, "cvar_set_composition.png", group_names=names)

    # 5. dynamic error-set ablation
    if args.ablation:
        t0 = time.perf_counter()
        abl = A.jtt_error_set_ablation(tr.X, tr.y, eval_set=va, update_every=(None, 1, 2), lambda_up=10,
                                       error_set=E, max_iter=args.ablation_epochs, batch_size=128,
                                       learning_rate=1e-3, random_state=args.seed)
        show(f"JTT static vs dynamic error set, validation ({time.perf_counter() - t0:.1f} s)", abl)
        save(abl, out / "error_set_ablation.csv")
        figure(A.plot_error_set_ablation, abl, "error_set_ablation.png")

    # 6. per-group test accuracy of the models trained here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        erm = ERMClassifier(random_state=args.seed).fit(tr.X, tr.y)
    models = {"ERM (L-BFGS)": erm, "identification model": id_model}
    if jtt is not None:
        models["JTT"] = jtt
    acc = A.group_accuracy_table(models, te.X, te.y, group_labels=te.group_labels)
    show("Test per-group accuracy", acc, names)
    save(acc, out / "test_group_accuracy.csv")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    A.plot_group_accuracies(acc, ax=ax, group_names=names)
    fig.tight_layout()
    fig.savefig(out / "test_group_accuracy.png", dpi=120)
    plt.close(fig)
    print(f"\nERM test worst-group accuracy {worst_group_accuracy(te.y, erm.predict(te.X), group_labels=te.group_labels):.3f}")
    print(f"Tables and plots in {out}/")


if __name__ == "__main__":
    main()
