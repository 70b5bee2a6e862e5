"""RobustSearchCV: rules, validation split and folds, intervals, shared work, the sklearn contract."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import KFold, ShuffleSplit

from skgroup import ERMClassifier, GroupDROClassifier, JTTClassifier
from skgroup._cache import SHARED_FITS
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import all_estimators
from skgroup.estimators._base import biased_erm
from skgroup.metrics import (
    bias_unsupervised_score,
    worst_class_accuracy,
    worst_group_accuracy,
)
from skgroup.model_selection import RobustSearchCV

ERM_GRID = (ERMClassifier(), {"l2_reg": [1e-4, 1.0]})


@pytest.fixture(scope="module")
def data():
    return make_spurious_benchmark(400, 300, 300, random_state=0)


def _fit(search, data, **kw):
    tr, va = data.train, data.val
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y, **kw)


class Spy(ClassifierMixin, BaseEstimator):
    """Predicts from one feature's sign; records what reaches fit."""

    calls = []

    def __init__(self, column=0, fail=False):
        self.column = column
        self.fail = fail

    def fit(self, X, y, X_val=None, y_val=None, group_labels_val=None):
        if self.fail:
            raise RuntimeError("this candidate always fails")
        Spy.calls.append({"n": len(X), "X_val": X_val is not None, "group_labels_val": group_labels_val})
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return self.classes_[(np.asarray(X)[:, self.column] > 0).astype(int)]


def test_validation_split_protocol(data):
    Spy.calls.clear()
    search = _fit(RobustSearchCV([(Spy(), {"column": [0, 150, 199]}), ERM_GRID], selection="worst_class",
                                 random_state=0), data)
    res = search.results_
    assert list(res["estimator"]) == ["Spy"] * 3 + ["ERMClassifier"] * 2
    assert search.best_index_ == int(np.argmax(res["score"]))
    # scores are the rule's metric of each candidate's validation predictions
    va = data.val
    pred = Spy(column=150).fit(data.train.X, data.train.y).predict(va.X)
    assert res["score"][1] == pytest.approx(worst_class_accuracy(va.y, pred))
    # trained on the training rows only, and the winner is the search's own fit
    assert all(c["n"] == len(data.train.y) for c in Spy.calls)
    np.testing.assert_array_equal(search.predict(va.X), search.best_estimator_.predict(va.X))
    assert search.best_params_ == res["params"][search.best_index_]
    assert search.selection_ == "worst_class"
    lo, hi = np.asarray(res["ci_low"]), np.asarray(res["ci_high"])
    assert np.all(lo <= np.asarray(res["score"]) + 1e-12) and np.all(np.asarray(res["score"]) <= hi + 1e-12)


def test_label_free_rules_never_pass_validation_group_labels(data):
    Spy.calls.clear()
    _fit(RobustSearchCV([(Spy(), {})], selection="worst_class"), data, group_labels_val=data.val.group_labels)
    assert Spy.calls[-1]["X_val"] and Spy.calls[-1]["group_labels_val"] is None
    _fit(RobustSearchCV([(Spy(), {})], selection="worst_group"), data, group_labels_val=data.val.group_labels)
    np.testing.assert_array_equal(Spy.calls[-1]["group_labels_val"], data.val.group_labels)


def test_worst_group_rule_needs_validation_group_labels(data):
    with pytest.raises(ValueError, match="group_labels_val.*'worst_class'"):
        _fit(RobustSearchCV([ERM_GRID], selection="worst_group"), data)
    search = _fit(RobustSearchCV([ERM_GRID], selection="worst_group", random_state=0), data,
                  group_labels_val=data.val.group_labels)
    va = data.val
    assert search.best_score_ == pytest.approx(
        worst_group_accuracy(va.y, search.predict(va.X), group_labels=va.group_labels))


def test_bias_unsupervised_rule_fits_its_biased_model_once(data):
    SHARED_FITS.clear()
    search = _fit(RobustSearchCV([(ERMClassifier(), {"l2_reg": [1e-4, 1e-2, 1.0]})], selection="bias_unsupervised",
                                 random_state=0), data)
    # one biased ERM for the search's score and all three candidates' early stopping
    assert SHARED_FITS.fits["biased_erm"] == 1 and search.shared_fits_["biased_erm"] == 1
    tr, va = data.train, data.val
    biased = biased_erm(tr.X, np.unique(tr.y, return_inverse=True)[1]).predict(va.X)
    assert search.best_score_ == pytest.approx(
        bias_unsupervised_score(va.y, search.predict(va.X), y_pred_biased=biased))
    assert search.best_estimator_.monitor == "bias_unsupervised"


