"""Mixup: the batch transform by hand, its Beta draws, the mixed loss and gradient, the engine's mixing of
features for token inputs, the fine-tuning path, and an effect whose direction is known."""

import numpy as np
import pytest
import torch
from scipy import stats

from skgroup import ERMClassifier, MixupClassifier
from skgroup.datasets import make_spurious_features
from skgroup._samplers import Sampler
from skgroup.engine import ArrayBatches, Trainer, TrainOptions
from skgroup.estimators._mixup import MixupTransform
from skgroup.objectives import MixedTargets, Objective


def _identity_batch(m, dtype=torch.float64):
    """Row i is e_i: a mixed row lam e_i + (1 - lam) e_j shows its partner j and lam."""
    return torch.eye(m, dtype=dtype), torch.arange(m) % 3, torch.arange(m)


def test_transform_mixes_the_whole_batch_with_one_lambda_and_a_permutation():
    m = 9
    xb, yb, idx = _identity_batch(m)
    torch.manual_seed(0)
    mixed, targets = MixupTransform(0.7)(xb, yb, idx)
    lam = float(targets.lam[0])
    assert torch.all(targets.lam == lam) and 0 < lam < 1
    # read the partner of every row off the mixed identity rows
    perm = []
    for i in range(m):
        off = [j for j in range(m) if j != i and mixed[i, j] != 0]
        if off:  # x_i mixed with x_j: lam at i, 1 - lam at j
            (j,) = off
            assert mixed[i, i] == pytest.approx(lam, abs=1e-15)
            assert mixed[i, j] == pytest.approx(1 - lam, abs=1e-15)
        else:  # paired with itself: the row is unchanged
            j = i
            assert mixed[i, i] == pytest.approx(1.0, abs=1e-15)
        perm.append(j)
    assert sorted(perm) == list(range(m))  # a permutation: every row is some row's partner once
    assert torch.equal(targets.y_a, yb) and torch.equal(targets.y_b, yb[torch.tensor(perm)])
    # SubpopBench's mixup_data draws lam first, then the permutation; here from torch's generator
    torch.manual_seed(0)
    conc = torch.tensor([0.7], dtype=torch.float64)
    assert lam == pytest.approx(float(torch.distributions.Beta(conc, conc).sample()), abs=0)
    assert torch.randperm(m).tolist() == perm


def test_transform_is_reproducible_from_the_torch_seed():
    xb, yb, idx = _identity_batch(6)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(MixupTransform(0.2)(xb, yb, idx))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1].lam, outs[1][1].lam)


