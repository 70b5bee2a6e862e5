import math

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import GridSearchCV

from skgroup.objectives import GroupDRO, Objective
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import ERMClassifier
from skgroup.estimators._group_dro import GroupDROClassifier
from skgroup.metrics import UngroupedRowsWarning, worst_group_accuracy, worst_group_scorer


@pytest.fixture(scope="module")
def bench():
    return make_spurious_benchmark(3000, 1000, 2000, random_state=0)


# -- mechanism -------------------------------------------------------------


def test_q_step_matches_formula_on_two_groups():
    """One online step: q_g <- q_g exp(eta (l_g + C / sqrt(n_g))), renormalised;
    the loss is sum_g q_g l_g with the updated q."""
    membership = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)  # n_g = 3, 2
    eta, C = 0.5, 1.0
    obj = Objective(reduction=GroupDRO(membership, eta=eta, adjustment=C))
    losses = torch.tensor([0.2, 0.4, 0.9, 1.5, 2.5], dtype=torch.float64)
    idx = torch.arange(5)
    out = obj.reduce(losses, idx)

    l0, l1 = 0.5, 2.0  # group means
    u0 = 0.5 * math.exp(eta * (l0 + C / math.sqrt(3)))
    u1 = 0.5 * math.exp(eta * (l1 + C / math.sqrt(2)))
    q = np.array([u0, u1]) / (u0 + u1)
    np.testing.assert_allclose(obj.reduction.q.numpy(), q, rtol=1e-12)
    assert float(out) == pytest.approx(q[0] * l0 + q[1] * l1, rel=1e-12)

    # a second step on a batch holding group 1 only: group 0 keeps its q up to renormalisation
    out = obj.reduce(torch.tensor([1.0], dtype=torch.float64), torch.tensor([3]))
    u = q * np.array([1.0, math.exp(eta * (1.0 + C / math.sqrt(2)))])
    np.testing.assert_allclose(obj.reduction.q.numpy(), u / u.sum(), rtol=1e-12)


def test_estimator_first_step_moves_q_by_the_adjustment():
    """At the zero initial head every loss is log 2, so after one full-batch step
    q is proportional to exp(eta (log 2 + C / sqrt(n_g))) only through C / sqrt(n_g)."""
    rng = np.random.RandomState(0)
    X = rng.randn(50, 3).astype(np.float32)
    y = np.r_[np.zeros(25, int), np.ones(25, int)]
    g = np.r_[np.zeros(10, int), np.ones(40, int)]
    eta, C = 0.5, 2.0
    clf = GroupDROClassifier(
        eta=eta, generalization_adjustment=C, balance_groups=False, batch_size=50,
        max_iter=1, record_history=True, random_state=0,
    ).fit(X, y, group_labels=g)
    u = np.exp(eta * (math.log(2) + C / np.sqrt([10.0, 40.0])))
    np.testing.assert_allclose(clf.q_, u / u.sum(), rtol=1e-6)
    assert clf.loss_curve_[0] == pytest.approx(math.log(2), rel=1e-5)
    np.testing.assert_allclose(clf.history_["q"], clf.q_[None, :])
    np.testing.assert_allclose(clf.history_["group_loss"], [[math.log(2)] * 2], rtol=1e-5)


def test_history_shapes_and_q_on_simplex(bench):
    tr = bench.train
    clf = GroupDROClassifier(max_iter=3, record_history=True, random_state=0)
    clf.fit(tr.X, tr.y, group_labels=tr.group_labels)
    assert clf.history_["q"].shape == (3, 4)
    assert clf.history_["group_loss"].shape == (3, 4)
    np.testing.assert_allclose(clf.history_["q"].sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.history_["q"][-1], clf.q_)
    assert clf.group_names_ == (0, 1, 2, 3)
    clf.set_params(record_history=False).fit(tr.X, tr.y, group_labels=tr.group_labels)
    assert "q" not in clf.history_ and clf.history_["train_loss"].shape == (3,)


def test_balanced_sampling_draws_groups_equally(bench, monkeypatch):
    import skgroup.estimators._group_dro as mod

    seen = []
    real = mod.BalancedSampler

    def spy(strata, *args, **kwargs):
        sampler = real(strata, *args, **kwargs)
        seen.append((strata, sampler))
        return sampler

    monkeypatch.setattr(mod, "BalancedSampler", spy)
    tr = bench.train
    GroupDROClassifier(max_iter=1, random_state=0).fit(tr.X, tr.y, group_labels=tr.group_labels)
    strata, sampler = seen[0]
    np.testing.assert_array_equal(strata, tr.group_labels)
    # each group is drawn with probability 1/4, a row uniformly within its group
    np.testing.assert_allclose(np.bincount(strata, weights=sampler.p), 0.25)
    assert sampler.epoch(np.random.default_rng(0)).size == tr.y.size

    seen.clear()
    GroupDROClassifier(max_iter=1, balance_groups=False, random_state=0).fit(
        tr.X, tr.y, group_labels=tr.group_labels
    )
    assert not seen


