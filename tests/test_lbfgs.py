import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from skgroup.engine._lbfgs import LinearHeadEvaluator, is_linear_head, minimize_lbfgs
from skgroup.objectives import CrossEntropy, CVaR, GroupDRO, Loss, Objective, Penalty, Reduction, Weighted


def _data(n=300, d=7, K=2, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d)
    y = rng.randint(0, K, n)
    X[np.arange(n), y % d] += 1.0
    return X.astype(dtype), y


def _objectives(n, seed=0):
    w = np.random.RandomState(seed + 1).rand(n) * 3
    return {"mean": Objective(), "weighted": Objective(reduction=Weighted(w)), "cvar": Objective(reduction=CVaR(0.3))}


def _autograd_of_x(ev, X, y, objective, l2, x):
    """Value and autograd gradient of the function of the evaluator's vector x:
    W = x_W / scale_, b = x_b - W @ mean_, objective(X @ W.T + b) + l2/2 ||W||^2."""
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    K, d = ev.n_classes, ev.d
    W = x_t[: K * d].reshape(K, d) / torch.from_numpy(ev.scale_)
    b = x_t[K * d:] - W @ torch.from_numpy(ev.mean_)
    loss = objective(torch.from_numpy(X) @ W.T + b, torch.from_numpy(y), torch.arange(len(y)))
    loss = loss + 0.5 * l2 * (W**2).sum()
    (g,) = torch.autograd.grad(loss, x_t)
    return float(loss.detach()), g.numpy()


def _autograd_reference(X, y, K, objective, l2, W, b):
    """Value and gradient over [W, b] of objective(X @ W.T + b) + l2/2 ||W||^2."""
    lin = torch.nn.Linear(X.shape[1], K, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(b))
    loss = objective(lin(torch.from_numpy(X)), torch.from_numpy(y), torch.arange(len(y)))
    loss = loss + 0.5 * l2 * (lin.weight**2).sum()
    loss.backward()
    return float(loss.detach()), np.concatenate([lin.weight.grad.numpy().ravel(), lin.bias.grad.numpy()])


@pytest.mark.parametrize("K", [2, 3, 8])  # 8: products as gemm rather than a gemv per class
@pytest.mark.parametrize("name", ["mean", "weighted", "cvar"])
@pytest.mark.parametrize("block_bytes", [None, 512])  # 512 B: blocks of 9 rows, one pass when separable
def test_linear_gradient_equals_autograd(K, name, block_bytes):
    X, y = _data(K=K)
    X += 2.0  # off-centre features, as embeddings are
    objective = _objectives(len(y))[name]
    rng = np.random.RandomState(2)
    W, b = rng.randn(K, X.shape[1]), rng.randn(K)
    f_ref, g_ref = _autograd_reference(X, y, K, objective, 0.3, W, b)
    for softmax_only in (None, False):
        ev = LinearHeadEvaluator(X, y, K, objective, 0.3, block_bytes=block_bytes, softmax_only=softmax_only,
                                 center=False, scale=False)
        f, g = ev.fun_grad(ev.pack(W, b))
        assert f == pytest.approx(f_ref, abs=1e-12, rel=1e-12)
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-10)
        assert ev.n_passes == (1 if block_bytes is not None and name != "cvar" else 2)
        # x = [W * s, b + W mu]: the same objective over standardised features
        X[:, 0] *= 30.0  # a column on another scale
        f_scaled = _autograd_reference(X, y, K, objective, 0.3, W, b)[0]
        ev = LinearHeadEvaluator(X, y, K, objective, 0.3, block_bytes=block_bytes, softmax_only=softmax_only)
        w = objective.reduction.sample_weight.numpy() if name == "weighted" else np.ones(len(y))
        np.testing.assert_allclose(ev.mean_, w @ X / w.sum(), rtol=1e-12)
        std = np.sqrt(w @ (X - ev.mean_) ** 2 / w.sum())
        np.testing.assert_allclose(ev.scale_, np.sqrt(std**2 + 4 * 0.3), rtol=1e-10)
        x = ev.pack(W, b)
        W2, b2 = ev.unpack(x)
        np.testing.assert_allclose(W2, W, rtol=1e-12)
        np.testing.assert_allclose(b2, b, rtol=1e-12)
        f_x, g_x = _autograd_of_x(ev, X, y, objective, 0.3, x)
        f, g = ev.fun_grad(x)
        assert f == pytest.approx(f_scaled, rel=1e-12) and f_x == pytest.approx(f_scaled, rel=1e-12)
        np.testing.assert_allclose(g, g_x, rtol=0, atol=1e-10)
        X[:, 0] /= 30.0


