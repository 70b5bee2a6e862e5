import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from skgroup import ERMClassifier
from skgroup.objectives import Objective, Weighted
from skgroup._samplers import RepeatSampler, balanced_weights
from skgroup.engine import TrainOptions, train_head
from skgroup.datasets import make_spurious_benchmark


@pytest.fixture(scope="module")
def bench():
    return make_spurious_benchmark(2000, 400, 1000, n_core=10, n_spurious=10, random_state=0)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_matches_logistic_regression_at_equivalent_regularisation(n_classes):
    rng = np.random.RandomState(0)
    X = rng.randn(600, 8)
    y = rng.randint(0, n_classes, 600)
    X[np.arange(600), y] += 1.5
    l2 = 1e-2
    C = (2.0 if n_classes == 2 else 1.0) / (l2 * len(y))
    erm = ERMClassifier(l2_reg=l2, dtype="float64", tol=1e-8, max_iter=500).fit(X, y)
    lr = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(X, y)
    assert np.mean(erm.predict(X) == lr.predict(X)) >= 0.995
    np.testing.assert_allclose(erm.predict_proba(X), lr.predict_proba(X), atol=2e-4)
    if n_classes == 2:
        np.testing.assert_allclose(erm.coef_[1] - erm.coef_[0], lr.coef_[0], atol=1e-3)


def test_float32_default_accuracy_equals_lr(bench):
    tr, te = bench.train, bench.test
    erm = ERMClassifier().fit(tr.X, tr.y)
    lr = LogisticRegression(C=2 / (1e-4 * len(tr.y)), max_iter=2000).fit(tr.X, tr.y)
    assert erm.score(te.X, te.y) == pytest.approx(lr.score(te.X, te.y), abs=0.005)


def test_sample_weight_equals_repeating_rows():
    rng = np.random.RandomState(1)
    X, y = rng.randn(80, 4), rng.randint(0, 2, 80)
    w = rng.randint(1, 4, 80)
    a = ERMClassifier(dtype="float64", tol=1e-9, l2_reg=1e-2).fit(X, y, sample_weight=w)
    Xr, yr = np.repeat(X, w, axis=0), np.repeat(y, w)
    b = ERMClassifier(dtype="float64", tol=1e-9, l2_reg=1e-2).fit(Xr, yr)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-4)


def test_class_weight_balanced_raises_minority_recall(bench):
    tr = bench.train
    y = tr.y.copy()
    y[np.flatnonzero(y == 1)[200:]] = 0  # make class 1 rare
    plain = ERMClassifier().fit(tr.X, y)
    bal = ERMClassifier(class_weight="balanced").fit(tr.X, y)
    rec = lambda m: np.mean(m.predict(tr.X[y == 1]) == 1)  # noqa: E731
    assert rec(bal) > rec(plain) + 0.1


def test_minibatch_solvers_deterministic_and_mlp(bench):
    tr = bench.train
    for solver in ("adamw", "sgd"):
        kw = dict(solver=solver, max_iter=5, learning_rate=1e-2, batch_size=256, random_state=3)
        a, b = ERMClassifier(**kw).fit(tr.X, tr.y), ERMClassifier(**kw).fit(tr.X, tr.y)
        np.testing.assert_array_equal(a.coef_, b.coef_)
        assert a.score(tr.X, tr.y) > 0.85  # (the test split is group-balanced: ERM is ~0.5 there)
    c = ERMClassifier(solver="adamw", max_iter=5, random_state=4).fit(tr.X, tr.y)
    assert not np.array_equal(a.coef_, c.coef_)
    mlp = ERMClassifier(hidden_layer_sizes=(16,), solver="adamw", max_iter=10, random_state=0).fit(tr.X, tr.y)
    assert [w.shape for w in mlp.coefs_] == [(tr.X.shape[1], 16), (16, 2)]
    assert mlp.score(tr.X, tr.y) > 0.75  # learns (chance is 0.5); unscaled features, 10 epochs
    mlp2 = ERMClassifier(hidden_layer_sizes=(16,), solver="adamw", max_iter=10, random_state=0).fit(tr.X, tr.y)
    np.testing.assert_array_equal(mlp.coefs_[0], mlp2.coefs_[0])


