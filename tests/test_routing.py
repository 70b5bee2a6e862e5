"""group_labels through scikit-learn's metadata routing.

A spy estimator records the rows and metadata it is fitted and scored on, so
each test checks that every validation fold is scored on *its own* slice of
the group labels and that an estimator which does not ask for group labels
never sees them.
"""

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skgroup import ERMClassifier
from skgroup.metrics import (
    MetadataRoutingRequired,
    bias_unsupervised_scorer,
    make_group_scorer,
    worst_class_scorer,
    worst_group_accuracy,
    worst_group_scorer,
)
from skgroup.model_selection import ValidationSplit, select_on_validation

N = 60
RNG = np.random.RandomState(0)
X = RNG.randn(N, 3)
Y = np.arange(N) % 2
G = (np.arange(N) // 2) % 3  # 3 groups, both classes in each
X[:, 0] += 2 * Y  # learnable


class FirstColumnOracle(ClassifierMixin, BaseEstimator):
    """Predicts from the first feature; records what reaches fit."""

    fitted_with = []

    def __init__(self, threshold=1.0):
        self.threshold = threshold

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        FirstColumnOracle.fitted_with.append(len(X))
        return self

    def predict(self, X):
        return (np.asarray(X)[:, 0] > self.threshold).astype(int)


class GroupAwareSpy(FirstColumnOracle):
    """Requests group_labels in fit (like GroupDROClassifier) and records them."""

    __metadata_request__fit = {"group_labels": True}
    seen = []

    def fit(self, X, y, group_labels=None):
        GroupAwareSpy.seen.append(None if group_labels is None else np.asarray(group_labels).copy())
        return super().fit(X, y)


def recording_scorer():
    calls = []

    def metric(y_true, y_pred, *, group_labels):
        calls.append((len(y_true), np.asarray(group_labels).copy()))
        return worst_group_accuracy(y_true, y_pred, group_labels=group_labels)

    return make_group_scorer(metric), calls


def expected_fold_scores(cv, est=FirstColumnOracle(), groups=None):
    out = []
    for _, test in cv.split(X, Y, groups):
        out.append(worst_group_accuracy(Y[test], est.predict(X[test]), group_labels=G[test]))
    return np.array(out)


@pytest.fixture
def routing():
    sklearn.set_config(enable_metadata_routing=True)
    yield


def test_gridsearch_scores_each_fold_on_its_own_slice(routing):
    scorer, calls = recording_scorer()
    cv = KFold(3, shuffle=True, random_state=0)
    gs = GridSearchCV(FirstColumnOracle(), {"threshold": [1.0]}, scoring=scorer, cv=cv)
    gs.fit(X, Y, group_labels=G)
    folds = [test for _, test in cv.split(X)]
    assert len(calls) == 3
    for (n, g), test in zip(calls, folds):
        assert n == len(test)
        np.testing.assert_array_equal(g, G[test])
    np.testing.assert_allclose(
        [gs.cv_results_[f"split{i}_test_score"][0] for i in range(3)], expected_fold_scores(cv)
    )


def test_estimator_that_does_not_request_never_sees_group_labels(routing):
    # FirstColumnOracle.fit has no group_labels parameter: routing must not pass it
    # (error_score="raise": a TypeError from fit must not hide as a NaN score)
    for est, grid in ((FirstColumnOracle(), {"threshold": [0.5, 1.0]}), (ERMClassifier(max_iter=20), {"l2_reg": [1e-3]})):
        gs = GridSearchCV(est, grid, scoring=worst_group_scorer, cv=3, error_score="raise")
        gs.fit(X, Y, group_labels=G)
        assert np.all(np.isfinite(gs.cv_results_["mean_test_score"]))


def test_requesting_estimator_gets_its_training_slice(routing):
    GroupAwareSpy.seen.clear()
    cv = KFold(3)
    GridSearchCV(GroupAwareSpy(), {"threshold": [1.0]}, scoring=worst_group_scorer, cv=cv, refit=False).fit(
        X, Y, group_labels=G
    )
    for seen, (train, _) in zip(GroupAwareSpy.seen, cv.split(X)):
        np.testing.assert_array_equal(seen, G[train])


def test_randomized_search(routing):
    cv = KFold(4, shuffle=True, random_state=1)
    rs = RandomizedSearchCV(
        FirstColumnOracle(), {"threshold": [1.0]}, n_iter=1, scoring=worst_group_scorer, cv=cv, random_state=0
    ).fit(X, Y, group_labels=G)
    assert rs.best_score_ == pytest.approx(expected_fold_scores(cv).mean())


def test_cross_validate_with_params(routing):
    cv = KFold(5)
    res = cross_validate(FirstColumnOracle(), X, Y, cv=cv, scoring=worst_group_scorer, params={"group_labels": G})
    np.testing.assert_allclose(res["test_score"], expected_fold_scores(cv))


def test_pipeline(routing):
    pipe = make_pipeline(StandardScaler(), ERMClassifier(max_iter=50))
    gs = GridSearchCV(pipe, {"ermclassifier__l2_reg": [1e-4, 1e-1]}, scoring=worst_group_scorer, cv=3)
    gs.fit(X, Y, group_labels=G)
    assert np.all(np.isfinite(gs.cv_results_["mean_test_score"]))
    # and a group-requesting step inside a pipeline receives its slice
    GroupAwareSpy.seen.clear()
    GridSearchCV(make_pipeline(StandardScaler(), GroupAwareSpy()), {"groupawarespy__threshold": [0.0]},
                 scoring=worst_group_scorer, cv=KFold(2), refit=False).fit(X, Y, group_labels=G)
    np.testing.assert_array_equal(GroupAwareSpy.seen[0], G[N // 2:])


def test_multimetric_with_refit(routing):
    gs = GridSearchCV(
        FirstColumnOracle(),
        {"threshold": [-5.0, 1.0]},
        scoring={"wga": worst_group_scorer, "wca": worst_class_scorer, "acc": "accuracy"},
        refit="wga",
        cv=KFold(3),
    ).fit(X, Y, group_labels=G)
    assert gs.best_params_ == {"threshold": 1.0}
    np.testing.assert_allclose(gs.cv_results_["split0_test_wga"][1], expected_fold_scores(KFold(3))[0])


def test_group_kfold_on_other_ids_alongside(routing):
    # `groups` goes to the splitter, `group_labels` to the scorer: no collision
    ids = np.arange(N) // 5  # 12 "patients"
    cv = GroupKFold(3)
    scorer, calls = recording_scorer()
    GridSearchCV(FirstColumnOracle(), {"threshold": [1.0]}, scoring=scorer, cv=cv).fit(
        X, Y, groups=ids, group_labels=G
    )
    for (_, g), (_, test) in zip(calls, cv.split(X, Y, ids)):
        np.testing.assert_array_equal(g, G[test])
        assert len(np.unique(g)) > 1  # folds hold several groups, not one


def test_routing_off_raises_with_the_fix_instead_of_nan():
    sklearn.set_config(enable_metadata_routing=False)
    gs = GridSearchCV(FirstColumnOracle(), {"threshold": [1.0]}, scoring=worst_group_scorer, cv=3)
    with pytest.raises(MetadataRoutingRequired, match="enable_metadata_routing=True"):
        gs.fit(X, Y)
    multi = GridSearchCV(FirstColumnOracle(), {"threshold": [1.0]}, cv=3, refit="wga",
                         scoring={"wga": worst_group_scorer, "acc": "accuracy"})
    with pytest.raises(MetadataRoutingRequired):
        multi.fit(X, Y)
    with pytest.raises(MetadataRoutingRequired):
        cross_validate(FirstColumnOracle(), X, Y, scoring=worst_group_scorer, cv=3)


def test_routing_on_but_labels_not_passed(routing):
    with pytest.raises(MetadataRoutingRequired, match="pass `group_labels=...`"):
        GridSearchCV(FirstColumnOracle(), {"threshold": [1.0]}, scoring=worst_group_scorer, cv=3).fit(X, Y)


def test_bias_unsupervised_scorer_routes_biased_predictions(routing):
    biased = (X[:, 1] > 0).astype(int)
    res = cross_validate(FirstColumnOracle(), X, Y, cv=KFold(3), scoring=bias_unsupervised_scorer,
                         params={"y_pred_biased": biased})
    assert np.all(np.isfinite(res["test_score"]))


def test_select_on_validation_protocol():
    train = dict(X=X[:40], y=Y[:40], group_labels=G[:40])
    val = dict(X=X[40:], y=Y[40:], group_labels=G[40:])
    from sklearn.utils import Bunch

    FirstColumnOracle.fitted_with.clear()
    best, search = select_on_validation(FirstColumnOracle(), {"threshold": [-5.0, 1.0]}, Bunch(**train), Bunch(**val))
    assert best.threshold == 1.0
    assert FirstColumnOracle.fitted_with[-1] == 40  # refit on train rows only, not train + val
    assert search.cv_results_["mean_test_score"][1] == pytest.approx(
        worst_group_accuracy(Y[40:], best.predict(X[40:]), group_labels=G[40:])
    )
    assert list(ValidationSplit(40, 20).split(X))[0][1][0] == 40
    assert not sklearn.get_config()["enable_metadata_routing"]  # left as found
