import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skgroup.objectives import CVaR, Objective, cvar_of_losses
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import ERMClassifier
from skgroup.estimators._cvar import CVaRClassifier, DegenerateCVaRWarning
from skgroup.metrics import worst_group_accuracy


# the full-batch instance at alpha=0.5: at small alpha the check's overlapping blobs are in
# the degenerate regime, where L-BFGS correctly finds the zero head (logits ~1e-7) and
# predict / decision_function can disagree at rounding level
# (the default minibatch configuration is checked in test_common.py)
@parametrize_with_checks([CVaRClassifier(alpha=0.5, solver="lbfgs", max_iter=100)])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        # random check data is often in the degenerate regime at alpha=0.05; the warning is right
        warnings.simplefilter("ignore", DegenerateCVaRWarning)
        check(estimator)


@pytest.fixture(scope="module")
def bench():
    return make_spurious_benchmark(3000, 1000, 2000, random_state=0)


# -- mechanism -------------------------------------------------------------


def test_cvar_of_a_fixed_batch_is_the_top_alpha_mean():
    losses = torch.tensor([0.1, 0.5, 2.0, 1.0, 0.3], dtype=torch.float64)
    # alpha m = 2.5: the two largest in full, half of the third, divided by 2.5
    assert float(cvar_of_losses(losses, 0.5)) == pytest.approx((2.0 + 1.0 + 0.5 * 0.5) / 2.5)
    assert float(cvar_of_losses(losses, 0.4)) == pytest.approx((2.0 + 1.0) / 2)  # alpha m = 2
    assert float(cvar_of_losses(losses, 1.0)) == pytest.approx(losses.mean().item())
    assert float(cvar_of_losses(losses, 0.1)) == pytest.approx(2.0)  # alpha m < 1: the max


def test_cvar_gradient_reaches_only_the_top_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 3.0], [1.0, 1.0]], requires_grad=True)
    y = torch.tensor([1, 0, 1, 0, 1])
    loss = Objective(reduction=CVaR(0.5))(logits, y, torch.arange(5))
    assert loss.requires_grad
    per_row = torch.nn.functional.cross_entropy(logits.detach(), y, reduction="none")
    order = torch.argsort(per_row, descending=True)
    expected = (per_row[order[:2]].sum() + 0.5 * per_row[order[2]]) / 2.5
    assert loss.detach().item() == pytest.approx(expected.item())
    loss.backward()
    weight = logits.grad.abs().sum(dim=1)
    assert torch.all(weight[order[3:]] == 0) and torch.all(weight[order[:3]] > 0)


def test_training_cvar_is_the_hand_computed_top_alpha_mean(bench):
    tr = bench.train
    clf = CVaRClassifier(alpha=0.3, solver="lbfgs", max_iter=100, random_state=0).fit(tr.X, tr.y)
    losses = -clf.predict_log_proba(tr.X)[np.arange(len(tr.y)), tr.y].astype(np.float64)
    k = 0.3 * len(losses)  # 900: a whole number of rows
    assert clf.training_cvar_ == pytest.approx(np.sort(losses)[::-1][: int(round(k))].mean(), rel=1e-4)


def test_training_cvar_beyond_the_check_rows_is_that_of_the_strided_rows():
    # one post-fit pass serves the majority check and the training CVaR: beyond 20,000 rows, every step-th row
    rng = np.random.RandomState(0)
    X = rng.randn(50_001, 3).astype(np.float32)
    y = (X[:, 0] + 0.1 * rng.randn(50_001) > 0).astype(int)
    clf = CVaRClassifier(alpha=0.5, solver="lbfgs", max_iter=30, random_state=0).fit(X, y)
    losses = -clf.predict_log_proba(X[::2])[np.arange(25_001), y[::2]].astype(np.float64)
    k = 0.5 * 25_001
    top = np.sort(losses)[::-1]
    assert clf.training_cvar_ < np.log(2) - 0.1  # a model, not the degenerate zero head
    assert clf.training_cvar_ == pytest.approx((top[:12_500].sum() + (k - 12_500) * top[12_500]) / k, rel=1e-4)
    every = np.sort(-clf.predict_log_proba(X)[np.arange(50_001), y])[::-1][:25_000].mean()
    assert clf.training_cvar_ != pytest.approx(every, rel=1e-6)  # not the whole set's (which would be read twice)