@pytest.mark.parametrize("alpha", [0.2, 2.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
    xb, yb, idx = _identity_batch(2)
    transform = MixupTransform(alpha)
    torch.manual_seed(0)
    lams = np.array([float(transform(xb, yb, idx)[1].lam[0]) for _ in range(3000)])
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    other = 2.0 if alpha == 0.2 else 0.2  # the test can tell the two apart
    assert stats.kstest(lams, stats.beta(other, other).cdf).pvalue < 1e-6


def test_mixed_targets_loss_and_gradient_by_hand():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], dtype=torch.float64, requires_grad=True)
    targets = MixedTargets(torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([0.3, 0.8], dtype=torch.float64))
    value = Objective()(z, targets, torch.arange(2))
    value.backward()
    zn = z.detach().numpy()
    p = np.exp(zn) / np.exp(zn).sum(1, keepdims=True)
    soft = np.array([[0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])  # lam parts y_a, 1 - lam parts y_b
    expected = -(soft * np.log(p)).sum(1).mean()
    assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(z.grad.numpy(), (p - soft) / 2, rtol=1e-12)


class _Tokens(torch.nn.Module):
    """Integer token ids -> mean embedding -> a linear head (what a text backbone with a head looks like)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(10, 4, mode="mean")
        self.head = torch.nn.Linear(4, 2)

    def features(self, tokens):
        return self.embed(tokens)

    def forward(self, tokens):
        return self.head(self.features(tokens))


class _Recording:
    """A batch transform (where='auto') that records what it is given and mixes with a fixed pairing."""

    where = "auto"

    def __init__(self):
        self.seen = []

    def __call__(self, xb, yb, idx):
        self.seen.append(xb.detach().clone())
        partner = torch.arange(xb.shape[0]).flip(0)
        lam = torch.full((xb.shape[0],), 0.25)
        return 0.25 * xb + 0.75 * xb[partner], MixedTargets(yb, yb[partner], lam)


class _RecordingObjective(Objective):
    def __call__(self, output, y, idx):
        self.targets = y
        return super().__call__(output, y, idx)


class _InOrder(Sampler):
    def __init__(self, n):
        self.n = n

    def epoch(self, rng):
        return np.arange(self.n)


def _one_step(module, X, y, transform, objective):
    options = TrainOptions(solver="sgd", max_iter=1, batch_size=X.shape[0], learning_rate=0.0)
    return Trainer(module, ArrayBatches(X, y, dtype=X.dtype), objective, options, sampler=_InOrder(X.shape[0]),
                   seed=0, batch_transform=transform).fit()


def test_token_inputs_are_mixed_at_the_head_input():
    torch.manual_seed(0)
    module = _Tokens()
    tokens = np.random.RandomState(0).randint(0, 10, size=(6, 5))
    y = np.array([0, 1, 0, 1, 1, 0])
    transform, objective = _Recording(), _RecordingObjective()
    heads_input = []
    module.head.register_forward_hook(lambda layer, inp, out: heads_input.append(inp[0].detach().clone()))
    _one_step(module, tokens, y, transform, objective)
    with torch.no_grad():
        feats = module.features(torch.from_numpy(tokens))
    # the transform saw the pooled features, not the token ids, and the head got their mixture
    assert len(transform.seen) == 1 and transform.seen[0].is_floating_point()
    torch.testing.assert_close(transform.seen[0], feats)
    torch.testing.assert_close(heads_input[0], 0.25 * feats + 0.75 * feats.flip(0))
    assert isinstance(objective.targets, MixedTargets)
    assert objective.targets.y_b.tolist() == y[::-1].tolist()


def test_float_inputs_are_mixed_before_the_forward_pass():
    X = np.random.RandomState(0).randn(6, 3).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    module = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    transform = _Recording()
    _one_step(module, X, y, transform, _RecordingObjective())
    torch.testing.assert_close(transform.seen[0], torch.from_numpy(X))  # the inputs, not the hidden layer


def test_lbfgs_refuses_mixup():
    X, y, _ = make_spurious_features(200, random_state=0)
    with pytest.raises(ValueError, match="solver"):
        MixupClassifier(solver="lbfgs").fit(X, y)


def test_mixup_lowers_training_confidence():
    # Zhang et al. (2018) Sec. 3.4 and Thulasidasan et al. (2019): the soft targets of mixed rows keep
    # the model from the extreme probabilities ERM reaches on the same optimiser path
    X, y, _ = make_spurious_features(1500, random_state=0)
    common = dict(solver="adamw", max_iter=8, batch_size=64, learning_rate=1e-3, l2_reg=1e-4, random_state=0)
    erm = ERMClassifier(**common).fit(X, y)
    mix = MixupClassifier(alpha=1.0, **common).fit(X, y)
    conf_erm = erm.predict_proba(X).max(1).mean()
    conf_mix = mix.predict_proba(X).max(1).mean()
    assert conf_mix < conf_erm - 0.03, (conf_mix, conf_erm)
    assert mix.score(X, y) > 0.9  # still a classifier of the data


def test_finetuning_path_trains_what_the_head_trains():
    from _vectors import finetune_like_head

    X, y, _ = make_spurious_features(400, random_state=0)
    method = MixupClassifier(alpha=0.4, max_iter=3, batch_size=64, learning_rate=1e-2, lr_schedule="constant",
                             random_state=4)
    head = method.fit(X, y)
    ft = finetune_like_head(method, X, y)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
    assert ft.loss_curve_ == head.loss_curve_


def test_finetuning_a_text_backbone_mixes_pooled_features(tmp_path):
    pytest.importorskip("transformers")
    from feature_extraction._testing import make_tiny_bert, random_sentences
    from skgroup.finetune import FineTuneClassifier

    folder = make_tiny_bert(tmp_path / "bert")
    texts = random_sentences(48, seed=0)
    y = np.array([int("not" in t.split() or "no" in t.split()) for t in texts])
    ft = FineTuneClassifier(str(folder), method=MixupClassifier(alpha=1.0), max_iter=1, batch_size=16,
                            learning_rate=1e-3, random_state=0).fit(texts, y)
    assert np.isfinite(ft.loss_curve_).all() and ft.predict_proba(texts[:3]).shape == (3, 2)
