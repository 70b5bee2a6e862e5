import warnings

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

import skgroup.estimators._dfr as dfr_module
from skgroup.datasets import make_spurious_features
from skgroup.estimators import DFRClassifier, ERMClassifier, TinyHeldOutGroupWarning
from skgroup.estimators._dfr import group_balanced_subset
from skgroup.estimators._gradtune import _last_layer_inputs
from skgroup.metrics import worst_group_accuracy, worst_group_scorer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _grouped(counts=(60, 30, 24, 90), n_features=5, seed=0):
    """Two classes, two attribute values; group = 2 * y + a, sizes ``counts``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(4), counts)
    y, a = g // 2, g % 2
    X = rng.normal(size=(g.shape[0], n_features)) + np.c_[1.5 * y, 2.0 * a, np.zeros((g.shape[0], n_features - 2))]
    X[:, -1] = 3.0 + 0.1 * X[:, -1]  # a shifted column: the standardisation matters
    perm = rng.permutation(g.shape[0])
    return X[perm], y[perm], g[perm]


class _Spy:
    """Records every L1 logistic regression DFR fits (its training rows and coefficients)."""

    def __init__(self, monkeypatch):
        self.fits = []
        real = dfr_module._l1_logistic

        def make(C, seed, tol, max_iter):
            lr = real(C, seed, tol, max_iter)
            spy = self

            class Recorded(LogisticRegression):
                def fit(self, X, y):
                    lr.fit(X, y)
                    spy.fits.append(dict(C=C, X=X.copy(), y=np.asarray(y).copy(), coef=lr.coef_.copy(),
                                         intercept=lr.intercept_.copy()))
                    return lr

            return Recorded()

        monkeypatch.setattr(dfr_module, "_l1_logistic", make)


# -- mechanism: subsets, averaging, folding ------------------------------------------
def test_group_balanced_subset_keeps_the_smallest_group_size():
    ids = np.repeat([0, 1, 2], [10, 3, 7])
    rows = group_balanced_subset(ids, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(ids[rows]), [3, 3, 3])
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows[ids[rows] == 1], [10, 11, 12])  # the smallest group whole
    other = group_balanced_subset(ids, np.random.default_rng(1))
    assert not np.array_equal(rows, other)


def test_balanced_heldout_data_is_one_l1_logistic_regression_on_standardised_features():
    """Every group already of equal size: each subset is all rows, so DFR is one L1 logistic
    regression on the standardised held-out rows, folded into coef_ / intercept_."""
    X, y, g = _grouped((40, 40, 40, 40))
    clf = DFRClassifier(Cs=[0.3], n_retrains=3, tol=1e-8, max_iter=1000, random_state=0).fit(X, y, group_labels=g)
    scaler = StandardScaler().fit(X)
    lr = LogisticRegression(C=0.3, l1_ratio=1.0, solver="liblinear", tol=1e-8, max_iter=1000).fit(scaler.transform(X), y)
    Xt = np.random.default_rng(5).normal(size=(50, 5)) * 2
    np.testing.assert_allclose(clf.decision_function(Xt), lr.decision_function(scaler.transform(Xt)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(Xt), lr.predict_proba(scaler.transform(Xt)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.mean_, scaler.mean_)
    np.testing.assert_allclose(clf.scale_, scaler.scale_)
    # the folded layer is a plain linear head: logits (-z/2, z/2)
    np.testing.assert_allclose(clf.coef_[0], -clf.coef_[1])
    assert clf.C_ == 0.3 and clf.C_scores_ is None and clf.subset_size_ == 40


def test_coefficients_are_the_mean_over_group_balanced_subsets(monkeypatch):
    spy = _Spy(monkeypatch)
    X, y, g = _grouped()
    clf = DFRClassifier(Cs=[0.5], n_retrains=4, random_state=0).fit(X, y, group_labels=g)
    assert len(spy.fits) == 4
    std = (X - X.mean(axis=0)) / X.std(axis=0)
    for fit in spy.fits:
        # every subset: 24 rows of each group (the smallest group's size), standardised on all held-out rows
        idx = [int(np.flatnonzero(np.all(np.isclose(std, row), axis=1))[0]) for row in fit["X"]]
        np.testing.assert_array_equal(np.bincount(g[idx], minlength=4), [24, 24, 24, 24])
        np.testing.assert_array_equal(fit["y"], y[idx] == 1)
    assert len({tuple(np.round(f["X"][:, 0], 6)) for f in spy.fits}) == 4  # four different subsets
    w = np.mean([f["coef"][0] for f in spy.fits], axis=0)
    b = np.mean([f["intercept"][0] for f in spy.fits])
    np.testing.assert_allclose(clf.decision_function(X), std @ w + b, rtol=1e-8, atol=1e-10)


def test_c_is_tuned_on_one_half_and_scored_on_the_other(monkeypatch):
    spy = _Spy(monkeypatch)
    split, scored = {}, []
    real_split, real_wga = dfr_module.train_test_split, dfr_module._worst_group_accuracy

    def spy_split(*args, **kwargs):
        out = real_split(*args, **kwargs)
        split["train"], split["select"] = out
        return out

    def spy_wga(correct, ids):
        scored.append(correct.shape[0])
        return real_wga(correct, ids)

    monkeypatch.setattr(dfr_module, "train_test_split", spy_split)
    monkeypatch.setattr(dfr_module, "_worst_group_accuracy", spy_wga)
    X, y, g = _grouped()
    Cs = [1.0, 0.1, 0.01]
    clf = DFRClassifier(Cs=Cs, n_retrains=2, random_state=0).fit(X, y, group_labels=g)
    train, select = split["train"], split["select"]
    assert np.intersect1d(train, select).size == 0 and train.size + select.size == X.shape[0]
    np.testing.assert_array_equal(np.bincount(g[select]), [30, 15, 12, 45])  # stratified by group
    # 3 Cs x 2 retrains on the training half (12 rows of each group), then 2 on all held-out rows
    assert [f["C"] for f in spy.fits] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01, clf.C_, clf.C_]
    assert [f["X"].shape[0] for f in spy.fits] == [48] * 6 + [96] * 2
    assert scored == [select.size] * 3
    assert clf.C_scores_.shape == (3,) and clf.C_ == Cs[int(np.argmax(clf.C_scores_))]
    np.testing.assert_array_equal(clf.Cs_, Cs)


def test_without_group_labels_classes_are_the_groups():
    X, y, g = _grouped()
    clf = DFRClassifier(Cs=[1.0], n_retrains=2, random_state=0).fit(X, y)
    assert clf.group_names_ == (0, 1)
    np.testing.assert_array_equal(clf.group_counts_, [90, 114])
    assert clf.subset_size_ == 90


def test_multiclass_is_one_vs_rest(monkeypatch):
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    X = rng.normal(size=(120, 3)) + 2 * np.eye(3)[y]
    clf = DFRClassifier(Cs=[1.0], n_retrains=1, random_state=0).fit(X, y)
    assert [f["y"].mean() for f in spy.fits] == pytest.approx([1 / 3] * 3)
    std = (X - X.mean(axis=0)) / X.std(axis=0)
    scores = np.stack([std @ f["coef"][0] + f["intercept"][0] for f in spy.fits], axis=1)
    np.testing.assert_allclose(clf.decision_function(X), scores, rtol=1e-8, atol=1e-10)
    assert clf.score(X, y) > 0.8


# -- where the held-out rows and features come from ------------------------------------
def test_prefit_mlp_features_are_the_hidden_activations():
    X, y, g = _grouped()
    base = ERMClassifier(hidden_layer_sizes=(6,), max_iter=50, random_state=0).fit(X, y)
    clf = DFRClassifier(estimator=base, prefit=True, Cs=[0.5], n_retrains=3, random_state=0).fit(X, y, group_labels=g)
    H = _last_layer_inputs(base, X)
    on_h = DFRClassifier(Cs=[0.5], n_retrains=3, random_state=0).fit(H, y, group_labels=g)
    # (the last layer is stored in the base head's float32)
    np.testing.assert_allclose(clf.decision_function(X), on_h.decision_function(H), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(clf.coefs_[0], base.coefs_[0])
    assert clf.estimator_ is base and not hasattr(clf, "coef_")
    # a prefit linear head: the features are X
    lin = ERMClassifier().fit(X, y)
    a = DFRClassifier(estimator=FrozenEstimator(lin), prefit=True, Cs=[0.5], random_state=0).fit(X, y, group_labels=g)
    b = DFRClassifier(Cs=[0.5], random_state=0).fit(X, y, group_labels=g)
    np.testing.assert_allclose(a.coef_, b.coef_)


def test_x_val_is_the_heldout_data_and_x_only_defines_the_model_for_a_linear_head():
    X, y, g = _grouped(seed=0)
    Xv, yv, gv = _grouped(seed=1)
    kw = dict(Cs=[1.0, 0.1], n_retrains=3, random_state=0)
    a = DFRClassifier(**kw).fit(X, y, group_labels=g, X_val=Xv, y_val=yv, group_labels_val=gv)
    b = DFRClassifier(**kw).fit(X + 5.0, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    c = DFRClassifier(**kw).fit(Xv, yv, group_labels=gv)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.coef_, c.coef_)
    assert a.holdout_source_ == "X_val" and a.estimator_ is None
    np.testing.assert_array_equal(a.group_counts_, [60, 30, 24, 90])


def test_mlp_estimator_is_fitted_on_x_and_the_heldout_fraction_on_the_rest():
    X, y, g = _grouped((120, 60, 48, 180))
    est = ERMClassifier(hidden_layer_sizes=(4,), max_iter=30)
    clf = DFRClassifier(estimator=est, Cs=[0.5], n_retrains=2, random_state=0).fit(X, y, group_labels=g)
    hold = clf.holdout_indices_
    assert hold.shape == (204,)
    np.testing.assert_array_equal(np.bincount(g[hold]), [60, 30, 24, 90])
    rest = np.setdiff1d(np.arange(X.shape[0]), hold)
    ref = ERMClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=clf._seed(1)).fit(X[rest], y[rest])
    np.testing.assert_array_equal(clf.estimator_.coefs_[0], ref.coefs_[0])
    assert est.__dict__.get("coefs_") is None  # the given estimator is cloned, not fitted
    with pytest.raises(ValueError, match="holdout_fraction=1"):
        DFRClassifier(estimator=est, holdout_fraction=1.0).fit(X, y, group_labels=g)


# -- small groups, errors, routing -------------------------------------------------------
def test_tiny_heldout_groups_warn_with_the_fix():
    X, y, g = _grouped((60, 30, 8, 90))
    with pytest.warns(TinyHeldOutGroupWarning, match="collapses") as record:
        DFRClassifier(Cs=[1.0, 0.1], n_retrains=2, random_state=0).fit(X, y, group_labels=g)
    message = str(record[0].message)
    assert "2: 8" in message and "min_group_size=20" in message and "Hold out more rows" in message
    # C tuning fits on half of each group: 30 rows give 15 there, under 20
    assert "1: 30" in message and "half of that (4)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", TinyHeldOutGroupWarning)
        DFRClassifier(Cs=[1.0], n_retrains=2, min_group_size=8, random_state=0).fit(X, y, group_labels=g)
    with pytest.warns(TinyHeldOutGroupWarning, match="fewer than 16 rows"):
        DFRClassifier(Cs=[1.0, 0.1], n_retrains=2, min_group_size=8, random_state=0).fit(X, y, group_labels=g)


def test_errors_name_the_argument_and_the_fix():
    X, y, g = _grouped()
    with pytest.raises(ValueError, match="prefit=True needs a fitted estimator"):
        DFRClassifier(prefit=True).fit(X, y, group_labels=g)
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        DFRClassifier(estimator=ERMClassifier(), prefit=True).fit(X, y, group_labels=g)
    with pytest.raises(ValueError, match="X_val is not used"):
        DFRClassifier(estimator=ERMClassifier().fit(X, y), prefit=True).fit(X, y, X_val=X, y_val=y)
    with pytest.raises(TypeError, match="skgroup head"):
        DFRClassifier(estimator=LogisticRegression()).fit(X, y, group_labels=g)
    with pytest.raises(ValueError, match="y_val"):
        DFRClassifier().fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="Cs"):
        DFRClassifier(Cs=[1.0, -0.1]).fit(X, y)
    member = np.eye(4, dtype=bool)[g]
    member[np.flatnonzero(g != 0)[:2], 0] = True
    with pytest.raises(ValueError, match="disjoint"):
        DFRClassifier().fit(X, y, group_labels=member)
    with pytest.raises(ValueError, match="group_labels_val"):
        DFRClassifier().fit(X, y, X_val=X, y_val=y, group_labels_val=g[:-1])
    one = np.r_[np.flatnonzero(g != 3), np.flatnonzero(g == 3)[:1]]
    with pytest.raises(ValueError, match="Cs=\\[0.1\\]"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TinyHeldOutGroupWarning)
            DFRClassifier().fit(X[one], y[one], group_labels=g[one])
    with pytest.raises(ValueError, match="no sample of class"):
        DFRClassifier().fit(X, y, X_val=X[y == 0], y_val=y[y == 0])


def test_group_labels_are_requested_and_routed_through_a_search():
    requests = DFRClassifier().get_metadata_routing().fit.requests
    assert requests["group_labels"] is True and requests["group_labels_val"] is True
    X, y, g = _grouped((120, 60, 48, 180))
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", TinyHeldOutGroupWarning)
        search = GridSearchCV(DFRClassifier(n_retrains=2, random_state=0), {"Cs": [[1.0], [0.05]]},
                              scoring=worst_group_scorer, cv=2).fit(X, y, group_labels=g)
    assert search.best_estimator_.group_names_ == (0, 1, 2, 3)


# -- effect --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_dfr_on_heldout_groups_beats_erm_on_the_worst_group(seed):
    """Sagawa et al.'s synthetic task with a readable core (sigma_core = 3): ERM on the training
    rows leans on the spurious block; DFR on validation rows with group labels (10% minority,
    about 100 rows per minority group) restores the worst group."""
    kw = dict(sigma_core=3.0, n_core=10, n_spurious=10)
    X, y, g = make_spurious_features(5000, random_state=seed, **kw)
    Xv, yv, gv = make_spurious_features(2000, random_state=seed + 100, **kw)
    Xt, yt, gt = make_spurious_features(4000, group_balanced=True, random_state=seed + 200, **kw)
    erm = ERMClassifier(random_state=0).fit(X, y)
    dfr = DFRClassifier(random_state=seed).fit(X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    wga_erm = worst_group_accuracy(yt, erm.predict(Xt), group_labels=gt)
    wga_dfr = worst_group_accuracy(yt, dfr.predict(Xt), group_labels=gt)
    assert wga_erm < 0.6 and wga_dfr > wga_erm + 0.2, (wga_erm, wga_dfr)
    # the spurious block's share of the weight (class 1's logit minus class 0's) drops
    share = lambda c: np.abs(c[1, 10:] - c[0, 10:]).sum() / np.abs(c[1] - c[0]).sum()  # noqa: E731
    assert share(dfr.coef_) < share(erm.coef_) - 0.15, (share(dfr.coef_), share(erm.coef_))


def test_training_group_labels_without_the_heldout_rows_groups_are_refused():
    # with X_val the held-out rows are X_val's: X's group labels cannot be their groups, and balancing
    # the classes instead (group_names_ = classes) would be another method under DFR's name
    X, y, g = _grouped()
    Xv, yv, gv = _grouped(seed=1)
    with pytest.raises(ValueError, match=r"group_labels_val"):
        DFRClassifier(random_state=0).fit(X, y, group_labels=g, X_val=Xv, y_val=yv)
    clf = DFRClassifier(random_state=0).fit(X, y, group_labels=g, X_val=Xv, y_val=yv, group_labels_val=gv)
    assert clf.group_names_ == (0, 1, 2, 3)