def test_decision_function_and_torch_module(bench):
    # (determinism, the global RNG, pickling and cloning: tests/test_common.py)
    tr = bench.train
    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    np.testing.assert_allclose(erm.predict_proba(tr.X).sum(1), 1, rtol=1e-5)
    # decision_function > 0 <=> predict class 1
    np.testing.assert_array_equal(erm.decision_function(tr.X) > 0, erm.predict(tr.X) == 1)
    # the head rebuilds as a torch module with the same logits
    with torch.no_grad():
        z = erm._module()(torch.from_numpy(tr.X[:5]))
    np.testing.assert_allclose(z[:, 1] - z[:, 0], erm.decision_function(tr.X[:5]), rtol=1e-5, atol=1e-5)


def test_string_labels_and_multiclass():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 5)
    y = np.array(["cat", "dog", "emu"])[np.argmax(X[:, :3], axis=1)]
    erm = ERMClassifier().fit(X, y)
    assert set(erm.predict(X)) <= set(erm.classes_)
    assert erm.decision_function(X).shape == (300, 3)
    assert erm.score(X, y) > 0.9


def test_readonly_memmap_used_in_place(tmp_path, bench):
    X = np.ascontiguousarray(bench.train.X, dtype=np.float32)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "not writable" warning leaks out
        a = ERMClassifier(random_state=0).fit(Xm, bench.train.y)
        b = ERMClassifier(solver="adamw", max_iter=2, random_state=0).fit(Xm, bench.train.y)
    np.testing.assert_allclose(a.coef_, ERMClassifier(random_state=0).fit(X, bench.train.y).coef_)
    assert b.n_iter_ == 2


def test_no_full_copy_of_float32_features(bench):
    from skgroup.engine import as_tensor

    X = np.ascontiguousarray(bench.train.X, dtype=np.float32)
    assert as_tensor(X, torch.float32).data_ptr() == X.__array_interface__["data"][0]


def test_convergence_warning_and_n_iter(bench):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        erm = ERMClassifier(max_iter=2).fit(bench.train.X, bench.train.y)
    assert erm.n_iter_ == 2


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 1], "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), [0, 1], "infinity"),
        (np.ones((4, 2)), [0, 1, 1], "inconsistent numbers of samples"),
        (np.ones((4, 2)), [1, 1, 1, 1], "only one class"),
        (np.ones((4, 2)), [0.5, 1.5, 0.5, 1.5], "Unknown label type"),
    ],
)
def test_bad_input_errors(X, y, match):
    with pytest.raises(ValueError, match=match):
        ERMClassifier().fit(X, y)


def test_bad_parameters_name_the_argument():
    X, y = np.random.RandomState(0).randn(10, 2), np.arange(10) % 2
    with pytest.raises(ValueError, match="'solver'"):
        ERMClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="'l2_reg'"):
        ERMClassifier(l2_reg=-1).fit(X, y)
    with pytest.raises(ValueError, match="cuda"):
        ERMClassifier(device="cuda").fit(X, y) if not torch.cuda.is_available() else (_ for _ in ()).throw(ValueError("cuda"))


def test_training_core_rejects_sampler_with_lbfgs_and_online_objectives():
    from skgroup.objectives import GroupDRO

    X, y = np.random.RandomState(0).randn(20, 2).astype(np.float32), np.arange(20) % 2
    with pytest.raises(ValueError, match="minibatch solver"):
        train_head(X, y, 2, Objective(reduction=GroupDRO(np.eye(2, dtype=bool)[y])), TrainOptions())
    with pytest.raises(ValueError, match="cannot follow a sampler"):
        train_head(X, y, 2, Objective(reduction=Weighted(np.ones(20))), TrainOptions(), sampler=RepeatSampler(np.ones(20)))


