"""The fine-tuning path: the same plans and loop as the heads, on whole (tiny) backbones."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from feature_extraction import Backbone, load_backbone  # noqa: E402
from feature_extraction._testing import make_tiny_bert, random_sentences  # noqa: E402
from skgroup import (  # noqa: E402
    CVaRClassifier,
    ERMClassifier,
    GroupBalancedClassifier,
    GroupDROClassifier,
    JTTClassifier,
    MixtureBalancedClassifier,
)
from skgroup.datasets import make_spurious_features  # noqa: E402
from skgroup.finetune import FineTuneClassifier, load_finetuned  # noqa: E402
from skgroup.finetune._cli import ConfigError, load_config  # noqa: E402
from skgroup.finetune._cli import main as cli_main  # noqa: E402
from skgroup.finetune._inputs import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Vectors(Backbone):
    """A parameter-free 'backbone' whose features are its inputs: fine-tuning it trains a head."""

    modality = "vector"

    def __init__(self):
        super().__init__(torch.nn.Identity(), name="vectors", identity={"family": "test"})

    def prepare(self, item):
        return item

    def collate(self, items):
        return torch.stack(items)

    def batch_to(self, batch, device, *, non_blocking=False, channels_last=False):
        return batch.to(device)

    def forward(self, x):
        return x


class Rows:
    modality = "vector"

    def __init__(self, X):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def __len__(self):
        return len(self.X)

    def get(self, i):
        return self.X[i]


COMMON = dict(solver="adamw", max_iter=3, batch_size=64, learning_rate=1e-2, random_state=4)


@pytest.mark.parametrize("method, uses_groups", [
    (ERMClassifier(**COMMON), False),
    (GroupDROClassifier(**COMMON, l2_reg=0.0), True),
    (JTTClassifier(**COMMON, lambda_up=3), False),
    (CVaRClassifier(**COMMON, alpha=0.3, l2_reg=0.0), False),
    (MixtureBalancedClassifier(**COMMON, balancing="upsampling", lr_schedule="constant"), False),
    (GroupBalancedClassifier(**{**COMMON, "lr_schedule": "constant"}), True),
    (GroupBalancedClassifier(**{**COMMON, "lr_schedule": "constant"}, balancing="resample"), True),
])
def test_plans_train_exactly_what_the_head_estimators_train(method, uses_groups):
    # on a frozen (here: parameter-free) backbone the fine-tuning path must reproduce the head
    # estimator bit for bit: same objective, sampler, stages and loop
    X, y, g = make_spurious_features(600, random_state=0)
    kwargs = {"group_labels": g} if uses_groups else {}
    head = method.fit(X.astype(np.float32), y, **kwargs)
    ft = FineTuneClassifier(Vectors(), method=method, max_iter=3, batch_size=64, learning_rate=1e-2,
                            weight_decay=0.0, l2_reg=method.l2_reg, lr_schedule="constant", warmup=0,
                            grad_clip=None, random_state=4).fit(Rows(X), y, **kwargs)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.loss_curve_ == head.loss_curve_


def test_group_labels_reach_fit_by_routing_only_for_methods_that_train_on_them():
    assert FineTuneClassifier("m", method=GroupDROClassifier()).get_metadata_routing().fit.requests["group_labels"]
    assert FineTuneClassifier("m").get_metadata_routing().fit.requests["group_labels"] is False


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def _pairs(n, seed=0):
    a, b = random_sentences(n, seed=seed), random_sentences(n, seed=seed + 1)
    y = np.array([int(any(w in t.split() for w in ("no", "not", "never"))) for t in b])
    return list(zip(a, b)), y


def test_text_pairs_jtt_end_to_end_save_and_extract(bert, tmp_path):
    X, y = _pairs(120)
    ft = FineTuneClassifier(str(bert), backbone_options={"pair_mode": "template"},
                            method=JTTClassifier(id_epochs=1, lambda_up=3), max_iter=2, batch_size=16,
                            learning_rate=1e-3, random_state=0)
    ft.fit(X[:90], y[:90], X_val=X[90:], y_val=y[90:])
    assert ft.method_.error_set_.shape == (90,)
    assert ft.validation_scores_["accuracy"].shape == (ft.n_iter_,) and 1 <= ft.best_iteration_ <= 2
    feats = ft.transform(X[:5])
    proba = ft.predict_proba(X[:5])
    assert feats.shape == (5, 32) and np.allclose(proba.sum(1), 1)
    folder = ft.save(tmp_path / "saved")
    # the saved folder is a backbone feature_extraction extracts from, and the head is beside it
    backbone, W, b, classes = load_finetuned(folder, pair_mode="template")
    with torch.no_grad():
        batch = backbone.collate([backbone.prepare(x) for x in X[:5]])
        again = backbone(backbone.batch_to(batch, "cpu")).numpy()
    np.testing.assert_allclose(again, feats, atol=1e-5)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(again) @ W.T + b, 1).numpy(), proba, atol=1e-5)
    assert classes == [0, 1]


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, x):
        return self.drop(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _images(n, seed=0, spurious=0.9):
    """Bright left half (class 1) or right half (class 0), with a border colour matching the class for
    ``spurious`` of the rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    imgs = rng.integers(0, 60, size=(n, 24, 24, 3))
    imgs[:, :, :12] += 120 * y[:, None, None, None]
    imgs[:, :, 12:] += 120 * (1 - y)[:, None, None, None]
    a = np.where(rng.random(n) < spurious, y, 1 - y)
    imgs[:, :2, :, 0] = 250 * a[:, None, None]
    return imgs.astype(np.uint8), y, y * 2 + a


