
import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skgroup.datasets import make_spurious_features
from skgroup.estimators._erm import ERMClassifier
from skgroup.estimators._mixture import MixtureBalancedClassifier, auto_epochs
from skgroup.metrics import worst_group_accuracy


def _three_class_data(counts=(40, 12, 26), n_features=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    X = rng.normal(size=(y.shape[0], n_features)) + y[:, None]
    perm = rng.permutation(y.shape[0])
    return X[perm].astype(np.float32), y[perm]


def _imbalanced_spurious(n, seed, keep_positive=0.15):
    """make_spurious_features with 85% of class 1 dropped: blond-men-like
    structure (the minority class holds the smallest group)."""
    kw = dict(sigma_core=3.0, n_core=10, n_spurious=10)
    X, y, g = make_spurious_features(n, random_state=seed, **kw)
    keep = (y == 0) | (np.random.default_rng(seed).random(y.shape[0]) < keep_positive)
    Xt, yt, gt = make_spurious_features(4000, group_balanced=True, random_state=seed + 100, **kw)
    return X[keep], y[keep], Xt, yt, gt


# -- mechanism: the subsets are exact ---------------------------------------
@pytest.mark.parametrize(
    "balancing, ratio, expected",
    [
        ("subsetting", 2.0, [12, 12, 12]),
        ("mixture", 2.0, [24, 12, 24]),
        ("mixture", 1.5, [18, 12, 18]),
        ("mixture", 2.9, [34, 12, 26]),  # floor(2.9 * 12) = 34
        ("mixture", 1.0, [12, 12, 12]),
        ("mixture", 10.0, [40, 12, 26]),
        ("upsampling", 2.0, [40, 12, 26]),
        ("upweighting", 2.0, [40, 12, 26]),
        ("none", 2.0, [40, 12, 26]),
    ],
)
def test_subset_sizes_are_exact(balancing, ratio, expected):
    X, y = _three_class_data()
    clf = MixtureBalancedClassifier(balancing=balancing, mixture_ratio=ratio, solver="lbfgs", random_state=0)
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.class_counts_, [40, 12, 26])
    np.testing.assert_array_equal(clf.class_counts_subset_, expected)
    idx = clf.subset_indices_
    assert idx.shape[0] == sum(expected)
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    np.testing.assert_array_equal(np.bincount(y[idx]), expected)
    # the smallest class is never touched
    np.testing.assert_array_equal(np.intersect1d(idx, np.flatnonzero(y == 1)), np.flatnonzero(y == 1))


def test_upweighting_weights_are_the_imbalance_ratio():
    X, y = _three_class_data()
    clf = MixtureBalancedClassifier(balancing="upweighting", random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.class_weight_, [1.0, 40 / 12, 40 / 26])
    assert clf.solver_ == "lbfgs"
    # normalised by the weights' sum it is class_weight='balanced' ERM, exactly
    erm = ERMClassifier(class_weight="balanced").fit(X, y)
    np.testing.assert_allclose(clf.coef_, erm.coef_, rtol=1e-4, atol=1e-5)


def test_ratio_one_is_subsetting():
    X, y = _three_class_data()
    mix = MixtureBalancedClassifier(balancing="mixture", mixture_ratio=1.0, solver="lbfgs", random_state=3).fit(X, y)
    sub = MixtureBalancedClassifier(balancing="subsetting", solver="lbfgs", random_state=3).fit(X, y)
    np.testing.assert_array_equal(mix.subset_indices_, sub.subset_indices_)
    # upsampling a class-balanced subset weighs every kept row alike
    np.testing.assert_allclose(mix.coef_, sub.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix.intercept_, sub.intercept_, rtol=1e-5, atol=1e-6)


