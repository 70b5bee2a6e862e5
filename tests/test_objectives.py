"""Objectives as loss x reduction x penalties: the composition by hand, and the loss parameter."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skgroup import ERMClassifier, GroupDROClassifier
from skgroup.datasets import make_spurious_features
from skgroup.objectives import (
    CVaR,
    CrossEntropy,
    GroupDRO,
    Loss,
    Mean,
    Objective,
    Penalty,
    Weighted,
    make_loss,
)


class Scaled(Loss):
    """c times cross-entropy."""

    softmax_only = True

    def __init__(self, c=2.0):
        self.c = c

    def __call__(self, logits, y):
        return self.c * F.cross_entropy(logits, y, reduction="none")


class LogitNorm(Penalty):
    """Mean squared logit, a penalty of the whole batch."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, terms):
        return (terms.logits**2).mean()


def test_composition_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    idx = torch.tensor([0, 1, 2, 3])
    ce = -torch.log_softmax(logits, 1)[torch.arange(4), y]
    w = np.array([1.0, 2.0, 3.0, 2.0])
    obj = Objective(Scaled(3.0), Weighted(w), [LogitNorm(0.5)])
    expected = (torch.as_tensor(w / w.mean()) * 3 * ce).mean() + 0.5 * (logits**2).mean()
    assert float(obj(logits, y, idx)) == pytest.approx(float(expected), rel=1e-12)
    # last_terms: the reduced loss, then each penalty unweighted
    np.testing.assert_allclose(obj.last_terms.numpy(), [float(expected - 0.5 * (logits**2).mean()),
                                                         float((logits**2).mean())], rtol=1e-12)
    # CVaR of cross-entropy: the mean of the top half
    top = torch.sort(ce, descending=True).values[:2].mean()
    assert float(Objective(reduction=CVaR(0.5))(logits, y, idx)) == pytest.approx(float(top), rel=1e-12)
    # a structured output: the objective reads its logits, the penalty the whole output
    out = type("Out", (), {"logits": logits})()
    assert float(Objective(penalties=[LogitNorm(1.0)])(out, y, idx)) == pytest.approx(
        float(ce.mean() + (logits**2).mean()), rel=1e-12)


def test_penalty_of_weight_zero_is_not_evaluated():
    class Broken(Penalty):
        weight = 0.0

        def __call__(self, terms):
            raise AssertionError("evaluated")

    obj = Objective(penalties=[Broken()])
    logits, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    assert float(obj(logits, y, torch.arange(3))) == pytest.approx(np.log(2))


def test_group_dro_state_goes_through_the_objective():
    membership = np.eye(2, dtype=bool)[[0, 1, 1]]
    obj = Objective(reduction=GroupDRO(membership, eta=1.0))
    obj(torch.tensor([[0.0, 5.0], [0.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1, 1]), torch.arange(3))
    state = obj.state_dict()
    fresh = Objective(reduction=GroupDRO(membership, eta=1.0))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.reduction.q, obj.reduction.q)
    assert fresh.reduction.q[0] > 0.5  # the group with the higher loss gained weight


def test_loss_parameter_reaches_the_objective():
    X, y, g = make_spurious_features(400, random_state=0)
    # 2 CE + (2 l2)/2 ||W||^2 = 2 (CE + l2/2 ||W||^2): the same minimiser, through the autograd path of L-BFGS
    a = ERMClassifier(l2_reg=1e-2, tol=1e-9, max_iter=500, dtype="float64").fit(X, y)
    b = ERMClassifier(loss=Scaled(2.0), l2_reg=2e-2, tol=1e-9, max_iter=500, dtype="float64").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-5)
    # a loss that is identically 0: Group DRO's head never leaves its zero start
    zero = GroupDROClassifier(loss=Scaled(0.0), max_iter=2, batch_size=64, random_state=0).fit(X, y, group_labels=g)
    assert np.all(zero.coef_ == 0)


def test_make_loss_names_the_fix_and_never_changes_the_parameter():
    y = np.array([0, 0, 1])
    assert isinstance(make_loss(None, y, 2), CrossEntropy)
    assert isinstance(make_loss("cross_entropy", y, 2), CrossEntropy)
    with pytest.raises(ValueError, match="not a known loss.*cross_entropy"):
        make_loss("crossentropy", y, 2)
    with pytest.raises(TypeError, match="loss must be None"):
        make_loss(F.cross_entropy, y, 2)
    with pytest.raises(TypeError, match="Loss"):
        Objective(loss="cross_entropy")
    with pytest.raises(TypeError, match="Reduction"):
        Objective(reduction=np.mean)
    assert repr(Objective(Scaled(2.0), Mean())) == "Objective(Scaled(c=2.0), Mean())"