def test_samplers():
    from skgroup._samplers import BalancedSampler, WeightedSampler

    rng = np.random.default_rng(0)
    idx = RepeatSampler([0, 1, 3]).epoch(rng)
    assert sorted(idx.tolist()) == [1, 2, 2, 2]
    strata = np.array([0] * 90 + [1] * 10)
    w = balanced_weights(strata)
    assert w[:90].sum() == pytest.approx(0.5) and w[90:].sum() == pytest.approx(0.5)
    draws = BalancedSampler(strata, n_draws=20000).epoch(rng)
    assert np.mean(strata[draws] == 1) == pytest.approx(0.5, abs=0.02)
    sub = np.zeros(100, bool)
    sub[:5] = sub[95:] = True
    draws = BalancedSampler(strata, subset=sub).epoch(rng)
    assert len(draws) == 10 and set(draws) <= set(np.flatnonzero(sub))
    with pytest.raises(ValueError, match="non-negative"):
        WeightedSampler([1, -1])


@pytest.mark.parametrize("n", [1, 2, 9, 5000])
def test_weighted_draws_are_numpys_choice(n):
    """The sampler's table of the inverse cdf draws exactly what rng.choice(p=...) draws, from the same
    random numbers, whatever the weights (zeros; balanced groups; so uneven that it falls back to a
    binary search)."""
    from skgroup._samplers import WeightedSampler

    rng = np.random.default_rng(n)
    groups = rng.integers(0, 4, n)
    weights = {"zeros": np.where(np.arange(n) % 3 == 0, 0.0, rng.random(n)) + (n == 1),
               "balanced": balanced_weights(groups),
               "uneven": np.exp(12 * rng.standard_normal(n))}
    for name, w in weights.items():
        sampler = WeightedSampler(w, n_draws=3 * n + 1)
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(2):
            np.testing.assert_array_equal(sampler.epoch(a), b.choice(n, size=3 * n + 1, replace=True, p=sampler.p))
        assert a.bit_generator.state == b.bit_generator.state
    if n == 5000:
        assert weights["uneven"] is not None and WeightedSampler(weights["uneven"])._inverse_cdf()[1] is None
        assert WeightedSampler(weights["balanced"])._inverse_cdf()[1] is not None


def test_auto_batch_size():
    from skgroup.engine import resolve_batch_size

    assert resolve_batch_size("auto", 300) == 32
    assert resolve_batch_size("auto", 5000) == 50
    assert resolve_batch_size("auto", 162770) == 1024
    assert resolve_batch_size(77, 10) == 77


def test_small_steps_run_on_one_thread_and_restore_the_setting(bench):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ERMClassifier(solver="adamw", max_iter=1, random_state=0).fit(bench.train.X, bench.train.y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_lbfgs_does_not_stop_early_by_default_and_erm_monitors_the_loss():
    from skgroup.datasets import make_spurious_benchmark

    data = make_spurious_benchmark(600, 300, 300, random_state=0)
    tr, va = data.train, data.val
    plain = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    watched = ERMClassifier(random_state=0).fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    # validation is scored every iteration, but the L-BFGS run is the same and keeps its last iterate
    assert watched.n_iter_ == plain.n_iter_ and watched.best_iteration_ == watched.n_iter_
    np.testing.assert_array_equal(watched.coef_, plain.coef_)
    assert watched.validation_scores_["loss"].shape == (watched.n_iter_,)
    # early_stopping=True selects an iteration (on ERM's 'auto' monitor: the validation loss)
    chosen = ERMClassifier(random_state=0, early_stopping=True, n_iter_no_change=None).fit(
        tr.X, tr.y, X_val=va.X, y_val=va.y)
    losses = chosen.validation_scores_["loss"]
    assert chosen.best_iteration_ == int(np.argmin(losses)) + 1
    # a minibatch ERM stops on the validation loss, not on a worst-class score
    sgd = ERMClassifier(solver="adamw", max_iter=8, batch_size=64, random_state=0, n_iter_no_change=None).fit(
        tr.X, tr.y, X_val=va.X, y_val=va.y)
    assert sgd.best_iteration_ == int(np.argmin(sgd.validation_scores_["loss"])) + 1


def test_a_model_worse_than_the_majority_class_warns_without_validation_data():
    from skgroup.estimators import BelowMajorityWarning
    from skgroup.metrics import below_majority

    rng = np.random.RandomState(0)
    X = rng.randn(400, 3).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)  # about 31% positives
    # by hand: the constant answer has accuracy = majority rate and balanced accuracy 1/2
    below, n = below_majority(y, np.zeros_like(y))
    assert not below and n["accuracy"] == n["majority_rate"] and n["balanced_accuracy"] == 0.5
    assert below_majority(y, 1 - y)[0]  # all wrong
    assert not below_majority(y, y)[0]
    # a fit with labels flipped for the rows it is checked on cannot be made here; instead an
    # estimator whose weights are negated after fitting is worse than the constant on its rows
    with pytest.warns(BelowMajorityWarning, match="majority class on its own training rows"):
        _NegatedERM(random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BelowMajorityWarning)
        ERMClassifier(random_state=0).fit(X, y)