def _cnn_backbone():
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same initial weights in every process
        return load_backbone(TinyCNN(), image_size=24, resize=24)


def test_jtt_end_to_end_on_generated_images():
    X, y, g = _images(160)
    Xv, yv, gv = _images(80, seed=1, spurious=0.5)
    # (no augmentation: a horizontal flip would swap the halves that carry the label)
    ft = FineTuneClassifier(_cnn_backbone(), method=JTTClassifier(id_epochs=1, lambda_up=4), max_iter=3,
                            batch_size=16, learning_rate=3e-2, head_learning_rate=0.1, augment=False,
                            random_state=0)
    ft.fit(X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    assert ft.method_.error_set_.any()
    assert ft.score(Xv, yv) > 0.6  # learns the halves (chance is 0.5)
    assert "worst_group_accuracy" in ft.validation_scores_


def test_augmentation_is_seeded_per_row_and_epoch():
    from skgroup.finetune import BackboneDataset, RandomResizedCropFlip, as_inputs

    X, _, _ = _images(4)
    inputs = as_inputs(X, "image")
    ds = BackboneDataset(inputs, _cnn_backbone(), augment=RandomResizedCropFlip(24), seed=3)
    a, b = ds[1], ds[1]
    np.testing.assert_array_equal(a, b)
    ds.set_epoch(1)
    assert not np.array_equal(ds[1], a) and ds[1].shape == (24, 24, 3)


_KILL = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[4])
    from test_finetune import _cnn_backbone, _images
    from skgroup import GroupDROClassifier
    from skgroup.engine import Callback, Checkpoint
    from skgroup.finetune import FineTuneClassifier

    class KillAt(Callback):
        def on_epoch_end(self, trainer):
            if trainer.epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return False

    ckdir, out, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
    X, y, g = _images(96)
    callbacks = ([Checkpoint(ckdir)] if ckdir != "-" else []) + ([KillAt()] if kill else [])
    ft = FineTuneClassifier(_cnn_backbone(), method=GroupDROClassifier(), max_iter=4, batch_size=16,
                            learning_rate=1e-2, callbacks=callbacks, random_state=0).fit(X, y, group_labels=g)
    np.save(out, torch.cat([p.detach().reshape(-1) for p in ft.model_.parameters()]).numpy())
""")


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    # dropout, augmentation and Group DRO's q all resume from the checkpoint
    script = tmp_path / "run.py"
    script.write_text(_KILL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def run(ck, out, kill):
        return subprocess.run([sys.executable, str(script), ck, str(out), kill, str(REPO / "tests")], env=env,
                              capture_output=True, text=True, timeout=300)

    assert run("-", tmp_path / "ref.npy", "no").returncode == 0
    killed = run(str(tmp_path / "ck"), tmp_path / "k.npy", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run(str(tmp_path / "ck"), tmp_path / "r.npy", "no")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "ref.npy"), np.load(tmp_path / "r.npy"))


_DDP = textwrap.dedent("""
    import sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_finetune import _cnn_backbone, _images
    from skgroup import GroupDROClassifier
    from skgroup.finetune import FineTuneClassifier

    X, y, g = _images(64)
    backbone = _cnn_backbone()
    backbone.module.drop.p = 0.0  # dropout masks differ per rank by design; the rest must not
    # SGD: Adam's normalisation would magnify the float rounding of a sum taken in another order
    ft = FineTuneClassifier(backbone, method=GroupDROClassifier(), max_iter=2, batch_size=16, augment=False,
                            solver="sgd", learning_rate=0.05, random_state=0).fit(X, y, group_labels=g)
    import os
    if int(os.environ.get("RANK", 0)) == 0:
        np.save(sys.argv[1], torch.cat([p.detach().reshape(-1) for p in ft.model_.parameters()]).numpy())
