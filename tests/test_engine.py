"""The training engine: schedules, callbacks, state, resume after SIGKILL, batch sources."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from skgroup import ERMClassifier, GroupDROClassifier
from skgroup.objectives import GroupDRO, Objective
from skgroup._samplers import Sampler, UniformSampler
from skgroup.datasets import make_spurious_features
from skgroup.engine import (
    ArrayBatches,
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochCallback,
    LoaderBatches,
    Schedule,
    Trainer,
    TrainOptions,
    load_checkpoint,
    make_head,
    save_checkpoint,
    train_head,
    validation_metrics,
)


def _data(n=300, seed=0):
    X, y, g = make_spurious_features(n, random_state=seed)
    return X.astype(np.float32), y, g


def _trainer(X, y, callbacks=(), max_iter=6, seed=0, **opts):
    module = make_head(X.shape[1], 2, (), torch.float32, torch.Generator().manual_seed(0))
    options = TrainOptions(solver="adamw", max_iter=max_iter, batch_size=32, learning_rate=1e-2, **opts)
    return Trainer(module, ArrayBatches(X, y), Objective(), options, callbacks=list(callbacks), seed=seed)


# -- schedules ----------------------------------------------------------------
def test_schedule_factors_by_hand():
    cos = Schedule("cosine", total_steps=4)
    assert [cos.factor(s) for s in range(4)] == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                              0.5 + 0.5 * math.cos(3 * math.pi / 4)])
    lin = Schedule("linear", total_steps=6, warmup_steps=2)
    # warm-up 1/3, 2/3, then linear decay over the 4 remaining steps
    assert [lin.factor(s) for s in range(6)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])
    assert Schedule("constant", 10, warmup_steps=1).factor(0) == 0.5
    with pytest.raises(ValueError, match="lr_schedule"):
        Schedule("step")


def test_shard_pads_and_splits_like_distributed_sampler():
    order = np.array([4, 0, 3, 1, 2])
    a, b = Sampler.shard(order, 0, 2), Sampler.shard(order, 1, 2)
    assert a.tolist() == [4, 3, 2] and b.tolist() == [0, 1, 4]  # padded by wrapping to 6
    assert Sampler.shard(order, 0, 1).tolist() == order.tolist()


# -- validation metrics and early stopping ----------------------------------
def test_validation_metrics_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    y = np.array([0, 1, 1, 0])  # predictions 0, 1, 0, 1: rows 0 and 1 right
    groups = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)
    m = validation_metrics(logits, y, groups, y_pred_biased=np.array([0, 1, 0, 0]))
    assert m["accuracy"] == 0.5
    assert m["worst_group_accuracy"] == 0.0  # group 1 gets both wrong
    assert m["worst_class_accuracy"] == 0.5
    # cells (y, b): (0,0): rows 0, 3 -> 1/2; (1,1): row 1 -> 1; (1,0): row 2 -> 0
    assert m["bias_unsupervised"] == pytest.approx((0.5 + 1 + 0) / 3)
    z = logits - logits.max(1, keepdims=True)
    nll = np.log(np.exp(z).sum(1)) - z[np.arange(4), y]
    assert m["loss"] == pytest.approx(nll.mean())


class _Scripted(Callback):
    """Writes a given validation score per epoch (a hand-built curve) and keeps each epoch's weights."""

    def __init__(self, scores):
        self.scores = scores
        self.weights = []

    def on_epoch_end(self, trainer):
        trainer.record["val_worst_group_accuracy"] = self.scores[trainer.epoch - 1]
        self.weights.append(trainer.raw_module[0].weight.detach().clone())
        return False


def test_early_stopping_keeps_the_peak_and_stops_after_patience():
    X, y, _ = _data()
    scripted = _Scripted([0.2, 0.5, 0.7, 0.6, 0.65, 0.3, 0.9, 0.95])
    trainer = _trainer(X, y, [scripted, EarlyStopping("worst_group_accuracy", patience=3)], max_iter=8).fit()
    # the peak 0.7 at epoch 3; epochs 4-6 do not beat it, so training stops after epoch 6
    assert trainer.epoch == 6 and trainer.stopped_early
    assert trainer.best["epoch"] == 3
    assert torch.equal(trainer.raw_module[0].weight, scripted.weights[2])