def test_custom_scorers(data):
    search = _fit(RobustSearchCV([ERM_GRID], selection="balanced_accuracy", n_bootstrap=200, random_state=0), data)
    assert np.all(np.isfinite(search.results_["ci_low"]))

    def second_worst(y, p, *, group_labels):
        accs = sorted(np.mean(p[group_labels == g] == y[group_labels == g]) for g in np.unique(group_labels))
        return accs[1]

    from skgroup.metrics import make_group_scorer

    search = _fit(RobustSearchCV([ERM_GRID], selection=make_group_scorer(second_worst), n_bootstrap=200,
                                 random_state=0), data, group_labels_val=data.val.group_labels)
    va = data.val
    assert search.best_score_ == pytest.approx(second_worst(va.y, search.predict(va.X), group_labels=va.group_labels))
    with pytest.raises(ValueError, match="neither a rule"):
        _fit(RobustSearchCV([ERM_GRID], selection="worst_groups"), data)


def test_cross_validation_folds(data):
    tr = data.train
    search = RobustSearchCV([ERM_GRID], "worst_class", cv=KFold(3, shuffle=True, random_state=0), random_state=0)
    search.fit(tr.X, tr.y)
    # pooled out-of-fold predictions, each row predicted by the model not trained on it
    oof = np.empty_like(tr.y)
    for train, test in KFold(3, shuffle=True, random_state=0).split(tr.X):
        oof[test] = ERMClassifier(l2_reg=search.best_params_["l2_reg"], random_state=0).fit(
            tr.X[train], tr.y[train]).predict(tr.X[test])
    assert search.best_score_ == pytest.approx(worst_class_accuracy(tr.y, oof))
    assert search.n_splits_ == 3 and search.refit_time_ > 0
    np.testing.assert_array_equal(search.best_estimator_.coef_,
                                  ERMClassifier(random_state=0, **search.best_params_).fit(tr.X, tr.y).coef_)
    with pytest.raises(ValueError, match="tested at most once"):
        RobustSearchCV([ERM_GRID], cv=ShuffleSplit(3, random_state=0)).fit(tr.X, tr.y)
    with pytest.raises(ValueError, match="two validation schemes"):
        _fit(RobustSearchCV([ERM_GRID], cv=3), data)
    with pytest.raises(ValueError, match="group_labels=.*'worst_class'"):
        RobustSearchCV([ERM_GRID], selection="worst_group", cv=3).fit(tr.X, tr.y)


def test_candidate_forms_and_auto(data):
    search = RobustSearchCV(["ERMClassifier", JTTClassifier(batch_size=64), (GroupDROClassifier(max_iter=2), {})])
    configs = search._configs(400, 200, 2)
    names = [c[0] for c in configs]
    assert names.count("ERMClassifier") == 3 and names.count("GroupDROClassifier") == 1
    jtt = [c for c in configs if c[0] == "JTTClassifier"]
    assert len(jtt) > 1 and all("lambda_up" in c[2] for c in jtt) and jtt[0][1].batch_size == 64
    auto = {c[0] for c in RobustSearchCV()._configs(3000, 200, 2)}
    assert auto == {n for n, _ in all_estimators()}
    with pytest.raises(ValueError, match="class name"):
        RobustSearchCV([42])._configs(400, 200, 2)
    with pytest.raises(ValueError, match="not a skgroup estimator"):
        RobustSearchCV(["NoSuchClassifier"])._configs(400, 200, 2)


def test_intervals_and_distinguishability(data):
    # a candidate reading a pure-noise column is worse beyond doubt; identical ones are not
    search = _fit(RobustSearchCV([(ERMClassifier(), {"l2_reg": [1e-4, 1e-4]}), (Spy(column=199), {})],
                                 random_state=0), data)
    res = search.results_
    assert list(res["distinguishable"]) == [False, False, True]
    assert search.n_indistinguishable_ == 1  # the identical twin; not the noise reader, not itself
    assert res["diff_ci_low"][2] > 0 and res["diff_ci_low"][search.best_index_] == 0
    assert list(res["rank"])[:2] in ([1, 2], [2, 1]) and res["rank"][2] == 3