""")


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="no gloo backend")
def test_two_processes_equal_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.npy"), str(REPO / "tests")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "two.npy"), str(REPO / "tests")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"), rtol=1e-5, atol=1e-6)


# -- errors -----------------------------------------------------------------------
def test_undecodable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    X, y, _ = _images(8)
    from PIL import Image

    good = []
    for i in range(8):
        Image.fromarray(X[i]).save(tmp_path / f"{i}.png")
        good.append(str(tmp_path / f"{i}.png"))
    ft = FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=4, random_state=0)
    with pytest.raises(InputError, match="bad.png"):
        ft.fit(good[:7] + [str(bad)], y)
    with pytest.raises(InputError, match="not found"):
        ft.fit(good[:7] + [str(tmp_path / "gone.png")], y)


def test_unseen_validation_labels_and_wrong_inputs_are_errors():
    X, y, _ = _images(16)
    ft = FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=4, random_state=0)
    with pytest.raises(ValueError, match="not fitted on"):
        ft.fit(X, y, X_val=X[:4], y_val=np.array([0, 1, 2, 1]))
    with pytest.raises(TypeError, match="head estimators"):
        ft.fit(X.astype(np.float32).reshape(16, -1), y)
    with pytest.raises(ValueError, match="samples but y has"):
        ft.fit(X, y[:5])


def test_cli_config_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model\nbackbone=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(cfg)
    cfg.write_text('[model]\nbackbone = "x"\n[data]\nformat = "dataset"\n[extra]\n')
    with pytest.raises(ConfigError, match="unknown table"):
        load_config(cfg)
    cfg.write_text('[model]\nbackbone = "x"\n')
    with pytest.raises(ConfigError, match=r"\[data\] table is missing"):
        load_config(cfg)
    assert cli_main([str(tmp_path / "nope.toml")]) == 2


def _cli_config(bert, tmp_path, extra=""):
    X, y = _pairs(90, seed=5)
    split = np.array(["train"] * 50 + ["val"] * 20 + ["test"] * 20)
    neg = np.array([int("no" in b.split()) for _, b in X])
    rows = "".join(f"{a}\t{b}\t{lab}\t{n}\t{s}\n" for (a, b), lab, n, s in zip(X, y, neg, split))
    (tmp_path / "data.tsv").write_text("s1\ts2\tlabel\tneg\tsplit\n" + rows)
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f"""
        [model]
        backbone = "{bert}"
        options = {{ pair_mode = "template" }}
        [data]
        path = "{tmp_path / 'data.tsv'}"
        [data.options]
        text_columns = ["s1", "s2"]
        attribute_columns = ["neg"]
        split_column = "split"
        spurious_attribute = "neg"
        [method]
        name = "GroupDROClassifier"
        [training]
        max_iter = 1
        batch_size = 10
        learning_rate = 1e-3
    """) + extra)
    return cfg


def test_cli_runs_a_text_table_and_writes_its_outputs(bert, tmp_path, capsys):
    cfg = _cli_config(bert, tmp_path)
    assert cli_main([str(cfg), "--output", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_accuracy", "test_worst_group_accuracy", "test_worst_group_ci"} <= set(metrics)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and log[0]["stage"] == "group_dro" and "val_worst_group_accuracy" in log[0]
    assert (out / "model" / "head.safetensors").is_file()
    saved = np.load(out / "test_predictions.npz")  # what a paired comparison of two runs reads
    assert saved["rows"].shape == saved["pred"].shape == saved["y"].shape == saved["group_labels"].shape
    assert np.mean(saved["pred"] == saved["y"]) == pytest.approx(metrics["test_accuracy"])
    printed = capsys.readouterr()
    line = next(t for t in printed.out.splitlines() if "epoch   1" in t)
    assert "train_loss " in line and "val_loss " in line and " loss " not in line  # two losses, two names
    assert "5/5" in printed.err  # the bar: 50 training rows in batches of 10
    assert "checkpoints" in printed.out and "keep_checkpoints = false" in printed.out
    # a finished run's results are not replaced without --overwrite
    assert cli_main([str(cfg), "--output", str(out), "--set", "training.max_iter=2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # a run stopped before writing its results (here: results removed) reuses its finished stage's checkpoint
    # and says so; keep_checkpoints=false deletes the checkpoints once the model is saved
    shutil.rmtree(out / "model")
    (out / "metrics.json").unlink()
    (out / "test_predictions.npz").unlink()
    assert cli_main([str(cfg), "--output", str(out), "--no-progress", "--set", "output.keep_checkpoints=false"]) == 0
    printed = capsys.readouterr()
    assert "finished before" in printed.out and "deleted" in printed.out and "5/5" not in printed.err
    assert not (out / "checkpoints").exists() and (out / "model" / "head.safetensors").is_file()


def test_progress_says_where_a_stage_resumes():
    import io
    from types import SimpleNamespace

    from skgroup.finetune._progress import RunProgress

    out = io.StringIO()
    trainer = SimpleNamespace(rank=0, options=SimpleNamespace(solver="lbfgs"), epoch=1, max_epochs=3,
                              stopped_early=False, step=7, name="erm")
    RunProgress(checkpoints="runs/x/checkpoints", bar=False, out=out).on_train_begin(trainer)
    assert out.getvalue().strip() == "erm: resuming from runs/x/checkpoints after epoch 1 of 3 (optimizer step 7)"
    trainer.epoch = 3
    RunProgress(bar=False, out=out).on_train_begin(trainer)
    assert out.getvalue().splitlines()[-1] == "erm: finished before (3 epochs); not trained again"


@pytest.mark.parametrize("recipe", sorted((REPO / "benchmarks" / "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_recipes_are_valid_configs(recipe):
    from skgroup.finetune._cli import _estimator_class, apply_override

    config = load_config(recipe)
    method = dict(config["method"])
    _estimator_class(method.pop("name"))(**method)._validate_params()
    FineTuneClassifier("model", **config["training"])._validate_params()
    apply_override(config, "data.path=/tmp/elsewhere")
    apply_override(config, "training.max_iter=2")
    assert config["data"]["path"] == "/tmp/elsewhere" and config["training"]["max_iter"] == 2
    with pytest.raises(ConfigError, match="TABLE.KEY=VALUE"):
        apply_override(config, "nodots=1")


def test_a_whole_model_proximal_penalty_reaches_the_head_trained_alone():
    """AFR anchors its second stage to the first stage's whole model; the fine-tuning
    path trains that stage as ``Sequential(head)``, so the anchor is renamed, not dropped."""
    from skgroup.engine import ProximalPenalty
    from skgroup.finetune._executor import _head_penalty

    anchor = {"body.w": torch.ones(3), "head.weight": torch.zeros(2, 3), "head.bias": torch.zeros(2)}
    head = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        head[0].weight.fill_(1.0)
        head[0].bias.fill_(2.0)
    whole = ProximalPenalty(anchor, 0.5)
    assert float(whole(head).detach()) == 0.0  # the names do not match: this is what would be lost
    assert float(_head_penalty(whole)(head).detach()) == pytest.approx(0.5 * (6 * 1.0 + 2 * 4.0))
    assert _head_penalty(None) is None


# -- checkpoints of another run ---------------------------------------------------------
def test_a_finetuning_checkpoint_resumes_only_its_own_run(tmp_path):
    from skgroup.engine import Checkpoint

    X, y, _ = make_spurious_features(200, random_state=0)
    ck = tmp_path / "ck"

    def fit(X=X, y=y, backbone=None, **params):
        kw = dict(max_iter=2, batch_size=32, learning_rate=1e-2, random_state=0, callbacks=[Checkpoint(ck)])
        return FineTuneClassifier(backbone or Vectors(), **{**kw, **params}).fit(Rows(X), y)

    first = fit()
    np.testing.assert_array_equal(fit().model_.head.weight.detach().numpy(),
                                  first.model_.head.weight.detach().numpy())
    with pytest.raises(ValueError, match="learning_rate"):
        fit(learning_rate=0.1)
    with pytest.raises(ValueError, match="head_learning_rate|param_groups"):
        fit(head_learning_rate=0.5)
    order = np.random.default_rng(0).permutation(200)
    with pytest.raises(ValueError, match="data"):
        fit(X=X[order], y=y[order])
    X2, y2, _ = _images(32)
    ck = tmp_path / "cnn"
    FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=16, augment=False, random_state=0,
                       callbacks=[Checkpoint(ck)]).fit(X2, y2)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        other = load_backbone(TinyCNN(), image_size=24, resize=24)
    with pytest.raises(ValueError, match="module.weights"):
        FineTuneClassifier(other, max_iter=1, batch_size=16, augment=False, random_state=0,
                           callbacks=[Checkpoint(ck)]).fit(X2, y2)


# -- inputs: every row is checked, the first bad one named ---------------------------------
@pytest.mark.parametrize("X, match", [
    ([1, 2, 3], r"X\[0\].*int"),
    ([0.5, "a"], r"X\[0\].*float"),
    ([(None, "x"), ("a", "b")], r"X\[0\].*None"),
    ([("a", "b", "c"), ("a", "b")], r"X\[0\].*3"),
    (["hi", ("a", "b")], r"X\[1\].*tuple"),
    ([("a", "b"), "hi"], r"X\[1\].*str"),
    ([("a", "b"), ("c",)], r"X\[1\].*1"),            # ragged pairs (item 12)
    ([("a", "b"), ("c", "d", "e")], r"X\[1\].*3"),
])
def test_text_inputs_of_another_kind_name_the_first_bad_row(X, match):
    from skgroup.finetune import as_inputs

    with pytest.raises(TypeError, match=match):
        as_inputs(X, "text")


def test_text_inputs_that_are_right_are_read_as_they_are():
    from skgroup.finetune import as_inputs

    pairs = as_inputs([("a", "b"), ["c", "d"], np.array(["e", "f"])], "text")
    assert pairs.kind == "pairs" and [pairs.get(i) for i in range(3)] == [("a", "b"), ("c", "d"), ("e", "f")]
    texts = as_inputs(np.array(["x", "y"]), "text")
    assert texts.kind == "texts" and texts.get(1) == "y"


def test_image_inputs_of_mixed_kinds_name_the_first_bad_row(tmp_path):
    from PIL import Image

    from skgroup.finetune import as_inputs

    img = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match=r"X\[1\].*str"):  # item 12: a path among PIL images
        as_inputs([img, "a.png"], "image")
    with pytest.raises(TypeError, match=r"X\[2\].*Image"):
        as_inputs(["a.png", tmp_path / "b.png", img], "image")
    with pytest.raises(TypeError, match=r"X\[0\].*int"):
        as_inputs([3, 4], "image")
    X, y, _ = _images(8)
    ft = FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=4, random_state=0)
    with pytest.raises(TypeError, match=r"X\[3\]"):
        ft.fit([Image.fromarray(x) for x in X[:3]] + ["x.png"] + [Image.fromarray(x) for x in X[4:]], y)


# -- saving never replaces what a folder holds unasked ---------------------------------------
def test_save_refuses_a_non_empty_folder_and_with_overwrite_replaces_only_its_own_files(tmp_path):
    X, y, _ = _images(32)
    ft = FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=16, augment=False, random_state=0).fit(X, y)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("my notes")
    (folder / "head.safetensors").write_bytes(b"another model's head")
    with pytest.raises(FileExistsError, match=r"README.md.*overwrite=True"):
        ft.save(folder)
    assert (folder / "head.safetensors").read_bytes() == b"another model's head"
    ft.save(folder, overwrite=True)
    assert (folder / "README.md").read_text() == "my notes"  # not one of the files save writes
    _, W, _, classes = load_finetuned(folder, model=TinyCNN())
    np.testing.assert_array_equal(W.numpy(), ft.model_.head.weight.detach().numpy())
    ft.save(tmp_path / "new")  # absent or empty: fine
    (tmp_path / "empty").mkdir()
    ft.save(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        ft.save(tmp_path / "file", overwrite=True)


def test_cli_never_replaces_an_earlier_runs_results_nor_resumes_another_run(bert, tmp_path, capsys):
    cfg = _cli_config(bert, tmp_path)
    out = tmp_path / "out"
    assert cli_main([str(cfg), "--output", str(out), "--quiet"]) == 0
    metrics = (out / "metrics.json").read_text()
    capsys.readouterr()
    # the same folder again: its metrics.json and model/ are an earlier run's, refused before any training
    assert cli_main([str(cfg), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "--overwrite" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert (out / "metrics.json").read_text() == metrics
    # without the results, another learning rate finds the earlier run's checkpoints: refused, saying why
    (out / "metrics.json").unlink()
    (out / "test_predictions.npz").unlink()
    import shutil

    shutil.rmtree(out / "model")
    assert cli_main([str(cfg), "--output", str(out), "--quiet", "--set", "training.learning_rate=0.01"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "checkpoints" in err and "--overwrite" in err and len(err.splitlines()) == 1
    # --overwrite trains afresh and replaces what the earlier run wrote
    assert cli_main([str(cfg), "--output", str(out), "--quiet", "--overwrite",
                     "--set", "training.learning_rate=0.01"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and (out / "metrics.json").is_file()


@pytest.mark.parametrize("sets, expected", [
    # unknown keys: refused with the nearest valid one (item 9)
    (["model.option=1"], ["[model]", "option", "options"]),
    (["data.max_trian=10"], ["[data]", "max_trian", "max_train"]),
    (["output.dirr='x'"], ["[output]", "dirr", "'dir'"]),
    (["training.learnin_rate=0.1"], ["[training]", "learning_rate"]),
    (["method.name='JTTClassifier'", "method.lambda_upp=3"], ["[method]", "lambda_upp", "lambda_up"]),
    (["data.options.text_column='s1'"], ["[data.options]", "text_columns"]),
    (["model.options.max_lenght=64"], ["[model.options]", "max_length"]),
    (["auxiliary.task='mlm'", "auxiliary.mask_prb=0.2"], ["[auxiliary]", "mask_prob"]),
    # config errors: one line, exit code 2 (item 10)
    (["method.eta=-1"], ["[method]", "eta"]),
    (["model.backbone='/no/such/model'"], ["[model]", "/no/such/model"]),
    (["data.options.text_columns=['s9']"], ["[data]", "s9"]),
    (["auxiliary.task='mim'"], ["[auxiliary]", "text"]),
    (["training.device='cuda'"] if not torch.cuda.is_available() else ["training.device='cuda:99'"],
     ["[training]", "device"]),
    (["training.batch_size=0"], ["[training]", "batch_size"]),
])
def test_cli_config_mistakes_are_one_line_with_the_fix(bert, tmp_path, capsys, sets, expected):
    cfg = _cli_config(bert, tmp_path)
    argv = [str(cfg), "--output", str(tmp_path / "out"), "--quiet"]
    for item in sets:
        argv += ["--set", item]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "out" / "log.jsonl").exists()  # refused before any training


def test_cli_output_that_is_a_file_is_one_line(bert, tmp_path, capsys):
    cfg = _cli_config(bert, tmp_path)
    (tmp_path / "afile").write_text("mine")
    assert cli_main([str(cfg), "--output", str(tmp_path / "afile"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "mine"


# -- every method of the registry fine-tunes, or is refused by name ----------------------------
#: estimators with no plan a backbone can be trained with
NOT_FINETUNABLE = {s.name for s in __import__("skgroup.estimators", fromlist=["x"]).method_specs() if not s.finetune}


@pytest.mark.parametrize("name", [name for name, _ in __import__("skgroup.estimators", fromlist=["x"]).all_estimators()])
def test_every_registered_method_fine_tunes_or_is_refused_by_name(name):
    import warnings

    from skgroup.estimators import all_estimators

    method = dict(all_estimators())[name]()
    X, y, g = make_spurious_features(240, random_state=0)
    ft = FineTuneClassifier(Vectors(), method=method, max_iter=2, batch_size=32, learning_rate=1e-2, random_state=0)
    if name in NOT_FINETUNABLE:
        with pytest.raises(ValueError, match=rf"{name}.*cannot fine-tune"):
            ft.fit(Rows(X), y, group_labels=g)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ft.fit(Rows(X), y, group_labels=g)
    assert isinstance(ft.method_, type(method)) and ft.n_iter_ >= 1
    assert ft.score(Rows(X), y) > 0.7  # the features separate the classes (chance: about 0.5)


def test_load_finetuned_names_the_damaged_file(tmp_path):
    X, y, _ = _images(32)
    ft = FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=16, augment=False, random_state=0).fit(X, y)
    folder = ft.save(tmp_path / "m")
    meta = folder / "skgroup_finetuned.json"
    good = meta.read_text()
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"skgroup_finetuned.json.*not valid JSON"):
        load_finetuned(folder, model=TinyCNN())
    meta.write_text(good.replace('"state_dict"', '"bogus"'))
    with pytest.raises(ValueError, match=r"skgroup_finetuned.json.*format 'bogus'.*transformers.*state_dict"):
        load_finetuned(folder, model=TinyCNN())
    meta.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "classes"}))
    with pytest.raises(ValueError, match=r"skgroup_finetuned.json.*classes"):
        load_finetuned(folder, model=TinyCNN())
    meta.write_text(good)
    head = folder / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-9])
    with pytest.raises(ValueError, match=r"head.safetensors.*cannot be read"):
        load_finetuned(folder, model=TinyCNN())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build or machine without CUDA")
def test_a_cuda_device_without_cuda_is_a_clear_error():
    X, y, _ = _images(8)
    with pytest.raises(ValueError, match=r"device='cuda'.*no CUDA device.*device='cpu'"):
        FineTuneClassifier(_cnn_backbone(), max_iter=1, batch_size=4, device="cuda").fit(X, y)


# -- the head: what a fine-tuned backbone learns through ------------------------------
@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    from feature_extraction._testing import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("st") / "st")


def _executor(folder, X, y, **options):
    from skgroup.finetune._executor import FineTuneExecutor
    from skgroup.finetune._inputs import as_inputs

    head = {k: options.pop(k) for k in ("head_init", "head_dropout") if k in options}
    clf = FineTuneClassifier(str(folder), backbone_options={"pair_mode": "template"}, **options)
    return FineTuneExecutor(clf._load_backbone(), as_inputs(X, "text"), y, 2, **head)


def test_default_head_is_the_models_own_and_its_logits_are_not_shrunk(st_folder):
    # all-MiniLM-L6-v2 ships mean pooling + L2 normalisation; a zero head on unit vectors passed no
    # gradient to the backbone at the first step and kept the logits tiny afterwards (issue 23)
    X, y = _pairs(8)
    default = _executor(st_folder, X, y)
    assert default.backbone.normalize is False and load_backbone(str(st_folder)).normalize is True
    module = default.new_module(0)
    w = module.head.weight.detach()
    assert 0.015 < float(w.std()) < 0.025 and not module.head.bias.detach().any()  # normal(0, 0.02), as BERT's
    assert module.dropout.p == pytest.approx(0.1)  # BertForSequenceClassification's classifier dropout
    normalized = _executor(st_folder, X, y, normalize=True).new_module(0)
    torch.testing.assert_close(normalized.head.weight, module.head.weight)  # the same draw: only the features differ
    batch = default.backbone.collate(X)
    module.eval()
    normalized.eval()
    with torch.no_grad():
        z = module.features(batch)
        logits, shrunk = module(batch), normalized(batch)
    norms = z.norm(dim=1, keepdim=True)
    assert float(norms.min()) > 1.5  # unnormalised mean pooling of LayerNorm-ed states (all-MiniLM-L6-v2: ~6)
    torch.testing.assert_close(shrunk - module.head.bias, (logits - module.head.bias) / norms)
    assert float(logits.abs().mean()) > 1.5 * float(shrunk.abs().mean())

    def first_step_body_grad(executor):
        m = executor.new_module(0).train()
        torch.nn.functional.cross_entropy(m(batch), torch.as_tensor(y)).backward()
        return sum(float(p.grad.norm()) for p in m.body.parameters() if p.grad is not None)

    assert first_step_body_grad(default) > 1e-3
    assert first_step_body_grad(_executor(st_folder, X, y, head_init="zeros")) == 0.0  # the old default


def test_head_options_are_validated_and_the_frozen_case_keeps_a_zero_head():
    from skgroup.finetune._model import resolve_head

    assert resolve_head(Vectors()) == ("zeros", 0.02, 0.0)  # nothing to fine-tune: exactly the head estimators
    with pytest.raises(ValueError, match="head_init"):
        FineTuneClassifier("m", head_init="xavier").fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="normalize"):
        FineTuneClassifier(Vectors(), normalize=True).fit(Rows(np.zeros((4, 2))), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"FineTuneClassifier\(normalize"):
        FineTuneClassifier("m", backbone_options={"normalize": False}).fit(Rows(np.zeros((4, 2))), [0, 1, 0, 1])


def _separable(n, seed=0):
    """Pairs whose hypothesis ends 'is sad' (1) or 'is happy' (0); the premise is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    b = [" ".join(rng.choice(["the", "a", "cat", "dog", "man"], 2)) + (" is sad" if t else " is happy") for t in y]
    return list(zip(random_sentences(n, seed=seed), b)), y