def test_original_ratio_is_upsampling():
    X, y = _three_class_data()
    ratio = 40 / 12
    kw = dict(max_iter=30, random_state=5)
    mix = MixtureBalancedClassifier(balancing="mixture", mixture_ratio=ratio, **kw).fit(X, y)
    up = MixtureBalancedClassifier(balancing="upsampling", **kw).fit(X, y)
    assert mix.solver_ == up.solver_ == "adamw"
    np.testing.assert_array_equal(mix.subset_indices_, np.arange(y.shape[0]))
    # same rows, same class-balanced draws, same seed: the same model
    np.testing.assert_array_equal(mix.coef_, up.coef_)
    np.testing.assert_array_equal(mix.intercept_, up.intercept_)


def test_minibatch_upsampling_converges_to_its_expected_objective():
    X, y = _three_class_data(counts=(600, 150, 300), n_features=3, seed=1)
    exact = MixtureBalancedClassifier(balancing="upsampling", solver="lbfgs", random_state=0).fit(X, y)
    sgd = MixtureBalancedClassifier(balancing="upsampling", random_state=0).fit(X, y)
    assert sgd.n_iter_ == auto_epochs(y.shape[0], 1024) == 750  # 1,500 steps
    # softmax is invariant to shifting every class's row alike: compare probabilities
    np.testing.assert_allclose(sgd.predict_proba(X), exact.predict_proba(X), atol=0.05)
    assert np.mean(sgd.predict(X) == exact.predict(X)) > 0.98


# -- effect ---------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_mixture_beats_erm_on_worst_group(seed):
    X, y, Xt, yt, gt = _imbalanced_spurious(3000, seed)
    erm = ERMClassifier().fit(X, y)
    mix = MixtureBalancedClassifier(random_state=seed).fit(X, y)
    wga_erm = worst_group_accuracy(yt, erm.predict(Xt), group_labels=gt)
    wga_mix = worst_group_accuracy(yt, mix.predict(Xt), group_labels=gt)
    assert wga_mix > wga_erm + 0.15, (wga_erm, wga_mix)
    assert mix.score(Xt, yt) > erm.score(Xt, yt) - 0.02


# -- estimator contract ----------------------------------------------------
def test_multiclass_proba_decision_function():
    X, y = _three_class_data()
    labels = np.array(["a", "b", "c"])[y]
    for balancing in ("mixture", "subsetting", "upweighting"):
        max_iter = 20 if balancing == "mixture" else None
        clf = MixtureBalancedClassifier(balancing=balancing, max_iter=max_iter, random_state=0).fit(X, labels)
        proba = clf.predict_proba(X)
        assert proba.shape == (X.shape[0], 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        assert clf.decision_function(X).shape == (X.shape[0], 3)
        assert set(clf.predict(X)) <= {"a", "b", "c"}
        assert clf.score(X, labels) > 0.6


def test_mlp_head():
    X, y = _three_class_data()
    clf = MixtureBalancedClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)
    assert [W.shape for W in clf.coefs_] == [(4, 8), (8, 3)]
    assert clf.score(X, y) > 0.6


@pytest.mark.parametrize("balancing", ["mixture", "subsetting"])
def test_determinism_pickle_clone(balancing):
    X, y = _three_class_data()
    kw = dict(balancing=balancing, max_iter=15, solver="adamw", random_state=7)
    a = MixtureBalancedClassifier(**kw).fit(X, y)
    b = MixtureBalancedClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.subset_indices_, b.subset_indices_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = MixtureBalancedClassifier(**{**kw, "random_state": 8}).fit(X, y)
    assert not np.array_equal(a.subset_indices_, c.subset_indices_)


def test_bad_parameters_are_named():
    X, y = _three_class_data()
    with pytest.raises(InvalidParameterError, match="mixture_ratio"):
        MixtureBalancedClassifier(mixture_ratio=0.5).fit(X, y)
    with pytest.raises(InvalidParameterError, match="balancing"):
        MixtureBalancedClassifier(balancing="oversampling").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MixtureBalancedClassifier().fit(X, np.zeros_like(y))


# the default ('mixture') is checked in test_common.py; here the other modes
@parametrize_with_checks(
    [
        MixtureBalancedClassifier(balancing="subsetting", random_state=0),
        MixtureBalancedClassifier(balancing="upweighting", random_state=0),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
