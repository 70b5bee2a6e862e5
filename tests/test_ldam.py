"""LDAMClassifier: margins by hand, deferred re-weighting switching at the right epoch, the effect."""

import numpy as np
import pytest
import torch

from skgroup import ERMClassifier, LDAMClassifier
from skgroup.engine import Callback
from skgroup.objectives import LDAMLoss, Weighted, effective_number_weights

F64 = dict(dtype="float64", tol=1e-9, max_iter=1000)


def gaussians(n0, n1, *, d=5, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = sep / 2
    X = np.vstack([rng.normal(size=(n0, d)) - mu, rng.normal(size=(n1, d)) + mu])
    return X, np.r_[np.zeros(n0, int), np.ones(n1, int)]


def recall(est, X, y, c):
    return float(np.mean(est.predict(X[y == c]) == c))


def _record(sink):
    def fn(trainer):
        reduction = trainer.objective.reduction
        weights = reduction.sample_weight.cpu().numpy().copy() if isinstance(reduction, Weighted) else None
        sink.append((trainer.name, trainer.epoch, type(reduction).__name__, weights, trainer.objective.loss))
    return fn


class Spy(Callback):
    """Records, at the start of every epoch, the stage and its objective (a plain function is shared
    by the deep copies the estimator makes of its callbacks)."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_begin(self, trainer):
        self.fn(trainer)


def test_margins_by_hand():
    X, y = gaussians(1600, 100)
    est = LDAMClassifier(max_margin=0.6).fit(X, y)
    # n^-1/4 = (1600^-1/4, 100^-1/4) = (1/(2 sqrt(10)), 1/sqrt(10)): ratio 1/2, the rarer class at 0.6
    np.testing.assert_allclose(est.margins_, [0.3, 0.6], rtol=1e-12)
    np.testing.assert_allclose(est.class_weight_, effective_number_weights([1600, 100], 0.9999), rtol=1e-12)


def test_deferred_reweighting_switches_at_the_right_epoch():
    X, y = gaussians(300, 30)
    sink = []
    est = LDAMClassifier(solver="adamw", max_iter=10, drw_start=0.8, batch_size=64, random_state=0,
                         callbacks=[Spy(_record(sink))]).fit(X, y)
    # the authors' schedule, epoch // 160 of 200: 8 unweighted epochs of 10, then the weights
    assert [(name, epoch, red) for name, epoch, red, _, _ in sink] == (
        [("ldam", e, "Mean") for e in range(1, 9)] + [("drw", e, "Weighted") for e in (1, 2)])
    assert est.n_iter_before_drw_ == 8 and est.n_iter_ == 2
    # the re-weighted stage weighs each row by its class's effective-number weight (mean 1 over the rows)
    w = effective_number_weights([300, 30], 0.9999)[y]
    np.testing.assert_allclose(sink[-1][3], w / w.mean(), rtol=1e-6)
    # both stages score rows by the same LDAM loss, with margins from the training counts
    assert all(isinstance(loss, LDAMLoss) for *_, loss in sink)
    np.testing.assert_allclose(sink[0][4]._margins.numpy(), est.margins_, rtol=1e-12)
    # it continues from the first stage's weights: the second stage starts where the first ended
    first_only = LDAMClassifier(solver="adamw", max_iter=10, drw_start=0.8, batch_size=64, random_state=0)
    first_only._stage_lengths = lambda options: (8, 0)  # the same first stage, and nothing after
    first_only.fit(X, y)
    assert np.abs(first_only.coef_ - est.coef_).max() > 0  # the second stage trained
    # drw_start = 1: LDAM alone (SubpopBench's LDAM); drw_start = 0: re-weighted from the start
    for start, expected in ((1.0, [("ldam", "Mean")] * 10), (0.0, [("drw", "Weighted")] * 10)):
        sink.clear()
        LDAMClassifier(solver="adamw", max_iter=10, drw_start=start, batch_size=64, random_state=0,
                       callbacks=[Spy(_record(sink))]).fit(X, y)
        assert [(name, red) for name, _, red, _, _ in sink] == expected
    # a fraction that rounds to no first epoch skips the first stage; one that leaves none keeps one
    assert LDAMClassifier(drw_start=0.05, solver="adamw", max_iter=10)._stage_lengths(est._options()) == (0, 10)
    assert LDAMClassifier(drw_start=0.99, solver="adamw", max_iter=10)._stage_lengths(est._options()) == (9, 1)


def test_under_lbfgs_the_deferred_stage_reaches_the_reweighted_optimum():
    # a linear head's objective is convex: after the unweighted stage (a warm start) the re-weighted
    # stage ends at the minimiser of LDAM with class-balanced weights, LDAM-RW's model
    X, y = gaussians(400, 40, seed=2)
    drw = LDAMClassifier(l2_reg=1e-2, **F64).fit(X, y)
    rw = LDAMClassifier(l2_reg=1e-2, drw_start=0.0, **F64).fit(X, y)
    assert drw.n_iter_before_drw_ > 0
    np.testing.assert_allclose(drw.coef_, rw.coef_, atol=1e-6)
    np.testing.assert_allclose(drw.intercept_, rw.intercept_, atol=1e-6)
    # drw_start = 1 is the LDAM loss alone: the same as any estimator with loss=LDAMLoss
    alone = LDAMClassifier(l2_reg=1e-2, drw_start=1.0, **F64).fit(X, y)
    erm_ldam = ERMClassifier(loss=LDAMLoss(), l2_reg=1e-2, **F64).fit(X, y)
    np.testing.assert_allclose(alone.coef_, erm_ldam.coef_, atol=1e-7)
    assert np.abs(alone.coef_ - drw.coef_).max() > 1e-2
    # the fit converged: the objective's gradient vanishes at the returned model
    w = torch.as_tensor(drw.class_weight_[y])
    Wt, bt = torch.tensor(drw.coef_, requires_grad=True), torch.tensor(drw.intercept_, requires_grad=True)
    rows = LDAMLoss(0.5, 30.0, class_counts=[400, 40])(torch.as_tensor(X) @ Wt.T + bt, torch.as_tensor(y))
    f = (w * rows).sum() / w.sum() + 0.5e-2 * (Wt**2).sum()
    assert max(float(g.abs().max()) for g in torch.autograd.grad(f, (Wt, bt))) < 1e-6


def test_minority_recall_rises_over_erm():
    X, y = gaussians(2000, 100)
    X_test, y_test = gaussians(3000, 3000, seed=1)
    erm = ERMClassifier().fit(X, y)
    ldam = LDAMClassifier().fit(X, y)
    assert recall(ldam, X_test, y_test, 1) > recall(erm, X_test, y_test, 1) + 0.3
    bal = lambda m: (recall(m, X_test, y_test, 0) + recall(m, X_test, y_test, 1)) / 2  # noqa: E731
    assert bal(ldam) > bal(erm) + 0.1


def test_bad_parameters_name_the_parameter():
    X, y = gaussians(20, 5)
    for params in ({"drw_start": 1.5}, {"max_margin": 0.0}, {"drw_beta": 1.0}, {"scale": -1.0}):
        with pytest.raises(ValueError, match=next(iter(params))):
            LDAMClassifier(**params).fit(X, y)