def test_subset_means_within_noise_of_zero_are_not_subtracted():
    # beyond _MEAN_ROWS rows the means come from a strided subset; a column whose subset mean is within
    # 3 standard errors of zero is left uncentred (centring it would offset it by the estimate's error)
    from skgroup.engine._lbfgs import _MEAN_ROWS

    rng = np.random.RandomState(0)
    n = 4 * _MEAN_ROWS
    X = rng.randn(n, 3)
    X[:, 0] -= X[:, 0].mean()  # centred: its subset mean is noise
    X[:, 1] += 5.0  # off-centre
    X[:, 2] = X[:, 2] * 0.01 + 0.2  # tiny spread, mean 20 standard deviations from zero
    y = (X[:, 0] > 0).astype(int)
    ev = LinearHeadEvaluator(X, y, 2, Objective(CrossEntropy()), 1e-3)
    sub = X[::4]
    assert ev.mean_[0] == 0.0 and abs(sub[:, 0].mean()) > 0  # the estimate is not zero, only noise
    np.testing.assert_allclose(ev.mean_[1:], sub[:, 1:].mean(0), rtol=1e-12)
    np.testing.assert_allclose(ev.scale_[0], np.sqrt((sub[:, 0] ** 2).mean() + 4e-3), rtol=1e-10)
    # on the whole data (no subset) the exact means are taken, noise-level ones too
    small = LinearHeadEvaluator(X[:1000], y[:1000], 2, Objective(CrossEntropy()), 1e-3)
    np.testing.assert_allclose(small.mean_, X[:1000].mean(0), rtol=1e-12)


class _LabelSmoothing(Loss):
    """Label-smoothed cross-entropy: another per-row loss, so the evaluator differentiates it by autograd."""

    def __call__(self, logits, y):
        return torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1, reduction="none")


def _SmoothedLoss():
    return Objective(_LabelSmoothing())


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("scale", [1.0, 40.0])  # 40: logits in the hundreds, exp overflows if done naively
def test_autograd_path_and_saturated_logits(K, scale):
    X, y = _data(K=K)
    rng = np.random.RandomState(3)
    W, b = scale * rng.randn(K, X.shape[1]), rng.randn(K)
    for objective in (Objective(), _SmoothedLoss(), Objective(reduction=CVaR(0.2))):
        f_ref, g_ref = _autograd_reference(X, y, K, objective, 0.1, W, b)
        for block_bytes in (None, 512):
            ev = LinearHeadEvaluator(X, y, K, objective, 0.1, center=False, scale=False, block_bytes=block_bytes)
            assert ev._per_row_cross_entropy == (not isinstance(objective.loss, _LabelSmoothing))
            f, g = ev.fun_grad(ev.pack(W, b))
            assert np.isfinite(f) and f == pytest.approx(f_ref, rel=1e-12)
            np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K", [2, 3])