def test_one_epoch_on_a_separable_toy_task_reaches_the_bare_loop(st_folder):
    # the bare loop a researcher writes for a mean-pooling checkpoint: AutoModel, mean over the mask,
    # dropout, a new Linear drawn normal(0, 0.02); the same rows, order, optimizer and schedule
    from transformers import AutoModel, AutoTokenizer

    X, y = _separable(1000)
    Xt, yt = _separable(200, seed=10)
    lr, bs = 3e-3, 16
    torch.manual_seed(0)
    body, tok = AutoModel.from_pretrained(st_folder), AutoTokenizer.from_pretrained(st_folder)
    head, drop = torch.nn.Linear(32, 2), torch.nn.Dropout(0.1)
    torch.nn.init.normal_(head.weight, 0.0, 0.02)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW([*body.parameters(), *head.parameters()], lr=lr, weight_decay=0.01)
    steps = -(-len(X) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)

    def pooled(pairs):
        enc = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True, max_length=32,
                  return_tensors="pt")
        h, m = body(**enc).last_hidden_state, enc["attention_mask"].unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)

    order = np.random.default_rng(0).permutation(len(X))
    body.train()
    for s in range(0, len(X), bs):
        rows = order[s:s + bs]
        loss = torch.nn.functional.cross_entropy(head(drop(pooled([X[i] for i in rows]))), torch.as_tensor(y[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    body.eval()
    with torch.no_grad():
        bare = float((head(pooled(Xt)).argmax(1).numpy() == yt).mean())
    ft = FineTuneClassifier(str(st_folder), backbone_options={"pair_mode": "template"}, max_iter=1, batch_size=bs,
                            learning_rate=lr, warmup=0, grad_clip=None, early_stopping=False,
                            random_state=0).fit(X, y)
    assert bare >= 0.95  # the task is learnt in one epoch
    assert ft.score(Xt, yt) >= bare - 0.02


def test_pooler_head_trains_what_a_transformers_classifier_trains(bert):
    # pooling='pooler' with the default head is BertForSequenceClassification's head: given its initial
    # classifier, the same rows, order and dropout draws, a bare transformers loop ends where the path ends
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    X, y = _pairs(96, seed=3)
    lr, bs = 1e-3, 16
    ft = FineTuneClassifier(str(bert), backbone_options={"pair_mode": "template", "pooling": "pooler"}, max_iter=1,
                            batch_size=bs, learning_rate=lr, warmup=0, grad_clip=None, early_stopping=False,
                            random_state=0)
    from skgroup.finetune._executor import FineTuneExecutor
    from skgroup.finetune._inputs import as_inputs

    first = FineTuneExecutor(ft._load_backbone(), as_inputs(X, "text"), y, 2).new_module(0)
    assert first.dropout.p == pytest.approx(0.1)
    model = AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2)
    tok = AutoTokenizer.from_pretrained(bert)
    with torch.no_grad():
        model.classifier.weight.copy_(first.head.weight)
        model.classifier.bias.copy_(first.head.bias)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = -(-len(X) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        order = np.random.default_rng(0).permutation(len(X))
        # no draw for the DataLoader's base seed: the engine gives its loaders a generator of their own
        model.train()
        for s in range(0, len(X), bs):
            rows = order[s:s + bs]
            enc = tok([X[i][0] for i in rows], [X[i][1] for i in rows], padding=True, truncation=True,
                      max_length=64, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, torch.as_tensor(y[rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        enc = tok([a for a, _ in X], [b for _, b in X], padding=True, truncation=True, max_length=64,
                  return_tensors="pt")
        z = model(**enc).logits.numpy()
    ft.fit(X, y)
    np.testing.assert_allclose(ft.decision_function(X), z[:, 1] - z[:, 0], atol=1e-5)


def test_saved_text_model_reproduces_transform_by_default(st_folder, tmp_path, capsys):
    from feature_extraction.cli import main as extract_main
    from skgroup.datasets import load_embeddings

    X, y = _pairs(40, seed=7)
    ft = FineTuneClassifier(str(st_folder), backbone_options={"pair_mode": "template", "max_length": 16},
                            max_iter=1, batch_size=8, learning_rate=1e-3, early_stopping=False,
                            random_state=0).fit(X, y)
    feats, proba = ft.transform(X[:6]), ft.predict_proba(X[:6])
    folder = ft.save(tmp_path / "saved")
    meta = json.loads((folder / "skgroup_finetuned.json").read_text())
    assert meta["text_options"] == {"pooling": "mean", "pair_mode": "template", "max_length": 16,
                                    "normalize": False}
    backbone, W, b, _ = load_finetuned(folder)  # no options: the folder says how it reads pairs
    assert (backbone.pair_mode, backbone.max_length, backbone.normalize) == ("template", 16, False)
    with torch.no_grad():
        again = backbone(backbone.batch_to(backbone.collate([backbone.prepare(x) for x in X[:6]]), "cpu")).numpy()
    np.testing.assert_allclose(again, feats, atol=1e-5)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(again) @ W.T + b, 1).numpy(), proba, atol=1e-5)
    assert load_backbone(folder, max_length=8).max_length == 8  # an argument still wins
    # skgroup-extract FOLDER: the same features, without --pair-mode / --max-length
    (tmp_path / "d.tsv").write_text("s1\ts2\tlabel\n" + "".join(f"{a}\t{c}\t{t}\n" for (a, c), t in zip(X[:6], y)))
    assert extract_main([str(folder), str(tmp_path / "d.tsv"), str(tmp_path / "cache"), "--text-columns", "s1,s2",
                         "--no-progress", "-q"]) == 0
    np.testing.assert_allclose(load_embeddings(tmp_path / "cache").features, feats, atol=1e-5)


def test_saved_state_dict_model_reproduces_transform_with_its_preprocessing(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    X, y, _ = _images(16)
    backbone = load_backbone("efficientnet-lite0", weights="random", image_size=32, resize=32)
    ft = FineTuneClassifier(backbone, max_iter=1, batch_size=8, learning_rate=1e-3, augment=False,
                            early_stopping=False, random_state=0).fit(X, y)
    feats = ft.transform(X[:4])
    folder = ft.save(tmp_path / "saved")
    again, _, _, _ = load_finetuned(folder, model="efficientnet-lite0")  # 32 px, as recorded (not 224)
    assert again.preprocessing.size == 32
    from skgroup.finetune._inputs import BackboneDataset, as_inputs

    ds = BackboneDataset(as_inputs(X[:4], "image"), again)
    with torch.no_grad():
        out = again(again.batch_to(again.collate([ds[i] for i in range(4)]), "cpu")).numpy()
    np.testing.assert_allclose(out, feats, atol=1e-4)
    with pytest.raises(ValueError, match="load the weights into"):
        load_backbone(TinyCNN(), weights=folder / "backbone.safetensors")


# -- the command line: config, subsamples, progress, checkpoints ---------------------
def test_cli_grad_clip_can_be_switched_off():
    from skgroup.finetune._cli import apply_override, training_parameters

    for off in (0, 0.0, False, "none", "None", "off", "null"):
        assert training_parameters({"grad_clip": off})["grad_clip"] is None, off
    assert training_parameters({"grad_clip": 2.5})["grad_clip"] == 2.5
    assert "grad_clip" not in training_parameters({})  # the estimator's default (1.0) applies
    config = {"training": {}}
    apply_override(config, "training.grad_clip=None")  # not TOML: arrives as the string 'None'
    assert training_parameters(config["training"])["grad_clip"] is None
    with pytest.raises(ConfigError, match="grad_clip"):
        training_parameters({"grad_clip": "sometimes"})
    FineTuneClassifier("m", grad_clip=0)._validate_params()  # 0 is no clipping for the estimator too


def test_cli_subsamples_have_exactly_the_rows_asked_for():
    from types import SimpleNamespace

    from skgroup.finetune._cli import _split_rows, stratified_counts

    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 400, rng.integers(1, 8))
        total = int(rng.integers(1, sizes.sum() + 1))
        take = stratified_counts(sizes, total)
        assert take.sum() == total and np.all(take <= sizes) and np.all(take >= 0)
        if total >= sizes.size:
            assert np.all(take >= 1)
    # MultiNLI's validation split by group (load_mnli): max_val = 100 gave 101 rows
    sizes = np.array([872, 125, 847, 22, 848, 21])
    groups = np.repeat(np.arange(6), sizes)
    ds = SimpleNamespace(split=np.ones(groups.size, dtype=int))
    ds.split[:3] = 0
    ds.split[3:6] = 2
    rows = _split_rows(ds, groups, {"max_val": 100}, 0)["val"]
    assert rows.size == 100 and np.unique(groups[rows]).size == 6
    with pytest.raises(ConfigError, match="max_val"):
        _split_rows(ds, groups, {"max_val": 0}, 0)


def test_cli_help_lists_every_table_key_and_the_default_output(capsys):
    import re

    from skgroup.finetune._cli import CONFIG_HELP, DEFAULT_OUTPUT

    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for table in ("model", "data", "method", "training", "auxiliary", "output"):
        assert f"[{table}]" in text
    skip = {"backbone", "backbone_options", "method", "auxiliary", "callbacks", "validation_fraction"}
    for key in set(FineTuneClassifier("m").get_params()) - skip:
        assert re.search(rf"^\s+{key} = ", text, flags=re.M), key
    assert DEFAULT_OUTPUT in text and "keep_checkpoints" in text
    docs = (REPO / "docs" / "finetune.rst").read_text()
    for key in re.findall(r"^\s+(\w+) = ", CONFIG_HELP, flags=re.M):  # the docs show the same reference
        assert re.search(rf"^\s+{key} = ", docs, flags=re.M), key