def test_a_model_worse_than_the_majority_class_on_validation_rows_warns():
    # the training rows fitted, the validation rows (whose labels follow the opposite rule) missed:
    # the fit says so on the validation rows, where the training check cannot see it
    from skgroup.estimators import BelowMajorityWarning

    rng = np.random.RandomState(0)
    X, Xv = rng.randn(400, 3).astype(np.float32), rng.randn(300, 3).astype(np.float32)
    y, yv = (X[:, 0] > 0.5).astype(int), (Xv[:, 0] <= 0.5).astype(int)
    with pytest.warns(BelowMajorityWarning, match="majority class on its validation rows"):
        ERMClassifier(random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BelowMajorityWarning)
        ERMClassifier(random_state=0).fit(X, y, X_val=Xv, y_val=1 - yv)


def test_a_constant_model_warns_that_it_is_no_better_than_the_majority_class():
    # every row answered with the majority class: accuracy = the majority rate (not below it), balanced
    # accuracy = chance; a robust method that collapses to this (LDAM on a 93 %-majority CelebA cut) says so
    from skgroup.estimators import BelowMajorityWarning

    rng = np.random.RandomState(0)
    X = rng.randn(400, 3).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    with pytest.warns(BelowMajorityWarning, match="does no better than always answering the majority class"):
        _ConstantERM(random_state=0).fit(X, y)


class _ConstantERM(ERMClassifier):
    def _store_result(self, result, validated):
        super()._store_result(result, validated)
        self.coefs_ = [np.zeros_like(W) for W in self.coefs_]
        self.intercepts_ = [np.array([1.0, 0.0], dtype=b.dtype) for b in self.intercepts_]


class _NegatedERM(ERMClassifier):
    def _store_result(self, result, validated):
        super()._store_result(result, validated)
        self.coefs_ = [-W for W in self.coefs_]
        self.intercepts_ = [-b for b in self.intercepts_]


@pytest.mark.parametrize("y", [
    np.array([3, 1, 3, 7, 1]),
    np.array([127, -128, 0, 127], dtype=np.int8),  # the offsets do not fit the labels' dtype
    np.array([2, 0, 2], dtype=np.uint8),
    np.array([10**12, 3, 10**12]),  # a wide range: unique and a search
    np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64),
    np.array([1.0, 0.0, 1.0]),
    np.array(["b", "a", "c", "a"]),
    np.array([True, False, True]),
])
def test_classes_and_codes_are_numpys_unique(y):
    from skgroup.engine._fit import _classes_and_codes

    classes, codes = _classes_and_codes(y)
    ref_classes, ref_codes = np.unique(y, return_inverse=True)
    assert classes.dtype == ref_classes.dtype
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_array_equal(codes, ref_codes.ravel())


def test_majority_kernel_on_codes_is_below_majority():
    """The estimators' check reads encoded labels through the kernel; a class absent from the rows
    checked is left out, as below_majority (which only sees the labels given) leaves it out."""
    from skgroup.metrics import below_majority
    from skgroup.metrics._metrics import below_majority_codes

    rng = np.random.RandomState(1)
    for k, y, pred in [(3, rng.randint(0, 3, 200), rng.randint(0, 3, 200)),
                       (4, rng.randint(0, 3, 200), rng.randint(0, 4, 200)),  # class 3 never occurs
                       (2, np.r_[np.zeros(150, int), np.ones(50, int)], np.zeros(200, int))]:
        assert below_majority_codes(y == pred, y, k) == below_majority(y, pred)
    assert below_majority_codes(np.zeros(4, bool), np.array([0, 0, 0, 1]), 2)[0]
