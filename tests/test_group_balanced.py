import warnings

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skgroup._samplers import balanced_weights
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import ERMClassifier, GroupBalancedClassifier
from skgroup.metrics import worst_group_accuracy, worst_group_scorer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(counts=(40, 12, 26, 8), n_features=4, seed=0):
    """Four groups of the given sizes, two classes (groups 0, 1 -> class 0; 2, 3 -> class 1)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(counts)), counts)
    y = (g >= 2).astype(int)
    X = rng.normal(size=(g.shape[0], n_features)) + np.c_[y, g % 2, np.zeros((g.shape[0], n_features - 2))]
    perm = rng.permutation(g.shape[0])
    return X[perm].astype(np.float64), y[perm], g[perm]


_EXACT = dict(dtype="float64", tol=1e-10, max_iter=2000)


# -- mechanism: weights by hand ------------------------------------------------
def test_balanced_weights_by_hand():
    strata = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(balanced_weights(strata), [1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 6, 1 / 6])
    # square root: n^-1/2 / sum_t n_t^1/2
    z = np.sqrt(3) + 1 + np.sqrt(2)
    np.testing.assert_allclose(balanced_weights(strata, power=0.5),
                               np.r_[[1 / np.sqrt(3) / z] * 3, 1 / z, [1 / np.sqrt(2) / z] * 2])
    np.testing.assert_allclose(balanced_weights(strata, power=0.0), np.full(6, 1 / 6))


@pytest.mark.parametrize("balancing, power", [("reweight", 1.0), ("sqrt_reweight", 0.5), ("resample", 1.0)])
def test_group_weight_is_inverse_frequency(balancing, power):
    X, y, g = _data()
    clf = GroupBalancedClassifier(balancing=balancing, solver="lbfgs", random_state=0).fit(X, y, group_labels=g)
    np.testing.assert_array_equal(clf.group_counts_, [40, 12, 26, 8])
    w = np.array([40, 12, 26, 8], dtype=float) ** -power
    np.testing.assert_allclose(clf.group_weight_, w / w.mean())
    assert clf.group_names_ == (0, 1, 2, 3)


@pytest.mark.parametrize("balancing, power", [("reweight", 1.0), ("sqrt_reweight", 0.5)])
def test_reweighting_is_erm_with_the_group_weights(balancing, power):
    X, y, g = _data()
    clf = GroupBalancedClassifier(balancing=balancing, **_EXACT).fit(X, y, group_labels=g)
    sample_weight = np.bincount(g)[g].astype(float) ** -power
    erm = ERMClassifier(**_EXACT).fit(X, y, sample_weight=sample_weight)
    np.testing.assert_allclose(clf.coef_, erm.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.intercept_, erm.intercept_, rtol=1e-5, atol=1e-6)
    assert not np.allclose(clf.coef_, ERMClassifier(**_EXACT).fit(X, y).coef_, atol=1e-3)


def test_resampling_under_lbfgs_is_reweighting():
    X, y, g = _data()
    a = GroupBalancedClassifier(balancing="resample", solver="lbfgs", **_EXACT).fit(X, y, group_labels=g)
    b = GroupBalancedClassifier(balancing="reweight", **_EXACT).fit(X, y, group_labels=g)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-8)


def test_resampling_draws_groups_equally(monkeypatch):
    """The minibatch sampler gets the group ids (not the classes) and draws each group a quarter of the time."""
    import skgroup.estimators._group_balanced as mod

    X, y, g = _data()
    seen = {}
    real = mod.BalancedSampler

    def spy(strata, *args, **kwargs):
        seen["strata"] = np.asarray(strata).copy()
        seen["sampler"] = real(strata, *args, **kwargs)
        return seen["sampler"]

    monkeypatch.setattr(mod, "BalancedSampler", spy)
    clf = GroupBalancedClassifier(balancing="resample", max_iter=2, batch_size=16, random_state=0)
    clf.fit(X, y, group_labels=g)
    assert clf.solver_ == "adamw"
    np.testing.assert_array_equal(seen["strata"], g)
    draws = np.concatenate([seen["sampler"].epoch(np.random.default_rng(i)) for i in range(300)])
    np.testing.assert_allclose(np.bincount(g[draws]) / draws.shape[0], 0.25, atol=0.01)


def test_resampling_reaches_the_reweighted_model():
    X, y, g = _data((400, 60, 300, 40))
    exact = GroupBalancedClassifier(balancing="reweight", **_EXACT).fit(X, y, group_labels=g)
    sgd = GroupBalancedClassifier(balancing="resample", random_state=0).fit(X, y, group_labels=g)
    assert np.mean(sgd.predict(X) == exact.predict(X)) > 0.97


def test_without_group_labels_classes_are_groups():
    X, y, g = _data()
    clf = GroupBalancedClassifier(**_EXACT).fit(X, y)
    assert clf.group_names_ == (0, 1)
    np.testing.assert_array_equal(clf.group_counts_, [52, 34])
    erm = ERMClassifier(class_weight="balanced", **_EXACT).fit(X, y)
    np.testing.assert_allclose(clf.coef_, erm.coef_, rtol=1e-5, atol=1e-6)


# -- mechanism: CRT -------------------------------------------------------------
def test_crt_on_a_linear_head_is_full_retraining():
    X, y, g = _data()
    crt = GroupBalancedClassifier(retrain="last_layer", **_EXACT).fit(X, y, group_labels=g)
    full = GroupBalancedClassifier(retrain="all", **_EXACT).fit(X, y, group_labels=g)
    np.testing.assert_allclose(crt.coef_, full.coef_, rtol=1e-5, atol=1e-6)


def test_crt_keeps_the_erm_hidden_layers_and_retrains_the_last():
    X, y, g = _data()
    kw = dict(hidden_layer_sizes=(6,), max_iter=30, dtype="float64", random_state=0)
    crt = GroupBalancedClassifier(retrain="last_layer", **kw).fit(X, y, group_labels=g)
    # stage 1 is plain ERM with the same settings and seed offset 0
    erm = ERMClassifier(hidden_layer_sizes=(6,), max_iter=30, dtype="float64", random_state=0).fit(X, y)
    np.testing.assert_array_equal(crt.coefs_[0], erm.coefs_[0])
    np.testing.assert_array_equal(crt.intercepts_[0], erm.intercepts_[0])
    assert not np.allclose(crt.coefs_[1], erm.coefs_[1])
    full = GroupBalancedClassifier(retrain="all", **kw).fit(X, y, group_labels=g)
    assert not np.allclose(full.coefs_[0], erm.coefs_[0])  # 'all' trains the hidden layer too


# -- errors and routing ---------------------------------------------------------
def test_overlapping_groups_are_refused_with_the_fix():
    X, y, g = _data()
    member = np.eye(4, dtype=bool)[g]
    member[np.flatnonzero(g != 0)[:3], 0] = True  # three rows in two groups
    with pytest.raises(ValueError, match="1-D group ids"):
        GroupBalancedClassifier().fit(X, y, group_labels=member)
    # a one-hot membership matrix is the same as ids
    a = GroupBalancedClassifier(**_EXACT).fit(X, y, group_labels=np.eye(4, dtype=bool)[g])
    b = GroupBalancedClassifier(**_EXACT).fit(X, y, group_labels=g)
    np.testing.assert_allclose(a.coef_, b.coef_)


def test_bad_parameters_and_group_labels_name_the_argument():
    X, y, g = _data()
    with pytest.raises(ValueError, match="balancing"):
        GroupBalancedClassifier(balancing="upweighting").fit(X, y, group_labels=g)
    with pytest.raises(ValueError, match="group_labels"):
        GroupBalancedClassifier().fit(X, y, group_labels=g[:-1])


def test_group_labels_are_requested_and_routed(monkeypatch):
    assert GroupBalancedClassifier().get_metadata_routing().fit.requests["group_labels"] is True
    X, y, g = _data((80, 20, 60, 20))
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(GroupBalancedClassifier(max_iter=50), {"balancing": ["reweight", "sqrt_reweight"]},
                              scoring=worst_group_scorer, cv=2).fit(X, y, group_labels=g)
    # the refit saw the four groups, not the two classes
    assert search.best_estimator_.group_names_ == (0, 1, 2, 3)


# -- effect -------------------------------------------------------------------------
def test_group_balancing_lifts_the_worst_group():
    """Sagawa et al.'s synthetic task (10% minority groups): ERM relies on the easy spurious
    feature; balancing the groups gets the minority groups right too."""
    data = make_spurious_benchmark(3000, 1000, 2000, random_state=0)
    tr, te = data.train, data.test
    wga = {}
    for name, est in [("erm", ERMClassifier(random_state=0)),
                      ("reweight", GroupBalancedClassifier(random_state=0)),
                      ("sqrt", GroupBalancedClassifier(balancing="sqrt_reweight", random_state=0)),
                      ("resample", GroupBalancedClassifier(balancing="resample", random_state=0))]:
        fit_params = {} if name == "erm" else {"group_labels": tr.group_labels}
        est.fit(tr.X, tr.y, **fit_params)
        wga[name] = worst_group_accuracy(te.y, est.predict(te.X), group_labels=te.group_labels)
    assert wga["erm"] < 0.55, wga
    assert wga["reweight"] > wga["erm"] + 0.15, wga
    assert wga["resample"] > wga["erm"] + 0.15, wga
    # square-root reweighting sits between ERM and full reweighting
    assert wga["erm"] < wga["sqrt"] <= wga["reweight"] + 0.02, wga
