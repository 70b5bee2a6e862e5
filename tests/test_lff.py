"""LfF: the generalized cross-entropy, the moving averages and weights by hand (and against a transcription
of the authors' EMA), the objective's value and gradient, resuming with the averages, the module's modes,
the fine-tuning path, and the effect on spurious features."""

import warnings

import numpy as np
import pytest
import torch

from skgroup import ERMClassifier, LfFClassifier
from skgroup.datasets import make_spurious_benchmark, make_spurious_features
from skgroup.engine import ArrayBatches, Callback, Checkpoint, Trainer, TrainOptions, make_head
from skgroup.estimators._lff import BiasedDebiasedPair, LfFObjective, LfFOutput
from skgroup.objectives import GeneralizedCrossEntropy


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- generalized cross-entropy ----------------------------------------------------------------------
def test_gce_value_and_gradient_by_hand():
    z = torch.tensor([[1.0, 2.0, -0.5], [0.3, -1.2, 0.8]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 2])
    q = 0.7
    values = GeneralizedCrossEntropy(q)(z, y)
    values.sum().backward()
    p = _softmax(z.detach().numpy())
    py = p[[0, 1], [1, 2]]
    np.testing.assert_allclose(values.detach().numpy(), (1 - py ** q) / q, rtol=1e-12)
    # d/dz (1 - p_y^q) / q = p_y^q (p - e_y): cross-entropy's gradient times p_y^q (the authors' code
    # writes it as CE * q * p_y^q with p_y^q detached, whose gradient is q times this one)
    onehot = np.eye(3)[[1, 2]]
    np.testing.assert_allclose(z.grad.numpy(), py[:, None] ** q * (p - onehot), rtol=1e-12)