def test_failed_candidates_are_recorded_or_raise(data):
    search = _fit(RobustSearchCV([(Spy(fail=True), {}), ERM_GRID], random_state=0), data)
    assert np.isnan(search.results_["score"][0]) and "always fails" in search.results_["error"][0]
    assert search.best_estimator_name_ == "ERMClassifier"
    with pytest.raises(RuntimeError, match="always fails"):
        _fit(RobustSearchCV([(Spy(fail=True), {}), ERM_GRID], error_score="raise"), data)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_shared_work_once_also_in_parallel(data, n_jobs):
    SHARED_FITS.clear()
    grid = (JTTClassifier(batch_size=64), {"lambda_up": [2, 5, 10], "id_epochs": [1, 2]})
    search = _fit(RobustSearchCV([grid], n_jobs=n_jobs, random_state=0), data)
    # two identification settings, each fitted once, whatever the number of workers
    assert search.shared_fits_["jtt_identification"] == 2
    if n_jobs == 1:
        assert SHARED_FITS.fits["jtt_identification"] == 2



def test_parallel_equals_sequential(data):
    grid = (JTTClassifier(batch_size=64), {"lambda_up": [2, 5]})
    a = _fit(RobustSearchCV([grid, ERM_GRID], n_jobs=2, random_state=0), data)
    with SHARED_FITS.disabled():
        b = _fit(RobustSearchCV([grid, ERM_GRID], n_jobs=1, random_state=0), data)
    np.testing.assert_array_equal(a.results_["score"], b.results_["score"])
    np.testing.assert_array_equal(a.results_["ci_low"], b.results_["ci_low"])


def test_clone_pickle_and_predict_contract(data):
    search = RobustSearchCV([ERM_GRID], selection="accuracy", n_bootstrap=200, random_state=0)
    assert clone(search).get_params()["candidates"][0][1] == ERM_GRID[1]
    _fit(search, data)
    again = pickle.loads(pickle.dumps(search))
    te = data.test
    np.testing.assert_array_equal(again.predict(te.X), search.predict(te.X))
    np.testing.assert_allclose(search.predict_proba(te.X).sum(axis=1), 1.0, rtol=1e-6)
    assert search.score(te.X, te.y) == pytest.approx(np.mean(search.predict(te.X) == te.y))
    with pytest.raises(ValueError, match="features"):
        search.predict(te.X[:, :5])
    with pytest.raises(ValueError, match="both X_val and y_val"):
        RobustSearchCV([ERM_GRID]).fit(data.train.X, data.train.y, X_val=data.val.X)


def _check_search():
    # the search's contract, not the candidates': a fast scikit-learn candidate, two folds
    from sklearn.linear_model import LogisticRegression

    return RobustSearchCV([(LogisticRegression(max_iter=500), {"C": [0.1, 10.0]})], cv=2, n_bootstrap=200,
                          random_state=0)


@pytest.mark.filterwarnings("ignore")
def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    failed = [r for r in check_estimator(_check_search(), on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:200]) for r in failed]


def test_plot_search_results(data):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skgroup.analysis import plot_search_results

    search = _fit(RobustSearchCV([ERM_GRID, (Spy(column=199), {})], "worst_class", random_state=0), data)
    ax = plot_search_results(search)
    assert len(ax.get_yticklabels()) == 3 and "worst class" in ax.get_xlabel()
    assert ax.get_yticklabels()[0].get_text().startswith("ERM")  # the best on top
    plot_search_results(search.results_, top=1)
    plt.close("all")


def test_dask_backend(data):
    pytest.importorskip("distributed")
    from dask.distributed import Client, LocalCluster
    from joblib import parallel_backend

    grid = (JTTClassifier(batch_size=64), {"lambda_up": [2, 5], "id_epochs": [1, 2]})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster), parallel_backend("dask"):
        par = _fit(RobustSearchCV([grid], n_jobs=-1, random_state=0), data)
    seq = _fit(RobustSearchCV([grid], random_state=0), data)
    np.testing.assert_array_equal(par.results_["score"], seq.results_["score"])
    assert par.shared_fits_["jtt_identification"] == 2


