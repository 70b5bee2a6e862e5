"""The class-imbalance losses (focal, LDAM, logit-adjusted / Balanced Softmax), generalized
cross-entropy and the effective-number weights: values worked out by hand, gradients through
full-batch L-BFGS's path against autograd of plain transcriptions of the reference code."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning

from skgroup import ERMClassifier
from skgroup.engine._lbfgs import LinearHeadEvaluator
from skgroup.objectives import (
    LOSSES,
    FocalLoss,
    GeneralizedCrossEntropy,
    LDAMLoss,
    LogitAdjustedLoss,
    Objective,
    Weighted,
    effective_number_weights,
    make_loss,
)

T64 = dict(dtype=torch.float64)


# -- values by hand ------------------------------------------------------------------------------

def test_focal_by_hand():
    z, y = torch.tensor([[2.0, 0.0], [0.0, 0.0]], **T64), torch.tensor([0, 1])
    # row 0: p = 1 / (1 + e^-2), CE = log(1 + e^-2); row 1: p = 1/2, CE = log 2
    p0, ce0 = 1 / (1 + math.exp(-2)), math.log1p(math.exp(-2))
    for gamma in (0.0, 1.0, 2.0, 0.5):
        expected = [(1 - p0) ** gamma * ce0, 0.5**gamma * math.log(2)]
        np.testing.assert_allclose(FocalLoss(gamma)(z, y).numpy(), expected, rtol=1e-12)
    assert float(FocalLoss(2.0)(z, y)[0]) == pytest.approx(0.0018035, abs=5e-7)  # 0.119203^2 * 0.126928
    # gamma = 0 is cross-entropy on any batch
    z3 = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), **T64)
    y3 = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(FocalLoss(0.0)(z3, y3), F.cross_entropy(z3, y3, reduction="none"))


def test_focal_is_finite_with_finite_gradient_on_exactly_fitted_rows():
    # p_y = 1 in float64: (1 - p)^(gamma - 1) is infinite for gamma < 1; the limit of the gradient is 0
    z = torch.tensor([[60.0, -60.0], [0.0, 0.0]], requires_grad=True, **T64)
    for gamma in (0.0, 0.5, 2.0):
        loss = FocalLoss(gamma)(z, torch.tensor([0, 0])).sum()
        (g,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.all(torch.isfinite(g)) and torch.all(g[0].abs() < 1e-30)


def test_ldam_by_hand():
    # counts (16, 1): n^-1/4 = (1/2, 1), scaled to max_margin 0.5 -> margins (0.25, 0.5)
    loss = LDAMLoss(max_margin=0.5, scale=2.0, class_counts=[16, 1])
    np.testing.assert_allclose(loss.margins([16, 1]), [0.25, 0.5], rtol=1e-15)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]], **T64)
    # y = 1: s * (1, 0 - 0.5) = (2, -1): CE = log(e^2 + e^-1) + 1 = 3 + log(1 + e^-3)
    # y = 0: s * (1 - 0.25, 0) = (1.5, 0): CE = log(1 + e^-1.5)
    expected = [3 + math.log1p(math.exp(-3)), math.log1p(math.exp(-1.5))]
    np.testing.assert_allclose(loss(z, torch.tensor([1, 0])).numpy(), expected, rtol=1e-12)
    assert expected[0] == pytest.approx(3.048587, abs=1e-6)
    # bound from training labels: the same margins as from the counts
    bound = LDAMLoss(0.5, 2.0).bind(np.r_[np.zeros(16, int), 1], 2)
    torch.testing.assert_close(bound(z, torch.tensor([1, 0])), torch.tensor(expected, **T64))
    # an empty class gets margin 0 (SubpopBench: its size counts as infinite)
    np.testing.assert_allclose(LDAMLoss(0.5).margins([16, 0, 1]), [0.25, 0.0, 0.5], rtol=1e-15)


def test_logit_adjusted_by_hand():
    z, y = torch.zeros(2, 2, **T64), torch.tensor([1, 0])
    # priors (3/4, 1/4): at zero logits p = priors, CE = -log prior
    np.testing.assert_allclose(LogitAdjustedLoss(1.0, class_counts=[3, 1])(z, y).numpy(),
                               [math.log(4), math.log(4 / 3)], rtol=1e-12)
    # tau = 2: p_1 = (1/16) / (9/16 + 1/16) = 1/10
    assert float(LogitAdjustedLoss(2.0, class_counts=[3, 1])(z, y)[0]) == pytest.approx(math.log(10), rel=1e-12)
    # Balanced Softmax's z + log n_c is the same loss (a constant per row); tau = 0 is cross-entropy
    z3 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), **T64)
    y3 = torch.tensor([0, 1, 2, 1, 0])
    counts = torch.tensor([50.0, 7.0, 3.0], **T64)
    torch.testing.assert_close(LogitAdjustedLoss(1.0, class_counts=counts.numpy())(z3, y3),
                               F.cross_entropy(z3 + counts.log(), y3, reduction="none"))
    torch.testing.assert_close(LogitAdjustedLoss(0.0, class_counts=[5, 1, 1])(z3, y3),
                               F.cross_entropy(z3, y3, reduction="none"))


def test_generalized_cross_entropy_by_hand():
    z, y = torch.zeros(1, 2, **T64), torch.tensor([0])
    assert float(GeneralizedCrossEntropy(0.5)(z, y)) == pytest.approx(2 * (1 - math.sqrt(0.5)), rel=1e-12)
    assert float(GeneralizedCrossEntropy(1.0)(z, y)) == pytest.approx(0.5, rel=1e-12)  # MAE 1 - p
    # q -> 0 is cross-entropy
    z3 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), **T64)
    y3 = torch.tensor([2, 0, 1, 1])
    torch.testing.assert_close(GeneralizedCrossEntropy(1e-9)(z3, y3), F.cross_entropy(z3, y3, reduction="none"),
                               rtol=1e-7, atol=1e-9)
    # its gradient is p_y^q times cross-entropy's (LfF's GCE2 is q times that)
    zg = z3.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(GeneralizedCrossEntropy(0.7)(zg, y3).sum(), zg)
    p_y = torch.softmax(z3, 1)[torch.arange(4), y3]
    (g_ce,) = torch.autograd.grad((F.cross_entropy(zg, y3, reduction="none") * p_y**0.7).sum(), zg)
    torch.testing.assert_close(g, g_ce)


def test_effective_number_weights_by_hand():
    # beta = 0.99, counts (100, 10): w = 0.01 / (1 - 0.99^n), normalised to sum 2
    w = np.array([0.01 / (1 - 0.99**100), 0.01 / (1 - 0.99**10)])
    np.testing.assert_allclose(effective_number_weights([100, 10], 0.99), 2 * w / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(effective_number_weights([100, 10], 0.99), [0.262116, 1.737884], atol=1e-6)
    np.testing.assert_allclose(effective_number_weights([100, 10], 0.0), [1.0, 1.0])  # no re-weighting
    inverse = np.array([1 / 100, 1 / 10])  # beta -> 1: inverse class frequency
    np.testing.assert_allclose(effective_number_weights([100, 10], 1 - 1e-12), 2 * inverse / inverse.sum(), rtol=1e-6)
    # the reference's 1 - beta^n loses digits at beta near 1; -expm1 does not
    assert effective_number_weights([1, 2], 1 - 1e-15)[0] == pytest.approx(4 / 3, rel=1e-9)
    np.testing.assert_allclose(effective_number_weights([100, 0, 10], 0.99)[1], 0.0)  # an empty class
    with pytest.raises(ValueError, match="beta must be in"):
        effective_number_weights([1, 2], 1.0)


# -- gradients through the L-BFGS path against plain transcriptions of the references ------------

def _subpopbench_focal(logits, y, gamma):
    # SubpopBench's Focal.focal_loss (and the LDAM-DRW authors' focal_loss) on per-row CE
    ce = F.cross_entropy(logits, y, reduction="none")
    p = torch.exp(-ce)
    return (1 - p) ** gamma * ce


def _authors_ldam(logits, y, cls_num_list, max_m, s):
    # the LDAM-DRW authors' LDAMLoss.forward (kaidic/LDAM-DRW losses.py), per row, on the CPU
    m_list = 1.0 / np.sqrt(np.sqrt(np.asarray(cls_num_list, dtype=np.float64)))
    m_list = torch.as_tensor(m_list * (max_m / np.max(m_list)), dtype=logits.dtype)
    index = torch.zeros_like(logits, dtype=torch.uint8)
    index.scatter_(1, y.view(-1, 1), 1)
    batch_m = torch.matmul(m_list[None, :], index.to(logits.dtype).transpose(0, 1)).view(-1, 1)
    output = torch.where(index.bool(), logits - batch_m, logits)
    return F.cross_entropy(s * output, y, reduction="none")


def _subpopbench_bsoftmax(logits, y, counts, tau=1.0):
    # SubpopBench's BSoftmax (tau = 1): logits + log(samples per class); Menon et al.: tau * log prior
    return F.cross_entropy(logits + tau * torch.as_tensor(np.log(counts), dtype=logits.dtype), y, reduction="none")


def _subpopbench_gce(logits, y, q):
    # SubpopBench's LfF.GCE ("implemented from equation")
    p = F.softmax(logits, dim=1)
    y_g = torch.gather(p, 1, torch.unsqueeze(y, 1))
    return (1 - y_g.squeeze(1) ** q) / q


CASES = {
    "focal": (lambda c: FocalLoss(2.0), lambda z, y, c: _subpopbench_focal(z, y, 2.0)),
    "focal_half": (lambda c: FocalLoss(0.5), lambda z, y, c: _subpopbench_focal(z, y, 0.5)),
    "ldam": (lambda c: LDAMLoss(0.4, 10.0, class_counts=c), lambda z, y, c: _authors_ldam(z, y, c, 0.4, 10.0)),
    "logit_adjusted": (lambda c: LogitAdjustedLoss(1.0, class_counts=c),
                       lambda z, y, c: _subpopbench_bsoftmax(z, y, c)),
    "logit_adjusted_tau2": (lambda c: LogitAdjustedLoss(2.0, class_counts=c),
                            lambda z, y, c: _subpopbench_bsoftmax(z, y, c, 2.0)),
    "gce": (lambda c: GeneralizedCrossEntropy(0.7), lambda z, y, c: _subpopbench_gce(z, y, 0.7)),
}


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_gradient_through_lbfgs_path_matches_autograd_of_the_reference(name, weighted, n_classes):
    make, reference = CASES[name]
    rng = np.random.default_rng(0)
    n, d, l2 = 40, 5, 0.3
    X = rng.normal(size=(n, d))
    prior = [0.7, 0.3] if n_classes == 2 else [0.6, 0.3, 0.1]
    y = np.r_[np.arange(n_classes), rng.choice(n_classes, n - n_classes, p=prior)]
    counts = np.bincount(y, minlength=n_classes).astype(float)
    W, b = rng.normal(size=(n_classes, d)), rng.normal(size=n_classes)
    w = rng.uniform(0.5, 3.0, size=n) if weighted else np.ones(n)
    objective = Objective(make(counts), Weighted(w) if weighted else None)
    assert objective.softmax_only  # the evaluator multiplies X with K - 1 weight differences
    ev = LinearHeadEvaluator(X, y, n_classes, objective, l2, center=False, scale=False)
    assert not ev._per_row_cross_entropy  # the loss goes through autograd on the logits
    f, g = ev.fun_grad(ev.pack(W, b))

    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    rows = reference(torch.as_tensor(X) @ Wt.T + bt, torch.as_tensor(y), counts)
    f_ref = (torch.as_tensor(w) * rows).sum() / w.sum() + 0.5 * l2 * (Wt**2).sum()
    gW, gb = torch.autograd.grad(f_ref, (Wt, bt))
    assert f == pytest.approx(float(f_ref.detach()), rel=1e-12)
    np.testing.assert_allclose(g, np.concatenate([gW.numpy().ravel(), gb.numpy()]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_softmax_only_is_true_shift_invariance(name):
    # the declared property full-batch L-BFGS relies on: a constant added to a row's logits changes nothing
    make, _ = CASES[name]
    loss = make(np.array([30.0, 5.0, 1.0]))
    assert loss.softmax_only
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), **T64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    shift = torch.randn(6, 1, generator=torch.Generator().manual_seed(4), **T64) * 5
    torch.testing.assert_close(loss(z + shift, y), loss(z, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"cross_entropy"}))
def test_every_registered_loss_converges_under_full_batch_lbfgs(name):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + 0.8 * rng.normal(size=300) > 0.9).astype(int)  # about 20% positives, overlapping
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = ERMClassifier(loss=name, l2_reg=1e-2, dtype="float64", tol=1e-8, max_iter=500).fit(X, y)
    assert est.n_iter_ < 500
    # at the optimum the objective's gradient vanishes: check it by autograd of the bound loss
    loss = make_loss(name, y, 2)
    Wt = torch.tensor(est.coef_, requires_grad=True)
    bt = torch.tensor(est.intercept_, requires_grad=True)
    f = loss(torch.as_tensor(X) @ Wt.T + bt, torch.as_tensor(y)).mean() + 0.5e-2 * (Wt**2).sum()
    grads = torch.autograd.grad(f, (Wt, bt))
    assert max(float(gr.abs().max()) for gr in grads) < 1e-6
    # and the loss changed the model: it is not cross-entropy's (the logit-adjusted loss moves the
    # intercepts only: see test_balanced_softmax.py)
    erm = ERMClassifier(l2_reg=1e-2, dtype="float64", tol=1e-8, max_iter=500).fit(X, y)
    assert np.abs(np.r_[est.coef_.ravel(), est.intercept_] - np.r_[erm.coef_.ravel(), erm.intercept_]).max() > 1e-2


# -- binding and errors ---------------------------------------------------------------------------

def test_bind_returns_a_bound_copy_and_leaves_the_parameter_alone():
    y = np.r_[np.zeros(30, int), np.ones(3, int)]
    for loss in (LDAMLoss(), LogitAdjustedLoss()):
        bound = make_loss(loss, y, 2)
        assert bound is not loss and loss.config() == bound.config()
        with pytest.raises(RuntimeError, match="class_counts=, or call bind"):
            loss(torch.zeros(1, 2), torch.tensor([0]))
        assert torch.isfinite(bound(torch.zeros(1, 2), torch.tensor([0]))).all()
    assert repr(LDAMLoss()) == "LDAMLoss(max_margin=0.5, scale=30.0, class_counts=None)"
    assert isinstance(make_loss("focal", y, 2), FocalLoss) and make_loss("focal", y, 2).gamma == 1.0


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(-1.0)
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        GeneralizedCrossEntropy(0.0)
    with pytest.raises(ValueError, match="max_margin and scale must be > 0"):
        LDAMLoss(max_margin=0.0)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        LogitAdjustedLoss(-0.5)
    with pytest.raises(ValueError, match=r"classes \[1\] \(encoded\) have no training rows"):
        LogitAdjustedLoss().bind(np.zeros(5, int), 2)
    with pytest.raises(ValueError, match="class_counts must be 3 finite non-negative"):
        LDAMLoss(class_counts=[3, 1]).bind(np.array([0, 1, 2]), 3)