def test_gce_tends_to_cross_entropy_as_q_falls():
    z = torch.tensor([[0.2, -0.4], [1.5, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(GeneralizedCrossEntropy(1e-6)(z, y), ce, rtol=1e-5, atol=1e-6)


# -- moving averages and weights ----------------------------------------------------------------------
_Y = np.array([0, 0, 1, 1, 1])
_STEPS = [  # (rows, biased losses, debiased losses); the second batch is out of order on purpose
    ([0, 2, 3], [1.0, 2.0, 0.5], [0.5, 1.0, 1.0]),
    ([3, 1, 0], [1.5, 0.2, 3.0], [0.1, 0.4, 0.6]),
]


def _objective(alpha=0.7, dtype=torch.float64):
    return LfFObjective(_Y, 2, q=0.7, ema_alpha=alpha).to("cpu", dtype)


def test_moving_averages_and_weights_by_hand():
    obj = _objective()
    rows, lb, ld = (torch.tensor(v, dtype=torch.float64) if i else torch.tensor(v) for i, v in enumerate(_STEPS[0]))
    w = obj.update(lb, ld, rows)
    # first visits take the loss itself; class maxima b: (1.0, 2.0), d: (0.5, 1.0)
    np.testing.assert_allclose(obj.ema_b.numpy(), [1.0, 0, 2.0, 0.5, 0])
    np.testing.assert_allclose(obj.ema_d.numpy(), [0.5, 0, 1.0, 1.0, 0])
    np.testing.assert_allclose(w.numpy(), [1 / (2 + 1e-8), 1 / (2 + 1e-8), 0.25 / (1.25 + 1e-8)], rtol=1e-12)
    rows, lb, ld = (torch.tensor(v, dtype=torch.float64) if i else torch.tensor(v) for i, v in enumerate(_STEPS[1]))
    w = obj.update(lb, ld, rows)
    e_b = [0.7 * 1.0 + 0.3 * 3.0, 0.2, 2.0, 0.7 * 0.5 + 0.3 * 1.5, 0]
    e_d = [0.7 * 0.5 + 0.3 * 0.6, 0.4, 1.0, 0.7 * 1.0 + 0.3 * 0.1, 0]
    np.testing.assert_allclose(obj.ema_b.numpy(), e_b, rtol=1e-12)
    np.testing.assert_allclose(obj.ema_d.numpy(), e_d, rtol=1e-12)
    max_b, max_d = [max(e_b[:2]), max(e_b[2:])], [max(e_d[:2]), max(e_d[2:])]

    def W(i):
        lb_, ld_ = e_b[i] / max_b[_Y[i]], e_d[i] / max_d[_Y[i]]
        return lb_ / (lb_ + ld_ + 1e-8)

    np.testing.assert_allclose(w.numpy(), [W(3), W(1), W(0)], rtol=1e-12)
    assert W(3) == pytest.approx(0.4 / 1.13, rel=1e-7) and W(1) == pytest.approx(0.125 / (0.125 + 0.4 / 0.53))


class _AuthorsEMA:
    """The authors' ``util.EMA`` (alinlab/LfF), transcribed."""

    def __init__(self, label, alpha):
        self.label, self.alpha = label, alpha
        self.parameter = torch.zeros(label.size(0), dtype=torch.float64)
        self.updated = torch.zeros(label.size(0), dtype=torch.float64)

    def update(self, data, index):
        self.parameter[index] = self.alpha * self.parameter[index] + (1 - self.alpha * self.updated[index]) * data
        self.updated[index] = 1

    def max_loss(self, label):
        return self.parameter[np.where(self.label == label)[0]].max()


def test_weights_match_a_transcription_of_the_authors_train_loop():
    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 40)
    obj = LfFObjective(y, 3, ema_alpha=0.7).to("cpu", torch.float64)
    ema_b, ema_d = _AuthorsEMA(torch.as_tensor(y), 0.7), _AuthorsEMA(torch.as_tensor(y), 0.7)
    for _ in range(6):
        index = torch.as_tensor(rng.permutation(40)[:16])
        loss_b = torch.as_tensor(rng.exponential(size=16))
        loss_d = torch.as_tensor(rng.exponential(size=16))
        ours = obj.update(loss_b, loss_d, index)
        # train.py: update both averages, read them at the batch, divide by the class-wise max, W
        ema_b.update(loss_b, index)
        ema_d.update(loss_d, index)
        lb, ld = ema_b.parameter[index].clone(), ema_d.parameter[index].clone()
        label = torch.as_tensor(y)[index]
        for c in range(3):
            k = np.where(label == c)[0]
            lb[k] /= ema_b.max_loss(c)
            ld[k] /= ema_d.max_loss(c)
        torch.testing.assert_close(ours, lb / (lb + ld + 1e-8), rtol=1e-12, atol=0)
    torch.testing.assert_close(obj.ema_b, ema_b.parameter, rtol=1e-12, atol=0)


def test_a_row_twice_in_a_batch_counts_with_its_mean_loss():
    obj = _objective()
    obj.update(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64),
               torch.tensor([1, 1]))
    assert float(obj.ema_b[1]) == 2.0 and float(obj.ema_d[1]) == 2.0 and obj.seen.tolist() == [0, 1, 0, 0, 0]


def test_a_class_whose_averages_are_zero_gets_weight_zero():
    obj = _objective()
    w = obj.update(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.tensor([0, 1]))
    assert w.tolist() == [0.0, 0.0]


def test_objective_value_and_gradients_by_hand():
    obj = _objective()
    z_d = torch.tensor([[0.5, -0.2], [1.0, 0.3], [-0.4, 0.9]], dtype=torch.float64, requires_grad=True)
    z_b = torch.tensor([[2.0, -1.0], [-0.5, 0.5], [0.1, 0.0]], dtype=torch.float64, requires_grad=True)
    idx, y = torch.tensor([4, 0, 2]), torch.tensor(_Y[[4, 0, 2]])
    value = obj(LfFOutput(z_d, z_b), y, idx)
    value.backward()
    p_d, p_b = _softmax(z_d.detach().numpy()), _softmax(z_b.detach().numpy())
    rows = np.arange(3)
    ce_d, ce_b = -np.log(p_d[rows, y]), -np.log(p_b[rows, y])
    # first visits: the averages are these losses; each over its class's maximum
    lb = ce_b / np.array([max(ce_b[[0, 2]]), ce_b[1], max(ce_b[[0, 2]])])
    ld = ce_d / np.array([max(ce_d[[0, 2]]), ce_d[1], max(ce_d[[0, 2]])])
    W = lb / (lb + ld + 1e-8)
    gce = (1 - p_b[rows, y] ** 0.7) / 0.7
    assert float(value.detach()) == pytest.approx((W * ce_d).mean() + gce.mean(), rel=1e-12)
    onehot = np.eye(2)[y]
    np.testing.assert_allclose(z_d.grad.numpy(), W[:, None] * (p_d - onehot) / 3, rtol=1e-10)
    np.testing.assert_allclose(z_b.grad.numpy(), p_b[rows, y][:, None] ** 0.7 * (p_b - onehot) / 3, rtol=1e-10)
    np.testing.assert_allclose(obj.last_weights.numpy(), W, rtol=1e-12)


def test_objective_needs_the_pair_and_plain_labels():
    with pytest.raises(TypeError, match="BiasedDebiasedPair"):
        _objective()(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]))


# -- the module ---------------------------------------------------------------------------------
def test_pair_returns_both_logits_in_training_and_the_debiased_in_eval():
    gen = torch.Generator().manual_seed(0)
    pair = BiasedDebiasedPair(make_head(3, 2, (4,), torch.float32, gen), make_head(3, 2, (4,), torch.float32, gen))
    x = torch.randn(5, 3)
    out = pair.train()(x)
    assert isinstance(out, LfFOutput)
    torch.testing.assert_close(out.logits, pair.debiased(x))
    torch.testing.assert_close(out.biased_logits, pair.biased(x))
    torch.testing.assert_close(pair.eval()(x), pair.debiased(x))


