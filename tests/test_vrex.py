"""V-REx (Krueger et al., 2021) as DomainBed computes it: the variance of the environments' risks by hand and
against a transcription of DomainBed's ``VREx.update``, its gradient, the anneal, the effect on the synthetic
benchmark, and fine-tuning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skgroup import ERMClassifier, VRExClassifier, worst_group_accuracy
from skgroup.datasets import make_spurious_benchmark, make_spurious_features
from skgroup.estimators import SingleEnvironmentWarning
from skgroup.objectives import BatchTerms, CrossEntropy, EnvironmentMean, Objective, VRExPenalty


def _terms(losses, idx):
    return BatchTerms(None, None, None, idx, losses, CrossEntropy())


def domainbed_vrex(logits, y, env):
    """DomainBed's ``VREx.update`` (domainbed/algorithms.py), transcribed: one minibatch per environment."""
    envs = torch.unique(env)
    losses = torch.zeros(len(envs), dtype=logits.dtype)
    for i, e in enumerate(envs):
        losses[i] = F.cross_entropy(logits[env == e], y[env == e])
    mean = losses.mean()
    penalty = ((losses - mean) ** 2).mean()
    return mean, penalty


def test_variance_by_hand():
    # environment 0: losses 1, 3 -> risk 2; environment 1: 2, 6 -> 4; environment 2 absent.
    # mean risk 3, variance ((2 - 3)^2 + (4 - 3)^2) / 2 = 1
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    env = np.array([0, 1, 0, 1, 2])
    idx = torch.tensor([0, 1, 2, 3])
    assert VRExPenalty(env)(_terms(losses, idx)).item() == pytest.approx(1.0)
    assert EnvironmentMean(env)(losses, idx).item() == pytest.approx(3.0)
    # with the third environment present (a row of loss 9): risks 2, 4, 9, mean 5, variance (9 + 1 + 16) / 3
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0, 9.0], dtype=torch.float64)
    assert VRExPenalty(env)(_terms(losses, torch.arange(5))).item() == pytest.approx(26 / 3)
    # one environment: no variance
    assert VRExPenalty(np.zeros(4, dtype=int))(_terms(losses[:4], idx)).item() == 0.0


def test_objective_and_gradient_match_domainbed():
    rng = np.random.default_rng(0)
    env_of_row = rng.integers(0, 3, size=80)
    idx = torch.as_tensor(rng.choice(80, size=30, replace=False))
    logits = torch.as_tensor(rng.normal(size=(30, 3)), dtype=torch.float64).requires_grad_()
    y = torch.as_tensor(rng.integers(0, 3, size=30))
    objective = Objective(CrossEntropy(), EnvironmentMean(env_of_row), [VRExPenalty(env_of_row, weight=10.0)])
    ours = objective(logits, y, idx)
    mean, penalty = domainbed_vrex(logits, y, torch.as_tensor(env_of_row)[idx])
    torch.testing.assert_close(ours, mean + 10.0 * penalty)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(mean + 10.0 * penalty, logits)
    torch.testing.assert_close(g_ours, g_ref)
    # d Var / d R_e = 2 (R_e - mean) / E: checked against finite differences
    pen = VRExPenalty(env_of_row)
    assert torch.autograd.gradcheck(
        lambda z: pen(BatchTerms(z, z, y, idx, F.cross_entropy(z, y, reduction="none"), CrossEntropy())), (logits,))


def test_anneal_is_two_stages(monkeypatch):
    import skgroup.estimators._base as base

    X, y, g = make_spurious_features(300, random_state=0)
    stages = []
    run_plan = base.run_plan

    class Spy:
        """Records the stages a plan yields and trains them on the real executor."""

        def __init__(self, inner):
            self.inner = inner

        def train(self, stage):
            stages.append(stage)
            return self.inner.train(stage)

    monkeypatch.setattr(base, "run_plan", lambda plan, executor: run_plan(plan, Spy(executor)))
    clf = VRExClassifier(penalty_anneal_iters=4, max_iter=2, batch_size=50, random_state=0)
    clf.fit(X, y, group_labels=g)
    first, second = stages
    assert (first.name, second.name) == ("anneal", "vrex")
    assert first.objective.penalties[0].weight == 1.0 and second.objective.penalties[0].weight == clf.penalty_weight
    assert first.options.max_iter == 1 and first.sampler.n_rows == 4 * 50 and not first.validate
    assert second.options.max_iter == 2 and second.init is not None and second.init.name == "anneal"


def test_group_risks_equalised_on_the_synthetic_benchmark():
    # with the (class, attribute) groups as environments the variance penalty equalises the groups' risks:
    # the minority groups' accuracy rises well above ERM's
    data = make_spurious_benchmark(n_train=2000, random_state=0)
    tr, te = data.train, data.test
    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    vrex = VRExClassifier(random_state=0).fit(tr.X, tr.y, group_labels=tr.group_labels)
    wga = {name: worst_group_accuracy(te.y, m.predict(te.X), group_labels=te.group_labels)
           for name, m in (("erm", erm), ("vrex", vrex))}
    assert wga["vrex"] >= wga["erm"] + 0.1, wga


def test_without_group_labels_the_classes_are_the_environments():
    X, y, g = make_spurious_features(300, random_state=0)
    clf = VRExClassifier(penalty_anneal_iters=2, max_iter=1, random_state=0).fit(X, y)
    assert clf.environment_names_ == (0, 1)
    with pytest.warns(SingleEnvironmentWarning, match="single one"):
        VRExClassifier(penalty_anneal_iters=2, max_iter=1, environments="attribute", random_state=0).fit(X, y)


def test_fine_tuning_trains_what_the_head_trains():
    pytest.importorskip("transformers")
    from test_finetune import Rows, Vectors

    from skgroup.finetune import FineTuneClassifier

    X, y, g = make_spurious_features(400, random_state=0)
    method = VRExClassifier(penalty_anneal_iters=5, max_iter=2, batch_size=64, learning_rate=1e-2, random_state=4)
    head = method.fit(X, y, group_labels=g)
    ft = FineTuneClassifier(Vectors(), method=method, max_iter=2, batch_size=64, learning_rate=1e-2,
                            weight_decay=0.0, l2_reg=method.l2_reg, lr_schedule="constant", warmup=0,
                            grad_clip=None, random_state=4).fit(Rows(X), y, group_labels=g)
    np.testing.assert_array_equal(ft.model_.head.weight.detach().numpy(), head.coef_)