def test_early_stopping_without_patience_selects_but_runs_to_the_end():
    X, y, _ = _data()
    scripted = _Scripted([0.5, 0.9, 0.4, 0.9])
    trainer = _trainer(X, y, [scripted, EarlyStopping(patience=None)], max_iter=4).fit()
    assert trainer.epoch == 4 and not trainer.stopped_early
    assert trainer.best["epoch"] == 2  # a tie keeps the earlier epoch
    assert torch.equal(trainer.raw_module[0].weight, scripted.weights[1])


def test_early_stopping_names_the_missing_record():
    X, y, _ = _data()
    with pytest.raises(RuntimeError, match="ValidationScoring"):
        _trainer(X, y, [EarlyStopping("worst_group_accuracy")]).fit()


def test_estimator_selects_the_best_epoch_on_validation():
    X, y, g = _data(600)
    Xv, yv, gv = _data(300, seed=1)
    est = ERMClassifier(solver="sgd", learning_rate=0.5, max_iter=12, n_iter_no_change=None, random_state=0,
                        monitor="worst_group_accuracy")
    est.fit(X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    wga = est.validation_scores_["worst_group_accuracy"]
    assert est.best_iteration_ == int(np.argmax(wga)) + 1
    assert est.n_iter_ == 12 and len(est.loss_curve_) == 12


def test_lbfgs_calls_callbacks_per_iteration_and_can_stop():
    X, y, _ = _data()
    calls = []
    result = train_head(X, y, 2, Objective(), TrainOptions(solver="lbfgs", max_iter=50),
                        callbacks=[EpochCallback(lambda e, m: calls.append(e) or e == 2)])
    assert calls == [0, 1, 2] and result.stopped_early and result.n_iter == 3


# -- state and resume ----------------------------------------------------------
def test_state_round_trip_continues_exactly(tmp_path):
    X, y, g = _data()
    membership = np.eye(4, dtype=bool)[g]

    def run(epochs, state=None):
        module = make_head(X.shape[1], 2, (), torch.float32, torch.Generator().manual_seed(0))
        options = TrainOptions(solver="adamw", max_iter=epochs, batch_size=32, learning_rate=1e-2,
                               lr_schedule="cosine")
        trainer = Trainer(module, ArrayBatches(X, y), Objective(reduction=GroupDRO(membership, eta=0.1)), options,
                          sampler=UniformSampler(len(y)), seed=5)
        if state is not None:
            # what Checkpoint does on_train_begin (an optimizer exists once the loop starts)
            trainer.callbacks.append(_LoadAtBegin(state))
        return trainer.fit()

    full = run(6)
    save_checkpoint(_state_after(X, y, membership, epochs=3), tmp_path / "s.pt")
    resumed = run(6, state=load_checkpoint(tmp_path / "s.pt"))
    for a, b in zip(full.raw_module.parameters(), resumed.raw_module.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(full.objective.reduction.q, resumed.objective.reduction.q)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


class _LoadAtBegin(Callback):
    def __init__(self, state):
        self.state = state

    def on_train_begin(self, trainer):
        trainer.load_state_dict(self.state)


class _StopAfter(Callback):
    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer):
        return trainer.epoch >= self.n


def _state_after(X, y, membership, epochs):
    """The state of the 6-epoch run of the test above, after ``epochs`` epochs."""
    module = make_head(X.shape[1], 2, (), torch.float32, torch.Generator().manual_seed(0))
    options = TrainOptions(solver="adamw", max_iter=6, batch_size=32, learning_rate=1e-2, lr_schedule="cosine")
    trainer = Trainer(module, ArrayBatches(X, y), Objective(reduction=GroupDRO(membership, eta=0.1)), options,
                      sampler=UniformSampler(len(y)), seed=5, callbacks=[_StopAfter(epochs)])
    trainer.fit()
    trainer.stopped_early = False  # a kill, not an early stop: the resumed run goes on
    return trainer.state_dict()


def test_checkpoint_refuses_another_runs_state(tmp_path):
    X, y, _ = _data()
    path = tmp_path / "ck"
    _trainer(X, y, [Checkpoint(path / "a.pt")], max_iter=2).fit()
    with pytest.raises(ValueError, match="another run"):
        _trainer(X, y, [Checkpoint(path / "a.pt")], max_iter=2, seed=9).fit()
    (path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        _trainer(X, y, [Checkpoint(path / "junk.pt")]).fit()


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from skgroup import GroupDROClassifier, JTTClassifier
    from skgroup.datasets import make_spurious_features
    from skgroup.engine import Checkpoint, Callback

    class KillAt(Callback):
        def __init__(self, stage, epoch):
            self.stage, self.epoch = stage, epoch
        def on_epoch_end(self, trainer):
            if trainer.name == self.stage and trainer.epoch == self.epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return False

    method, ckdir, out, kill = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    X, y, g = make_spurious_features(800, random_state=0)
    callbacks = [Checkpoint(ckdir)] if ckdir != "-" else []
    if kill != "-":
        stage, epoch = kill.split(":")
        callbacks.append(KillAt(stage, int(epoch)))
    if method == "group_dro":
        est = GroupDROClassifier(max_iter=6, batch_size=64, lr_schedule="cosine", random_state=1,
                                 callbacks=callbacks).fit(X, y, group_labels=g)
    else:
        est = JTTClassifier(id_epochs=3, max_iter=4, batch_size=64, random_state=1,
                            callbacks=callbacks).fit(X, y)
    np.save(out, np.concatenate([w.ravel() for w in est.coefs_ + est.intercepts_]))
""")


# JTT killed in its final stage resumes a two-stage plan (the identification stage restored finished) and
# an upsampled epoch; Group DRO's q and its sampler are the reduction state a resume must restore
@pytest.mark.parametrize("method, kill", [("group_dro", "group_dro:3"), ("jtt", "final:2")])
def test_sigkill_then_resume_is_bit_identical(tmp_path, method, kill):
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}

    def run(ckdir, out, kill):
        return subprocess.run([sys.executable, str(script), method, ckdir, str(out), kill], env=env,
                              capture_output=True, text=True, timeout=300)

    ref = run("-", tmp_path / "ref.npy", "-")
    assert ref.returncode == 0, ref.stderr
    killed = run(str(tmp_path / "ck"), tmp_path / "killed.npy", kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed.npy").exists()
    resumed = run(str(tmp_path / "ck"), tmp_path / "resumed.npy", "-")
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "ref.npy"), np.load(tmp_path / "resumed.npy"))


# -- batch sources, accumulation ---------------------------------------------
class _Rows(torch.utils.data.Dataset):
    def __init__(self, X):
        self.X = torch.from_numpy(X)

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, i):
        return self.X[i]


def test_loader_source_trains_like_the_array_source():
    X, y, _ = _data()
    options = TrainOptions(solver="sgd", max_iter=3, batch_size=40, learning_rate=0.05)

    def fit(source):
        module = make_head(X.shape[1], 2, (4,), torch.float32, torch.Generator().manual_seed(0))
        return Trainer(module, source, Objective(), options, seed=2).fit().raw_module

    a = fit(ArrayBatches(X, y))
    b = fit(LoaderBatches(_Rows(X), y))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_gradient_accumulation_equals_the_larger_batch():
    X, y, _ = _data(256)
    order = np.arange(256)

    class Fixed(Sampler):
        def epoch(self, rng):
            return order

    def fit(batch, accumulate):
        module = make_head(X.shape[1], 2, (), torch.float64, torch.Generator())
        options = TrainOptions(solver="sgd", momentum=0.0, max_iter=2, batch_size=batch, learning_rate=0.1,
                               accumulate=accumulate, dtype="float64")
        return Trainer(module, ArrayBatches(X, y, dtype=torch.float64), Objective(), options,
                       sampler=Fixed()).fit().raw_module

    a, b = fit(64, 1), fit(32, 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


# -- the estimators' validation arguments -------------------------------------
def test_validation_arguments_are_checked():
    X, y, g = _data()
    with pytest.raises(ValueError, match="both X_val and y_val"):
        ERMClassifier().fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="group_labels_val was given without"):
        ERMClassifier().fit(X, y, group_labels_val=g)
    with pytest.raises(ValueError, match="not fitted on"):
        ERMClassifier().fit(X, y, X_val=X, y_val=y + 7)
    with pytest.raises(ValueError, match="validation_fraction"):
        ERMClassifier(early_stopping=True).fit(X[:6], [0, 0, 0, 0, 0, 1])


def test_internal_split_is_stratified_by_group():
    X, y, g = _data(1000)
    seen = {}

    class Spy(Callback):
        def on_train_begin(self, trainer):
            seen["n_train"] = len(trainer.source)

    est = GroupDROClassifier(early_stopping=True, validation_fraction=0.2, max_iter=2, random_state=0,
                             callbacks=[Spy()]).fit(X, y, group_labels=g)
    assert seen["n_train"] == 800
    assert "worst_group_accuracy" in est.validation_scores_
    assert est.best_iteration_ in (1, 2)


def test_monitor_bias_unsupervised_needs_no_group_labels():
    X, y, _ = _data(600)
    Xv, yv, _ = _data(300, seed=1)
    est = ERMClassifier(solver="adamw", max_iter=3, monitor="bias_unsupervised", random_state=0)
    est.fit(X, y, X_val=Xv, y_val=yv)
    assert est.validation_scores_["bias_unsupervised"].shape == (3,)


def test_a_tie_goes_to_the_lower_validation_loss():
    X, y, _ = _data()

    class Curve(_Scripted):
        def on_epoch_end(self, trainer):
            trainer.record["val_loss"] = [0.9, 0.7, 0.8, 0.5][trainer.epoch - 1]
            return super().on_epoch_end(trainer)

    scripted = Curve([0.0, 0.0, 0.0, 0.0])  # a worst group no epoch gets right
    trainer = _trainer(X, y, [scripted, EarlyStopping(patience=2)], max_iter=4).fit()
    assert trainer.best["epoch"] == 4 and not trainer.stopped_early


# -- penalties -------------------------------------------------------------------
def test_proximal_penalty_by_hand_and_only_on_trainable_parameters():
    from skgroup.engine import ProximalPenalty

    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, 2.0]]))
        module.bias.fill_(3.0)
    pen = ProximalPenalty({"weight": torch.tensor([[0.0, 0.0]]), "bias": torch.tensor([1.0])}, 0.5)
    # 0.5 * ((1 + 4) + 4)
    assert float(pen(module).detach()) == pytest.approx(4.5)
    module.bias.requires_grad_(False)  # a frozen parameter is not penalised
    assert float(pen(module).detach()) == pytest.approx(2.5)
    # the anchor is a copy: moving the reference module later does not move it
    ref = torch.nn.Linear(2, 1)
    anchored = ProximalPenalty(ref, 1.0)
    with torch.no_grad():
        ref.weight.add_(1.0)
    assert float(anchored(ref).detach()) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shape"):
        ProximalPenalty({"weight": torch.zeros(3, 3)}, 1.0)(module)
    with pytest.raises(ValueError, match="strength"):
        ProximalPenalty(ref, -1.0)


def test_lbfgs_minimises_objective_plus_penalty():
    """The L-BFGS optimum is a stationary point of mean CE + penalty (autograd), not of CE alone;
    a very strong pull keeps the weights at the anchor."""
    from skgroup.engine import ProximalPenalty

    X, y, _ = _data(200)
    X = X.astype(np.float64)
    anchor = make_head(X.shape[1], 2, (), torch.float64, torch.Generator())
    with torch.no_grad():
        anchor[0].weight.copy_(torch.linspace(-1, 1, anchor[0].weight.numel()).view_as(anchor[0].weight))
    options = TrainOptions(solver="lbfgs", max_iter=500, tol=1e-9, dtype="float64")
    pen = ProximalPenalty(anchor, 0.3)
    result = train_head(X, y, 2, Objective(), options, penalty=pen)
    module = result.module
    loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(X)), torch.from_numpy(y)) + pen(module)
    grads = torch.autograd.grad(loss, list(module.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-6
    plain = train_head(X, y, 2, Objective(), options).module
    assert not torch.allclose(plain[0].weight, module[0].weight, atol=1e-3)
    stiff = train_head(X, y, 2, Objective(), options, penalty=ProximalPenalty(anchor, 1e6)).module
    torch.testing.assert_close(stiff[0].weight, anchor[0].weight, atol=1e-5, rtol=0)


def test_minibatch_step_includes_the_penalty():
    """One plain SGD step on one batch: the update is lr * (grad CE + grad penalty), by hand."""
    from skgroup.engine import ProximalPenalty

    X, y, _ = _data(32)
    X = X.astype(np.float64)
    order = np.arange(32)

    class Fixed(Sampler):
        def epoch(self, rng):
            return order

    anchor = {"0.weight": torch.ones(2, X.shape[1], dtype=torch.float64), "0.bias": torch.zeros(2, dtype=torch.float64)}
    module = make_head(X.shape[1], 2, (), torch.float64, torch.Generator())  # starts at zero
    options = TrainOptions(solver="sgd", momentum=0.0, max_iter=1, batch_size=32, learning_rate=0.1, dtype="float64")
    Trainer(module, ArrayBatches(X, y, dtype=torch.float64), Objective(), options, sampler=Fixed(),
            penalty=ProximalPenalty(anchor, 2.0)).fit()
    # at W = 0: softmax = 1/2, so d CE / dW = (1/2 - onehot)^T X / n; d penalty / dW = 2 * 2 * (0 - 1)
    p = np.full((32, 2), 0.5)
    p[np.arange(32), y] -= 1.0
    grad_w = p.T @ X / 32 - 4.0
    np.testing.assert_allclose(module[0].weight.detach().numpy(), -0.1 * grad_w, rtol=1e-10, atol=1e-12)


def test_penalty_must_be_callable():
    X, y, _ = _data(32)
    with pytest.raises(TypeError, match="penalty"):
        Trainer(make_head(X.shape[1], 2, (), torch.float32, torch.Generator()), ArrayBatches(X, y), Objective(),
                TrainOptions(), penalty=3.0)


# -- checkpoints resume only the run that wrote them ----------------------------------
def _ck_fit(ckdir, X, y, *, est=None, resume=True, **params):
    base = dict(solver="adamw", max_iter=3, batch_size=32, learning_rate=1e-2, random_state=0)
    est = est if est is not None else ERMClassifier(**{**base, **params})
    return est.set_params(callbacks=[Checkpoint(ckdir, resume=resume)]).fit(X, y)


@pytest.mark.parametrize("change, field", [
    (dict(learning_rate=0.1, y=True), "learning_rate"),
    (dict(learning_rate=0.1, y=True), "data.y"),
    (dict(l2_reg=0.1), "l2_reg"),
    (dict(batch_size=64), "batch_size"),
    (dict(weight_decay=0.0, order=True), "data"),
    (dict(max_iter=5), "max_iter"),
    (dict(random_state=1), "seed"),
])
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path, change, field):
    X, y, _ = _data(200)
    ck = tmp_path / "ck"
    _ck_fit(ck, X, y)
    X2, y2 = X, y
    change = dict(change)
    if change.pop("y", False):
        y2 = 1 - y
    if change.pop("order", False):
        order = np.random.default_rng(0).permutation(len(y))
        X2, y2 = X[order], y[order]
    change.pop("weight_decay", None)
    with pytest.raises(ValueError, match=field) as info:
        _ck_fit(ck, X2, y2, **change)
    message = str(info.value)
    assert str(ck) in message and "resume=False" in message and "delete" in message.lower()


def test_the_same_run_resumes_and_resume_false_starts_clean(tmp_path):
    X, y, _ = _data(200)
    ck = tmp_path / "ck"
    first = _ck_fit(ck, X, y)
    again = _ck_fit(ck, X, y)  # the finished run, resumed: nothing to train, same model
    np.testing.assert_array_equal(first.coef_, again.coef_)
    fresh = ERMClassifier(solver="adamw", max_iter=3, batch_size=32, learning_rate=0.1, random_state=0).fit(X, 1 - y)
    restarted = _ck_fit(ck, X, 1 - y, learning_rate=0.1, resume=False)
    np.testing.assert_array_equal(fresh.coef_, restarted.coef_)
    assert fresh.score(X, 1 - y) > 0.5


def test_checkpoints_see_method_parameters_and_group_labels(tmp_path):
    from skgroup import JTTClassifier

    X, y, g = _data(200)
    jtt = dict(solver="adamw", id_epochs=1, max_iter=2, batch_size=32, random_state=0)
    _ck_fit(tmp_path / "jtt", X, y, est=JTTClassifier(**jtt, lambda_up=3))
    with pytest.raises(ValueError, match="final.pt") as info:  # the identification stage is unchanged
        _ck_fit(tmp_path / "jtt", X, y, est=JTTClassifier(**jtt, lambda_up=6))
    assert "sampler" in str(info.value)
    dro = dict(solver="adamw", max_iter=2, batch_size=32, random_state=0)
    GroupDROClassifier(**dro, callbacks=[Checkpoint(tmp_path / "dro")]).fit(X, y, group_labels=g)
    with pytest.raises(ValueError, match="objective.reduction.membership"):
        GroupDROClassifier(**dro, callbacks=[Checkpoint(tmp_path / "dro")]).fit(X, y, group_labels=(g + 1) % 4)
    with pytest.raises(ValueError, match="objective.reduction.eta"):
        GroupDROClassifier(**dro, eta=0.5, callbacks=[Checkpoint(tmp_path / "dro")]).fit(X, y, group_labels=g)


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "2"])
def test_checkpoint_every_must_be_a_positive_int(tmp_path, every):
    with pytest.raises(ValueError, match=r"every.*positive int"):
        Checkpoint(tmp_path / "ck", every=every)


def _with_validation_fraction():
    from skgroup.estimators import all_estimators

    return [name for name, cls in all_estimators() if "validation_fraction" in cls().get_params()]


@pytest.mark.parametrize("name", _with_validation_fraction())
def test_a_validation_fraction_error_points_the_right_way(name):
    from skgroup.estimators import all_estimators

    cls = dict(all_estimators())[name]
    X, y, _ = _data(300)
    with pytest.raises(ValueError, match=r"validation_fraction=0.999.*leaves \d+ training rows.*smaller validation_fraction"):
        cls(validation_fraction=0.999, early_stopping=True).fit(X, y)
    with pytest.raises(ValueError, match=r"validation_fraction=0.001.*holds out 1 row.*larger validation_fraction"):
        cls(validation_fraction=0.001, early_stopping=True).fit(X, y)
    y1 = y.copy()
    y1[0] = 7  # a class of one row
    with pytest.raises(ValueError, match=r"one class has a single row.*X_val|1 sample"):  # (GradTune's hold-out first)
        cls(validation_fraction=0.2, early_stopping=True).fit(X, y1)


class _EpochRows(_Rows):
    """A dataset with public state that training moves (the epoch of a seeded augmentation)."""

    def __init__(self, X):
        super().__init__(X)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_the_fingerprint_is_taken_before_training_moves_anything(tmp_path):
    X, y, _ = _data(120)
    options = TrainOptions(solver="adamw", max_iter=4, batch_size=32, learning_rate=1e-2, lr_schedule="cosine")

    def fit():
        module = make_head(X.shape[1], 2, (), torch.float32, torch.Generator().manual_seed(0))
        return Trainer(module, LoaderBatches(_EpochRows(X), y), Objective(), options, seed=1,
                       callbacks=[Checkpoint(tmp_path / "a.pt", every=3)]).fit()

    first = fit()
    again = fit()  # the finished run resumes: not refused for the dataset's epoch or the optimizer's lr
    assert again.history == first.history