def test_estimator_predicts_with_the_debiased_head_and_keeps_the_biased_one():
    X, y, _ = make_spurious_features(400, random_state=0)
    est = LfFClassifier(max_iter=2, batch_size=64, random_state=0).fit(X, y)
    np.testing.assert_allclose(est.decision_function(X), X @ (est.coef_[1] - est.coef_[0])
                               + est.intercept_[1] - est.intercept_[0], rtol=1e-4, atol=1e-4)
    assert len(est.biased_coefs_) == 1 and not np.allclose(est.biased_coefs_[0], est.coef_.T)
    assert est.sample_weights_.shape == (400,) and np.all((est.sample_weights_ >= 0) & (est.sample_weights_ <= 1))
    assert {"debiased_loss", "biased_loss"} <= set(est.history_)
    np.testing.assert_allclose(est.history_["train_loss"], est.history_["debiased_loss"] + est.history_["biased_loss"],
                               rtol=1e-5)


# -- resuming ---------------------------------------------------------------------------------------
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


def _trainer(X, y, callbacks=()):
    gen = torch.Generator().manual_seed(0)
    pair = BiasedDebiasedPair(make_head(X.shape[1], 2, (), torch.float32, gen),
                              make_head(X.shape[1], 2, (), torch.float32, gen))
    options = TrainOptions(solver="adamw", max_iter=6, batch_size=32, learning_rate=1e-3)
    return Trainer(pair, ArrayBatches(X, y), LfFObjective(y, 2), options, seed=5, callbacks=list(callbacks))


def test_state_round_trip_continues_with_the_moving_averages():
    X, y, _ = make_spurious_features(300, random_state=0)
    full = _trainer(X, y).fit()
    first = _trainer(X, y, [_StopAfter(3)]).fit()
    first.stopped_early = False  # a kill, not an early stop
    state = first.state_dict()
    assert state["objective"]["seen"].all() and state["objective"]["ema_b"].shape == (300,)
    resumed = _trainer(X, y, [_LoadAtBegin(state)]).fit()
    for a, b in zip(full.raw_module.parameters(), resumed.raw_module.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(full.objective.ema_b, resumed.objective.ema_b)
    assert torch.equal(full.objective.ema_d, resumed.objective.ema_d)
    # without the averages the resumed run would differ: they are what the checkpoint must keep
    state["objective"] = {k: torch.zeros_like(v) for k, v in state["objective"].items()}
    other = _trainer(X, y, [_LoadAtBegin(state)]).fit()
    assert not torch.equal(full.objective.ema_b, other.objective.ema_b)


class _Crash(Callback):
    def on_epoch_end(self, trainer):
        if trainer.epoch == 2:
            raise KeyboardInterrupt("killed")
        return False


def test_checkpointed_fit_resumes_bit_for_bit(tmp_path):
    X, y, _ = make_spurious_features(300, random_state=0)
    params = dict(max_iter=4, batch_size=32, learning_rate=1e-3, random_state=1)
    ref = LfFClassifier(**params).fit(X, y)
    with pytest.raises(KeyboardInterrupt):
        LfFClassifier(**params, callbacks=[Checkpoint(tmp_path), _Crash()]).fit(X, y)
    assert (tmp_path / "lff.pt").exists()
    resumed = LfFClassifier(**params, callbacks=[Checkpoint(tmp_path)]).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, ref.coef_)
    np.testing.assert_array_equal(resumed.biased_coefs_[0], ref.biased_coefs_[0])
    np.testing.assert_array_equal(resumed.sample_weights_, ref.sample_weights_)


# -- fine-tuning --------------------------------------------------------------------------------------
def test_finetuning_path_trains_what_the_head_trains():
    from _vectors import finetune_like_head

    X, y, _ = make_spurious_features(400, random_state=0)
    method = LfFClassifier(max_iter=3, batch_size=64, learning_rate=1e-2, random_state=4)
    head = method.fit(X, y)
    ft = finetune_like_head(method, X, y)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.loss_curve_ == head.loss_curve_
    np.testing.assert_array_equal(ft.method_.sample_weights_, head.sample_weights_)


def test_finetuning_path_holds_out_the_same_rows_without_x_val():
    from _vectors import finetune_like_head

    X, y, _ = make_spurious_features(1000, random_state=0)  # ~500 a class: 10 % holds 20+ of each
    method = LfFClassifier(max_iter=3, batch_size=64, learning_rate=1e-2, random_state=4)
    head = method.fit(X, y)
    ft = finetune_like_head(method, X, y)
    assert head.validation_scores_ is not None and ft.validation_scores_ is not None
    assert head.sample_weights_.shape == (900,)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.best_iteration_ == head.best_iteration_