def test_alpha_one_is_erm():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 4)
    y = (X[:, 0] + rng.randn(300) > 0).astype(int)
    cvar = CVaRClassifier(alpha=1.0, solver="lbfgs", l2_reg=1e-2, max_iter=200).fit(X, y)
    erm = ERMClassifier(l2_reg=1e-2).fit(X, y)
    np.testing.assert_allclose(cvar.coef_, erm.coef_, atol=1e-4)


def test_full_batch_lbfgs_beats_the_minibatch_estimate_on_its_objective(bench):
    tr = bench.train
    kw = dict(alpha=0.3, l2_reg=1e-3, random_state=0)
    full = CVaRClassifier(solver="lbfgs", max_iter=200, **kw).fit(tr.X, tr.y)
    mini = CVaRClassifier(max_iter=20, **kw).fit(tr.X, tr.y)

    def objective(clf):
        return clf.training_cvar_ + 0.5 * 1e-3 * (clf.coef_**2).sum()

    assert objective(full) < objective(mini)
    assert full.training_cvar_ < math.log(2)


def test_degenerate_alpha_warns():
    # duplicated rows with both labels: no head fits 30% of the points, so at alpha=0.1
    # the zero head (loss log 2 everywhere) is optimal
    rng = np.random.RandomState(0)
    X = np.repeat(rng.randn(20, 3), 10, axis=0)
    y = (rng.rand(200) < 0.3).astype(int) ^ (X[:, 0] > 0)
    with pytest.warns(DegenerateCVaRWarning, match="held-out rows.*larger alpha"):
        clf = CVaRClassifier(alpha=0.1, solver="lbfgs", max_iter=100).fit(X, y)
    assert clf.training_cvar_ >= math.log(2) - 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateCVaRWarning)
        CVaRClassifier(alpha=1.0, solver="lbfgs", max_iter=100).fit(X, y)


def test_bad_alpha_names_the_range():
    X, y = np.random.RandomState(0).randn(20, 2), np.arange(20) % 2
    for alpha in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            CVaRClassifier(alpha=alpha).fit(X, y)


# -- effect ----------------------------------------------------------------


def test_lowers_the_worst_group_loss(bench):
    """CVaR DRO at a non-degenerate alpha flattens the per-group losses: the worst
    group's test log-loss falls well below ERM's (its accuracy barely moves, as
    Hu et al. 2018 predict for DRO with a classification loss)."""
    tr, te = bench.train, bench.test

    def worst_group_loss(clf):
        loss = -clf.predict_log_proba(te.X)[np.arange(len(te.y)), te.y]
        return max(loss[te.group_labels == g].mean() for g in range(4))

    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    with warnings.catch_warnings():
        # the CVaR is non-smooth: L-BFGS's gradient test rarely fires, max_iter ends the run
        warnings.simplefilter("ignore", ConvergenceWarning)
        cvar = CVaRClassifier(alpha=0.2, solver="lbfgs", l2_reg=1e-4, max_iter=300).fit(tr.X, tr.y)
    assert worst_group_loss(cvar) < 0.75 * worst_group_loss(erm)


def test_default_worst_group_accuracy_above_erm(bench):
    tr, te = bench.train, bench.test
    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateCVaRWarning)
        cvar = CVaRClassifier(random_state=0).fit(tr.X, tr.y)
    wga_erm = worst_group_accuracy(te.y, erm.predict(te.X), group_labels=te.group_labels)
    wga_cvar = worst_group_accuracy(te.y, cvar.predict(te.X), group_labels=te.group_labels)
    assert wga_cvar > wga_erm + 0.05


# -- generic ---------------------------------------------------------------


# determinism, pickling, cloning and multiclass output: tests/test_common.py (skgroup's suite)
def test_full_batch_multiclass():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 5).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.3 * rng.randn(300, 3), axis=1)
    a = CVaRClassifier(alpha=0.5, solver="lbfgs", max_iter=100, random_state=3).fit(X, y)
    assert a.coef_.shape == (3, 5) and a.score(X, y) > 0.7