def test_zero_weights_skip_the_forward_pass(K):
    X, y = _data(K=K)
    X += 1.0
    W, b = np.zeros((K, X.shape[1])), np.random.RandomState(0).randn(K)
    ev = LinearHeadEvaluator(X, y, K, Objective(), 0.1)
    f_ref, g_ref = _autograd_of_x(ev, X, y, Objective(), 0.1, ev.pack(W, b))
    passes = ev.n_passes
    f, g = ev.fun_grad(ev.pack(W, b))
    assert ev.n_passes == passes + 1  # the backward product only
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(g, g_ref, atol=1e-10)


def test_engine_fused_path_equals_its_autograd_path_on_a_subset_of_rows():
    """The engine's L-BFGS on a linear head (fused evaluator, standardised coordinates, the
    stage's rows gathered and their weights looked up by index) reaches the optimum its
    autograd path reaches (forced here by a zero penalty)."""
    from skgroup.engine import ArrayBatches, ProximalPenalty, TrainOptions, Trainer, make_head

    X, y = _data(n=400, K=3)
    X = X + 3.0  # off-centre, as embeddings are
    rows = np.arange(0, 400, 2)
    w = np.random.RandomState(1).rand(400) + 0.5
    opts = TrainOptions(solver="lbfgs", max_iter=500, tol=1e-7, dtype="float64", l2_reg=1e-2)
    out = []
    for penalty in (None, ProximalPenalty({}, 0.0)):
        head = make_head(7, 3, (), torch.float64, torch.Generator().manual_seed(0))
        trainer = Trainer(head, ArrayBatches(X, y, dtype=torch.float64), Objective(reduction=Weighted(w, rows=rows)), opts,
                          rows=rows, penalty=penalty)
        assert (trainer._linear_evaluator() is None) == (penalty is not None)
        trainer.fit()
        assert trainer.converged
        out.append(torch.cat([head[0].weight.detach().ravel(), head[0].bias.detach()]).numpy())
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    # the reference by hand: the weighted mean over the subset only, L2 on W
    W, b = out[0][:21].reshape(3, 7), out[0][21:]
    grad = _autograd_reference(X[rows], y[rows], 3, Objective(reduction=Weighted(w[rows])), 1e-2, W, b)[1]
    assert np.abs(grad).max() < 1e-6


@pytest.mark.parametrize("K", [2, 3])
def test_optimum_equals_logistic_regression(K):
    X, y = _data(n=600, d=8, K=K)
    l2 = 1e-2
    ev = LinearHeadEvaluator(X, y, K, Objective(), l2)
    res = minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=500, tol=1e-7)
    assert res.converged and res.status == "converged" and res.grad_max <= 1e-7
    W, b = ev.unpack(res.x)
    C = (2.0 if K == 2 else 1.0) / (l2 * len(y))
    lr = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(X, y)
    if K == 2:
        np.testing.assert_allclose(W[1] - W[0], lr.coef_[0], atol=1e-6)
        assert b[1] - b[0] == pytest.approx(lr.intercept_[0], abs=1e-6)
    else:
        np.testing.assert_allclose(W, lr.coef_, atol=1e-6)  # the same penalty on all K rows
        np.testing.assert_allclose(b - b.mean(), lr.intercept_ - lr.intercept_.mean(), atol=1e-6)
    assert len(res.loss_history) == res.n_iter + 1
    assert np.all(np.diff(res.loss_history) <= 1e-12)  # monotone per iteration
    assert res.n_eval == ev.n_eval >= res.n_iter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_readonly_memmap_same_result_and_never_copied(tmp_path, dtype):
    X, y = _data(n=4000, d=32, K=3, dtype=dtype)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert not Xm.flags.writeable
    out = []
    for data in (X, Xm):
        ev = LinearHeadEvaluator(data, y, 3, Objective(reduction=Weighted(np.arange(4000) % 3 + 1.0)), 1e-3, block_bytes=64 << 10)
        assert np.shares_memory(ev.X, data)  # the same memory: no copy, and a read-only map suffices
        out.append(minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=100, tol=1e-6))
    np.testing.assert_allclose(out[0].x, out[1].x, rtol=1e-5, atol=1e-6)
    assert out[0].n_iter == out[1].n_iter


