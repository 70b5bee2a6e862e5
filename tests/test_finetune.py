"""The fine-tuning path: the same plans and loop as the heads, on whole (tiny) backbones."""

import json
import os
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
    assert "epoch   1" in capsys.readouterr().out


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