def test_without_group_labels_classes_are_groups():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 4)
    y = np.array(["a", "b", "c"])[rng.randint(0, 3, 120)]
    clf = GroupDROClassifier(random_state=0).fit(X, y)
    assert clf.group_names_ == ("a", "b", "c")
    assert clf.q_.shape == (3,)


def test_membership_matrix_and_overlap():
    rng = np.random.RandomState(0)
    X = rng.randn(200, 4)
    y = rng.randint(0, 2, 200)
    M = np.zeros((200, 3), dtype=bool)
    M[:, 0] = True
    M[:50, 1] = True
    M[100:, 2] = True
    with pytest.raises(ValueError, match="balance_groups=False"):
        GroupDROClassifier().fit(X, y, group_labels=M)
    clf = GroupDROClassifier(balance_groups=False, random_state=0).fit(X, y, group_labels=M)
    assert clf.q_.shape == (3,) and clf.group_names_ == (0, 1, 2)
    with pytest.raises(ValueError, match="no group"), pytest.warns(UngroupedRowsWarning, match="50 of the 200"):
        GroupDROClassifier().fit(X, y, group_labels=M[:, 1:])  # rows 50-99 in no group
    M[:, 2] = False
    with pytest.raises(ValueError, match="no training sample"):
        GroupDROClassifier(balance_groups=False).fit(X, y, group_labels=M)


def test_bad_group_labels_name_the_argument():
    X, y = np.random.RandomState(0).randn(20, 2), np.arange(20) % 2
    with pytest.raises(ValueError, match="group_labels"):
        GroupDROClassifier().fit(X, y, group_labels=np.zeros(19))
    with pytest.raises(ValueError, match="solver"):
        GroupDROClassifier(solver="lbfgs").fit(X, y)


# -- metadata routing ------------------------------------------------------


def test_requests_group_labels_by_default():
    with sklearn.config_context(enable_metadata_routing=True):
        routing = GroupDROClassifier().get_metadata_routing()
        assert routing.consumes("fit", ["group_labels"]) == {"group_labels"}


class _SpyDRO(GroupDROClassifier):
    seen = []

    def fit(self, X, y, group_labels=None):
        type(self).seen.append(None if group_labels is None else np.asarray(group_labels).copy())
        return super().fit(X, y, group_labels=group_labels)


def test_gridsearch_routes_group_labels_to_fit_and_scorer(bench):
    tr, va = bench.train, bench.val
    X = np.vstack([tr.X, va.X])
    y = np.r_[tr.y, va.y]
    g = np.r_[tr.group_labels, va.group_labels]
    train_idx, val_idx = np.arange(len(tr.y)), len(tr.y) + np.arange(len(va.y))
    _SpyDRO.seen = []
    est = _SpyDRO(max_iter=2, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            est, {"eta": [0.01]}, scoring=worst_group_scorer, cv=[(train_idx, val_idx)], refit=False
        )
        search.fit(X, y, group_labels=g)
    assert len(_SpyDRO.seen) == 1
    np.testing.assert_array_equal(_SpyDRO.seen[0], g[train_idx])  # train fold's labels
    # the scorer got the validation fold's labels: recompute the score by hand
    ref = GroupDROClassifier(max_iter=2, eta=0.01, random_state=0).fit(
        X[train_idx], y[train_idx], group_labels=g[train_idx]
    )
    expected = worst_group_accuracy(y[val_idx], ref.predict(X[val_idx]), group_labels=g[val_idx])
    assert search.cv_results_["split0_test_score"][0] == pytest.approx(expected)


# -- effect ----------------------------------------------------------------


def test_worst_group_accuracy_clearly_above_erm(bench):
    tr, te = bench.train, bench.test
    erm = ERMClassifier(random_state=0).fit(tr.X, tr.y)
    dro = GroupDROClassifier(random_state=0).fit(tr.X, tr.y, group_labels=tr.group_labels)
    wga_erm = worst_group_accuracy(te.y, erm.predict(te.X), group_labels=te.group_labels)
    wga_dro = worst_group_accuracy(te.y, dro.predict(te.X), group_labels=te.group_labels)
    assert wga_erm < 0.55
    assert wga_dro > wga_erm + 0.15


# -- generic ---------------------------------------------------------------


# determinism, pickling, cloning and multiclass output: tests/test_common.py (skgroup's suite)
def test_q_is_reproducible_with_six_groups():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 5).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.3 * rng.randn(300, 3), axis=1)
    g = (X[:, 4] > 0).astype(int) * 3 + y
    a = GroupDROClassifier(random_state=3).fit(X, y, group_labels=g)
    b = GroupDROClassifier(random_state=3).fit(X, y, group_labels=g)
    np.testing.assert_array_equal(a.q_, b.q_)
    assert a.q_.shape == (6,)