def test_evaluation_allocates_a_small_fraction_of_X():
    X, y = _data(n=20000, d=256, K=3, dtype=np.float32)  # 20 MB; the (n, K) float64 work arrays are 0.5 MB each
    for objective in (Objective(), Objective(reduction=CVaR(0.2))):  # one pass in blocks; two whole passes
        ev = LinearHeadEvaluator(X, y, 3, objective, 1e-3, block_bytes=256 << 10)
        x = np.random.RandomState(0).randn(ev.n_params) * 0.01
        ev.fun_grad(x)  # warm-up: torch's first-call allocations are not ours
        tracemalloc.start()
        try:
            ev.fun_grad(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < X.nbytes / 4, (type(objective).__name__, peak)


def test_callback_stops_the_run_and_sees_each_iteration():
    X, y = _data(K=3)
    ev = LinearHeadEvaluator(X, y, 3, Objective(), 1e-3)
    seen = []

    def callback(n_iter, x, f):
        seen.append((n_iter, f))
        assert x.shape == (ev.n_params,)
        return n_iter == 3

    res = minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=100, tol=1e-12, callback=callback)
    assert res.status == "callback" and not res.converged
    assert res.n_iter == 3 and [s[0] for s in seen] == [1, 2, 3]
    assert res.loss_history[1:] == [s[1] for s in seen]
    assert res.f == pytest.approx(seen[-1][1])


def test_callback_with_scipy_before_1_11(monkeypatch):
    """Older scipy passes the iterate alone to the callback."""
    import scipy.optimize

    real = scipy.optimize.minimize

    def old_style(*args, callback=None, **kwargs):
        return real(*args, callback=lambda intermediate_result: callback(intermediate_result.x.copy()), **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", old_style)
    X, y = _data(K=2)
    ev = LinearHeadEvaluator(X, y, 2, Objective(), 1e-3)
    seen = []
    res = minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=100, tol=1e-12,
                         callback=lambda n_iter, x, f: seen.append(f) or n_iter == 2)
    assert res.status == "callback" and res.n_iter == 2
    assert seen == res.loss_history[1:] and seen[1] == pytest.approx(ev.fun_grad(res.x)[0], rel=1e-12)


def test_max_iter_and_float32_rounding_floor_end_without_error():
    X, y = _data(n=2000, d=20, K=2, dtype=np.float32)
    ev = LinearHeadEvaluator(X, y, 2, Objective(), 1e-4)
    res = minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=3, tol=1e-5)
    assert (res.status, res.n_iter, res.converged) == ("max_iter", 3, False)
    # tol=0 is out of reach of float32 products: the line search ends the run, reported
    res = minimize_lbfgs(ev.fun_grad, np.zeros(ev.n_params), max_iter=10000, tol=0.0)
    assert res.status == "no_progress" and not res.converged and res.message
    assert np.all(np.isfinite(res.x)) and res.grad_max < 1e-4


def test_non_finite_trial_point_is_reported_at_the_last_finite_iterate():
    def fun_grad(x):
        if x[0] > 1.0:
            return np.nan, np.full_like(x, np.nan)
        return float(((x - 3) ** 2).sum()), 2 * (x - 3)

    res = minimize_lbfgs(fun_grad, np.zeros(3), max_iter=50, tol=1e-8)
    assert res.status == "non_finite" and not res.converged
    assert np.all(np.isfinite(res.x)) and res.x[0] <= 1.0