# -- the effect ---------------------------------------------------------------------------------------
def test_lff_upweights_the_rows_that_contradict_the_shortcut():
    # Nam et al. (2020), Fig. 3 and Table 1: the biased head learns the easy attribute (here: features of
    # variance 1 against 100), fails on the rows where it disagrees with the label, and those rows get
    # the large weights, so the debiased head leans less on the attribute and fits those groups better
    data = make_spurious_benchmark(3000, 200, 1000, random_state=0)
    tr, te = data.train, data.test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        erm = ERMClassifier().fit(tr.X, tr.y)
        lff = LfFClassifier(learning_rate=1e-3, max_iter=10, early_stopping=False, random_state=0).fit(tr.X, tr.y)
    minority = np.isin(tr.group_labels, [1, 2])
    W = lff.sample_weights_
    assert W[minority].mean() > 10 * W[~minority].mean(), (W[minority].mean(), W[~minority].mean())

    def reliance(coef):  # mean weight on the spurious block over mean weight on the core block (signed)
        d = coef[:, 1] - coef[:, 0]
        return d[100:200].mean() / d[:100].mean()

    # GCE makes the biased head lean on the attribute more than ERM does; the debiased head, trained on
    # the rows that contradict it, leans less (here: against it, the over-correction LfF is known for)
    assert reliance(lff.biased_coefs_[0]) > reliance(erm.coef_.T) > reliance(lff.coef_.T)
    test_minority = np.isin(te.group_labels, [1, 2])
    assert lff.score(te.X[test_minority], te.y[test_minority]) > erm.score(te.X[test_minority], te.y[test_minority]) + 0.2


_DDP = """
import os, sys
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from _vectors import Rows, Vectors
from skgroup import LfFClassifier
from skgroup.datasets import make_spurious_features
from skgroup.finetune import FineTuneClassifier

X, y, _ = make_spurious_features(128, n_core=4, n_spurious=4, random_state=0)
ft = FineTuneClassifier(Vectors(), method=LfFClassifier(), max_iter=3, batch_size=16, solver="sgd",
                        learning_rate=0.05, weight_decay=0.0, warmup=0, grad_clip=None, random_state=0)
ft.fit(Rows(X), y)
if int(os.environ.get("RANK", 0)) == 0:
    np.save(sys.argv[1], np.concatenate([ft.model_.head.weight.detach().numpy().ravel(), ft.method_.sample_weights_]))
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="no gloo backend")
def test_two_processes_update_the_averages_of_the_global_batch(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.npy"), str(tests)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "two.npy"), str(tests)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    # the head and every row's W (from the moving averages): the same as one process on the whole batches
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"), rtol=1e-5, atol=1e-6)


def test_finetuning_a_text_backbone_keeps_the_debiased_model(tmp_path):
    pytest.importorskip("transformers")
    from feature_extraction._testing import make_tiny_bert, random_sentences
    from skgroup.finetune import FineTuneClassifier
    from skgroup.finetune._model import BackboneClassifier

    folder = make_tiny_bert(tmp_path / "bert")
    texts = random_sentences(40, seed=0)
    y = np.array([int("not" in t.split() or "no" in t.split()) for t in texts])
    ft = FineTuneClassifier(str(folder), method=LfFClassifier(), max_iter=1, batch_size=8, learning_rate=1e-3,
                            random_state=0).fit(texts, y)
    assert isinstance(ft.model_, BackboneClassifier)  # the debiased model alone, a model of the usual shape
    assert not hasattr(ft.method_, "biased_coefs_") and ft.method_.sample_weights_.shape == (40,)
    assert ft.predict_proba(texts[:3]).shape == (3, 2) and (ft.save(tmp_path / "saved") / "head.safetensors").exists()


def test_without_x_val_the_epoch_is_chosen_on_held_out_rows_on_the_law_table(data_home):
    # the law-school table (89 % pass): the debiased head's last of 10 epochs predicts the minority class
    # almost everywhere, worse than the constant answer; the epoch chosen on held-out rows is not
    from sklearn.metrics import balanced_accuracy_score

    from skgroup.datasets import load_law_school
    from skgroup.metrics import below_majority

    law = load_law_school(data_home)
    tr, te = law.train, law.test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = LfFClassifier(early_stopping=False, random_state=0).fit(tr.X, tr.y)
        chosen = LfFClassifier(random_state=0).fit(tr.X, tr.y)
    assert below_majority(te.y, last.predict(te.X))[0]
    assert chosen.validation_scores_["worst_class_accuracy"].shape == (10,)
    assert not below_majority(te.y, chosen.predict(te.X))[0]
    assert balanced_accuracy_score(te.y, chosen.predict(te.X)) > 0.55