def test_batch_transform_and_mixed_targets_by_hand():
    from skgroup.engine import ArrayBatches, Trainer, TrainOptions, make_head
    from skgroup.objectives import MixedTargets

    # mixed targets: lam * loss(z, y_a) + (1 - lam) * loss(z, y_b), row by row
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    lam = torch.tensor([0.25, 1.0])
    y_a, y_b = torch.tensor([0, 0]), torch.tensor([1, 1])
    ce = lambda y: F.cross_entropy(logits, y, reduction="none")  # noqa: E731
    expected = (lam * ce(y_a) + (1 - lam) * ce(y_b)).mean()
    got = Objective()(logits, MixedTargets(y_a, y_b, lam), torch.arange(2))
    assert float(got) == pytest.approx(float(expected), rel=1e-6)

    # the loop applies the transform to every training batch, before the forward pass
    X, y, _ = make_spurious_features(200, random_state=0)
    seen = []

    def flip(xb, yb, idx):
        seen.append(idx.clone())
        return xb, 1 - yb  # train on the opposite labels

    module = make_head(X.shape[1], 2, (), torch.float32, torch.Generator().manual_seed(0))
    opts = TrainOptions(solver="adamw", max_iter=20, batch_size=50, learning_rate=0.05)
    Trainer(module, ArrayBatches(X.astype(np.float32), y), Objective(), opts, batch_transform=flip).fit()
    pred = module(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    assert len(seen) == 20 * 4 and np.mean(pred == y) < 0.2
    with pytest.raises(ValueError, match="lbfgs.*cannot transform"):
        Trainer(module, ArrayBatches(X.astype(np.float32), y), Objective(), TrainOptions(), batch_transform=flip).fit()


def test_captured_features_are_the_last_layers_input():
    from skgroup.engine import ArrayBatches, Trainer, TrainOptions, make_head

    X, y, _ = make_spurious_features(64, random_state=0)
    X = X.astype(np.float32)
    module = make_head(X.shape[1], 2, (5,), torch.float32, torch.Generator().manual_seed(0))
    got = []

    class Spy(Penalty):
        weight = 1e-12

        def __call__(self, terms):
            got.append((terms.output.features.detach(), terms.idx))
            return terms.output.features.sum()

    Trainer(module, ArrayBatches(X, y), Objective(penalties=[Spy()]),
            TrainOptions(solver="adamw", max_iter=1, batch_size=64, learning_rate=0.0), capture_features=True).fit()
    features, idx = got[0]
    hidden = torch.relu(module[0](torch.as_tensor(X[idx.numpy()])))
    torch.testing.assert_close(features, hidden.detach())


def test_linear_reductions_give_their_row_weights():
    # Mean and Weighted are w @ losses with weights independent of the losses (worked by hand);
    # CVaR and Group DRO are not linear and give None
    import torch

    from skgroup.objectives import CVaR, GroupDRO, Mean, Weighted

    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    idx = torch.tensor([0, 2, 3])
    w = Mean().row_weights(idx, 3)
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert float(w @ losses) == pytest.approx(float(Mean()(losses, idx)))
    red = Weighted([1.0, 5.0, 2.0, 3.0])  # normalised by the mean weight 11/4
    w = red.row_weights(idx, 3)
    assert torch.allclose(w, torch.tensor([4 / 11, 8 / 11, 12 / 11], dtype=torch.float64) / 3)
    assert float(w @ losses) == pytest.approx(float(red(losses, idx)))  # (4 + 16 + 48) / 33
    assert float(w @ losses) == pytest.approx(68 / 33)
    assert CVaR(0.5).row_weights(idx, 3) is None
    assert GroupDRO(np.eye(2, dtype=bool)[[0, 1, 1, 0]]).row_weights(idx, 3) is None

    class Squared(Mean):  # a subclass that changes the value is not taken for a mean
        def __call__(self, losses, idx):
            return (losses**2).mean()

    assert Squared().row_weights(idx, 3) is None