def test_objective_structure_flags():
    membership = np.eye(2, dtype=bool)[[0, 1]]
    assert Objective().separable and Objective().softmax_only and Objective().per_row_cross_entropy
    weighted = Objective(reduction=Weighted(np.ones(3)))
    assert weighted.separable and weighted.softmax_only
    cvar = Objective(reduction=CVaR(0.5))
    assert not cvar.separable and cvar.softmax_only and cvar.per_row_cross_entropy
    dro = Objective(reduction=GroupDRO(membership))
    assert not dro.separable and dro.online

    class RawLogits(Loss):  # undeclared: not shift invariant
        def __call__(self, logits, y):
            return (logits**2).mean(dim=1)

    class Top(Reduction):  # undeclared: not separable
        def __call__(self, losses, idx):
            return losses.max()

    custom = Objective(RawLogits())
    assert custom.separable and not custom.softmax_only and not custom.per_row_cross_entropy
    top = Objective(reduction=Top())
    assert not top.separable and top.softmax_only

    class Zero(Penalty):
        def __call__(self, terms):
            return terms.logits.sum() * 0

    penalised = Objective(penalties=[Zero()])
    assert not penalised.separable and not penalised.softmax_only and not penalised.per_row_cross_entropy
    # a logit penalty is not shift invariant: the evaluator must not drop W[0]
    X, y = _data(K=3)
    W, b = np.random.RandomState(0).randn(3, 7), np.zeros(3)
    ev = LinearHeadEvaluator(X, y, 3, custom, 0.0, center=False, scale=False)
    np.testing.assert_allclose(ev.fun_grad(ev.pack(W, b))[1], _autograd_reference(X, y, 3, custom, 0.0, W, b)[1],
                               atol=1e-12)


def test_is_linear_head():
    assert is_linear_head(torch.nn.Linear(7, 2)) and is_linear_head(torch.nn.Sequential(torch.nn.Linear(7, 2)))
    assert not is_linear_head(torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))


def _sklearn_binary_loss_gradient(X, y, C, w, c):
    """scikit-learn's own objective and gradient of LogisticRegression's binary lbfgs path at (w, c)."""
    from sklearn._loss.loss import HalfBinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    loss = LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=True)
    coef = np.concatenate([w, [c]])
    return loss.loss_gradient(coef, X, y.astype(np.float64), l2_reg_strength=1.0 / (C * X.shape[0]))


def test_two_class_gradient_is_logistic_regressions():
    """The gradient the tol test reads is scikit-learn's: for two classes at W = [-v/2, v/2] (where
    the penalty puts the optimum) the entries of W[1] and b[1] are those of LogisticRegression's
    binary objective in (v, c) at C = 2 / (l2 n), and W[0]'s their negatives. So the same tol
    stops both at the same gradient (in raw coordinates; the engine's are standardised)."""
    X, y = _data(K=2)
    X += 2.0
    l2, d = 0.3, X.shape[1]
    rng = np.random.RandomState(4)
    v, c = rng.randn(d), 0.7
    ev = LinearHeadEvaluator(X, y, 2, Objective(), l2, center=False, scale=False)
    f, g = ev.fun_grad(ev.pack(np.stack([-v / 2, v / 2]), np.array([-c / 2, c / 2])))
    f_sk, g_sk = _sklearn_binary_loss_gradient(X, y, 2.0 / (l2 * len(y)), v, c)
    assert f == pytest.approx(f_sk, rel=1e-12)
    np.testing.assert_allclose(g[d:2 * d], g_sk[:-1], atol=1e-12)
    np.testing.assert_allclose(g[:d], -g_sk[:-1], atol=1e-12)
    np.testing.assert_allclose(g[2 * d:], [-g_sk[-1], g_sk[-1]], atol=1e-12)