def test_candidate_warnings_are_recorded_not_repeated(data):
    class Noisy(Spy):
        def fit(self, X, y, **kw):
            warnings.warn("settings do not suit", UserWarning)
            return super().fit(X, y, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the search itself raises none
        search = RobustSearchCV([(Noisy(), {}), ERM_GRID], "worst_class", random_state=0).fit(
            data.train.X, data.train.y, X_val=data.val.X, y_val=data.val.y)
    assert search.results_["warnings"][0] == "UserWarning"


def test_the_default_rule_falls_back_to_worst_class_where_no_groups_can_be_inferred(data):
    # class 1 has 2 training rows: the default inferrer's silhouette needs 3 in every class
    tr, va = data.train, data.val
    keep = np.r_[np.flatnonzero(tr.y == 0), np.flatnonzero(tr.y == 1)[:2]]
    with pytest.warns(UserWarning, match="could not be inferred.*class 1 has 2 row.*'worst_class' instead"):
        search = RobustSearchCV([ERM_GRID], random_state=0).fit(tr.X[keep], tr.y[keep], X_val=va.X, y_val=va.y)
    assert search.selection_ == "worst_class"
    assert search.best_score_ == pytest.approx(worst_class_accuracy(va.y, search.predict(va.X)))
    # an inferrer the user chose is not replaced: its error is the user's to see
    from skgroup.groups import ClusterInferrer

    with pytest.raises(ValueError, match="class 1 has 2 row"):
        RobustSearchCV([ERM_GRID], group_inferrer=ClusterInferrer("features"), random_state=0).fit(
            tr.X[keep], tr.y[keep], X_val=va.X, y_val=va.y)


def _below_majority_case(seed=0):
    """Binary data, 70% majority; a candidate that predicts the opposite of a useful rule."""
    rng = np.random.RandomState(seed)
    X = rng.randn(600, 4).astype(np.float32)
    y = (X[:, 0] + 0.8 * rng.randn(600) > 0.7).astype(int)
    return X[:400], y[:400], X[400:], y[400:]


class _Inverted(ERMClassifier):
    """ERM that answers the opposite class: below the majority class by construction."""

    def predict(self, X):
        return self.classes_[1 - np.searchsorted(self.classes_, super().predict(X))]


def test_the_search_never_picks_a_candidate_below_the_majority_class():
    from sklearn.metrics import make_scorer

    X, y, Xv, yv = _below_majority_case()
    # a selection score that the inverted model wins: the error rate
    error_rate = make_scorer(lambda t, p: float(np.mean(t != p)))
    search = RobustSearchCV([(_Inverted(), {"l2_reg": [1e-4]}), (ERMClassifier(), {"l2_reg": [1e-4]})],
                            selection=error_rate, n_bootstrap=200, random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    scores = dict(zip(search.results_["estimator"], search.results_["score"]))
    below = dict(zip(search.results_["estimator"], search.results_["below_majority"]))
    assert below["_Inverted"] and not below["ERMClassifier"]
    assert scores["_Inverted"] > scores["ERMClassifier"]  # it would win on the score alone
    assert search.best_estimator_name_ == "ERMClassifier" and not search.best_below_majority_
    assert search.results_["rank"][list(search.results_["estimator"]).index("ERMClassifier")] == 1


def test_the_search_always_tries_erm_and_raises_the_picks_warnings():
    X, y, Xv, yv = _below_majority_case()
    search = RobustSearchCV([(JTTClassifier(), {"lambda_up": [5]})], selection="worst_class",
                            random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    assert "ERMClassifier" in set(search.results_["estimator"])
    only = RobustSearchCV([(JTTClassifier(), {"lambda_up": [5]})], selection="worst_class", include_erm=False,
                          random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    assert set(only.results_["estimator"]) == {"JTTClassifier"}

    class Noisy(ERMClassifier):
        def fit(self, X, y, **kw):
            import warnings as w

            w.warn("this candidate is shaky", RuntimeWarning)
            return super().fit(X, y, **kw)

    with pytest.warns(RuntimeWarning, match="The pick Noisy.*shaky"):
        RobustSearchCV([(Noisy(), {"l2_reg": [1e-4]})], random_state=0).fit(X, y, X_val=Xv, y_val=yv)


# -- validation labels are the training classes, compared as such --------------------------
def test_string_labels_are_not_truncated_to_the_validation_dtype(data):
    tr, va = data.train, data.val
    labels = np.array(["1", "10"])
    search = RobustSearchCV([(ERMClassifier(), {"l2_reg": [1e-4]})], selection="accuracy", random_state=0)
    y_val = labels[va.y]
    keep = y_val == "1"  # validation holds only the short label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(tr.X, labels[tr.y], X_val=va.X[keep], y_val=list(y_val[keep]))  # dtype <U1
    truth = np.mean(search.best_estimator_.predict(va.X[keep]) == "1")
    assert search.best_score_ == pytest.approx(truth) and truth < 1.0


@pytest.mark.parametrize("y_val, match", [
    (lambda y: np.where(y == 1, 2, y), r"\[2\]"),            # a class the training rows never had
    (lambda y: y.astype(str), "str"),                      # str against int classes
    (lambda y: y.astype(bool), "bool"),                    # bool against int classes
])
@pytest.mark.parametrize("early_stopping", [True, False])
def test_validation_labels_outside_the_classes_are_refused(data, y_val, match, early_stopping):
    tr, va = data.train, data.val
    search = RobustSearchCV([ERM_GRID], selection="worst_class", early_stopping=early_stopping, random_state=0)
    with pytest.raises(ValueError, match="y_val") as info:
        search.fit(tr.X, tr.y, X_val=va.X, y_val=y_val(va.y))
    assert info.match(match)


@pytest.mark.parametrize("n_bootstrap, level", [(1, 0.95), (100, 0.95), (500, 0.99)])
def test_too_few_bootstrap_replicates_for_the_level_are_refused(data, n_bootstrap, level):
    search = RobustSearchCV([ERM_GRID], n_bootstrap=n_bootstrap, confidence_level=level, random_state=0)
    with pytest.raises(ValueError, match=r"n_bootstrap.*confidence_level"):
        _fit(search, data)


def test_enough_replicates_give_an_interval_around_the_score(data):
    search = _fit(RobustSearchCV([ERM_GRID], selection="accuracy", n_bootstrap=200, random_state=0), data)
    low, high = search.best_score_ci_
    assert low <= search.best_score_ <= high and low < high


class _ValidationMemorizer(ClassifierMixin, BaseEstimator):
    """Trains on X_val (as DFR does) by memorising it: 1-nearest neighbour over the validation rows it got."""

    _fits_on_validation = True

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None):
        self.classes_ = np.unique(y)
        self.memory_ = (X, y) if X_val is None else (np.asarray(X_val), np.asarray(y_val))
        return self

    def predict(self, X):
        Xm, ym = self.memory_
        d = ((np.asarray(X)[:, None, :] - Xm[None, :, :]) ** 2).sum(-1)
        return ym[d.argmin(1)]


def test_methods_that_train_on_x_val_are_cross_fitted_not_scored_on_what_they_saw():
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(200, 5)), rng.normal(size=(300, 5))
    y, yv = rng.integers(0, 2, 200), rng.integers(0, 2, 300)  # labels are noise: nothing generalises
    search = RobustSearchCV([(_ValidationMemorizer(), {})], selection="accuracy", include_erm=False,
                            n_bootstrap=200, random_state=0)
    search.fit(X, y, X_val=Xv, y_val=yv)
    # scored on the rows it memorised, it would score 1.0; cross-fitted, each half is predicted by the
    # copy that saw the other half: chance
    assert abs(search.best_score_ - 0.5) < 0.1
    # the pick trains on every validation row, as the method's paper does
    assert search.best_estimator_.memory_[0].shape == (300, 5)
    np.testing.assert_array_equal(search.best_estimator_.predict(Xv), yv)


def test_gradtune_gets_its_held_out_rows_from_the_validation_split(data):
    from skgroup import GradTuneClassifier

    tr, va = data.train, data.val
    search = RobustSearchCV([(GradTuneClassifier(n_top=40, n_finetune=50, max_iter=20), {"lr_scale": [0.005, 0.05]})],
                            selection="worst_class", include_erm=False, n_bootstrap=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    pick = search.best_estimator_
    assert pick.holdout_source_ == "X_val"
    assert pick.holdout_indices_.shape[0] == round(0.5 * va.X.shape[0])  # half of all validation rows
    assert np.isfinite(search.results_["score"]).all()