def test_product_with_rows_and_blas_thread_setting():
    from skgroup.engine._lbfgs import _blas_threads, _blas_threads_now, product_with_rows

    rng = np.random.RandomState(0)
    X = rng.randn(50, 9).astype(np.float32)
    for r in (1, 2, 6, 7, 12):  # matrix-vector products up to 6 rows, one product beyond
        V = rng.randn(r, 9).astype(np.float32)
        np.testing.assert_allclose(product_with_rows(X, V), X @ V.T, rtol=1e-5, atol=1e-5)
    before = _blas_threads_now()
    if before is None:
        pytest.skip("no BLAS library that threadpoolctl controls")
    with _blas_threads(1):
        assert _blas_threads_now() == 1
        with _blas_threads(1):  # already so: left alone
            assert _blas_threads_now() == 1
        with _blas_threads(2):
            assert _blas_threads_now() == 2
        assert _blas_threads_now() == 1
    assert _blas_threads_now() == before


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("softmax_only", [True, False])
def test_predictions_at_the_last_evaluation_are_the_models(K, softmax_only):
    # the logits of the latest evaluation give every row's prediction at that point; any other point,
    # or an evaluation in row blocks (no logits of every row at once), gives None
    X, y = _data(n=200, K=K)
    rng = np.random.RandomState(3)
    W, b = rng.randn(K, X.shape[1]), rng.randn(K)
    for block_bytes in (None, 512):
        ev = LinearHeadEvaluator(X, y, K, Objective(), 0.1, softmax_only=softmax_only, block_bytes=block_bytes)
        x = ev.pack(W, b)
        assert ev.predictions_at(x) is None  # nothing evaluated yet
        ev.fun_grad(x)
        pred = ev.predictions_at(x)
        if block_bytes is not None:
            assert pred is None
            continue
        np.testing.assert_array_equal(pred, (X @ W.T + b).argmax(axis=1))
        assert ev.predictions_at(x + 1e-3) is None


@pytest.mark.filterwarnings("ignore:L-BFGS reached max_iter")  # the MLP head's 100 iterations
def test_a_stage_result_gives_the_optimizers_predictions_only_for_its_weights():
    from skgroup.engine import HeadExecutor, Stage, TrainOptions

    X, y = _data(n=300, K=3, dtype=np.float32)
    executor = HeadExecutor(X, y, 3, dtype="float32")
    opts = TrainOptions(solver="lbfgs", max_iter=100, dtype="float32")
    result = executor.train(Stage("erm", Objective(), opts))
    pred = result.final_predictions()
    assert pred is not None and pred.shape == (300,)
    # the same as the stored model's predictions, up to rows tied within float32 rounding (none here)
    np.testing.assert_array_equal(pred, result.predict())
    params = [p.detach().clone() for p in result.module.parameters()]
    assert result.final_predictions(params) is pred
    params[1][0] += 1.0  # another model: the optimizer did not predict for it
    assert result.final_predictions(params) is None
    with torch.no_grad():
        result.module[0].bias[0] += 1.0
    assert result.final_predictions() is None
    # a subset of rows, or the autograd path (a hidden layer), records none
    assert executor.train(Stage("part", Objective(), opts, rows=np.arange(100))).final_predictions() is None
    mlp = HeadExecutor(X, y, 3, hidden_layer_sizes=(4,), dtype="float32")
    assert mlp.train(Stage("mlp", Objective(), opts)).final_predictions() is None


@pytest.mark.parametrize("name", ["mean", "weighted", "cvar"])
def test_two_class_one_pass_evaluation_equals_autograd(name):
    # two classes under a mean or weighted mean: X is read once, in blocks (here of 64 rows), each
    # block's backward product right after its forward one; CVaR (not linear) reads X whole, twice
    X, y = _data(n=1000, K=2)
    objective = _objectives(1000)[name]
    ev = LinearHeadEvaluator(X, y, 2, objective, 0.1)
    ev._fused_rows = 64
    x = ev.pack(*[np.random.RandomState(5).randn(*s) for s in ((2, 7), (2,))])
    f_ref, g_ref = _autograd_of_x(ev, X, y, objective, 0.1, x)
    passes = ev.n_passes
    f, g = ev.fun_grad(x)
    assert ev.n_passes == passes + (2 if name == "cvar" else 1)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    W, b = ev.unpack(x)
    np.testing.assert_array_equal(ev.predictions_at(x), (X @ W.T + b).argmax(axis=1))
