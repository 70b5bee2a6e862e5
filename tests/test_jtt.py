import pickle
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
import pytest
import sklearn
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV

import skgroup.estimators._jtt as jtt_module
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import ERMClassifier
from skgroup.estimators._jtt import EmptyErrorSetWarning, JTTClassifier
from skgroup.metrics import worst_group_accuracy, worst_group_scorer
from skgroup.model_selection import select_on_validation


# sklearn checks: tests/test_common.py


def _data(n=400, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 6).astype(np.float32)
    y = (X[:, 0] + 0.8 * rng.randn(n) > 0).astype(int)
    return X, y


# -- mechanism -------------------------------------------------------------


def test_error_set_is_identification_models_misclassified_rows():
    X, y = _data()
    clf = JTTClassifier(id_epochs=3, random_state=5).fit(X, y)
    ident = clf.identification_model_
    np.testing.assert_array_equal(clf.error_set_, ident.predict(X) != y)
    assert 0 < clf.error_set_.sum() < len(y)
    # stage 1 is plain ERM for id_epochs epochs with the shared settings (seed = random_state),
    # at the final model's learning rate ('auto': 1e-2 rescaled to the rows' median norm)
    norm = np.median(np.linalg.norm(X, axis=1))
    assert clf.learning_rate_ == pytest.approx(1e-2 * np.sqrt(8) / norm)
    assert ident.learning_rate == clf.learning_rate_
    ref = ERMClassifier(
        solver="adamw", max_iter=3, batch_size=32, learning_rate=clf.learning_rate_, l2_reg=1e-4, random_state=5
    ).fit(X, y)
    np.testing.assert_array_equal(ident.coef_, ref.coef_)
    assert isinstance(ident, ERMClassifier) and ident.max_iter == 3


def test_stage_one_overrides():
    X, y = _data()
    clf = JTTClassifier(
        id_l2_reg=0.5, id_solver="sgd", id_learning_rate=0.05, random_state=0
    ).fit(X, y)
    p = clf.identification_model_.get_params()
    assert (p["l2_reg"], p["solver"], p["learning_rate"]) == (0.5, "sgd", 0.05)
    clf = JTTClassifier(solver="lbfgs", upweight_mode="reweight", max_iter=50, random_state=0).fit(X, y)
    assert clf.identification_model_.solver == "adamw"  # T epochs need a minibatch solver
    with warnings.catch_warnings():
        # stopping L-BFGS at T iterations is intended: no convergence warning
        warnings.simplefilter("error", ConvergenceWarning)
        clf = JTTClassifier(id_solver="lbfgs", id_epochs=2, random_state=0).fit(X, y)
    assert clf.identification_model_.n_iter_ <= 2


def test_each_error_row_is_drawn_lambda_up_times_per_epoch(monkeypatch):
    epochs = []
    real = jtt_module.RepeatSampler

    class Spy(real):
        def epoch(self, rng):
            order = super().epoch(rng)
            epochs.append(order)
            return order

    monkeypatch.setattr(jtt_module, "RepeatSampler", Spy)
    X, y = _data()
    clf = JTTClassifier(lambda_up=7, max_iter=3, random_state=0).fit(X, y)
    assert len(epochs) == 3
    E = clf.error_set_
    for order in epochs:
        counts = np.bincount(order, minlength=len(y))
        assert np.all(counts[E] == 7) and np.all(counts[~E] == 1)
        assert order.size == len(y) - E.sum() + 7 * E.sum()
    assert clf.lambda_up_ == 7.0


def test_auto_lambda_is_the_papers_heuristic():
    X, y = _data()
    clf = JTTClassifier(lambda_up="auto", upweight_mode="reweight", random_state=0).fit(X, y)
    n, k = len(y), clf.error_set_.sum()
    assert clf.lambda_up_ == pytest.approx((n - k) / k)
    clf = JTTClassifier(lambda_up="auto", random_state=0).fit(X, y)
    n, k = len(y), clf.error_set_.sum()
    assert clf.lambda_up_ == round((n - k) / k)


def test_reweight_mode_weights(monkeypatch):
    seen = []
    real = jtt_module.Weighted

    def spy(weights, *args, **kwargs):
        reduction = real(weights, *args, **kwargs)
        seen.append(reduction.sample_weight.numpy())
        return reduction

    monkeypatch.setattr(jtt_module, "Weighted", spy)
    X, y = _data()
    clf = JTTClassifier(
        lambda_up=4, upweight_mode="reweight", solver="lbfgs", max_iter=100, random_state=0
    ).fit(X, y)
    w, E = seen[0], clf.error_set_
    # lambda_up on the error set, 1 elsewhere, scaled to mean 1 (the upsampled epoch's mean loss)
    np.testing.assert_allclose(w[E] / w[~E][0], 4.0)
    np.testing.assert_allclose(w[~E], w[~E][0])
    assert w.mean() == pytest.approx(1.0)


def test_reweight_and_upsample_reach_the_same_model():
    # equal in expectation: run both to convergence and compare the decision rules
    X, y = _data(n=600)
    kw = dict(lambda_up=3, id_epochs=1, learning_rate=3e-3, random_state=0)
    up = JTTClassifier(upweight_mode="upsample", max_iter=60, **kw).fit(X, y)
    rw = JTTClassifier(upweight_mode="reweight", solver="lbfgs", max_iter=300, **kw).fit(X, y)
    np.testing.assert_array_equal(up.error_set_, rw.error_set_)
    assert np.mean(up.predict(X) == rw.predict(X)) > 0.97


def test_empty_error_set_warns_and_is_erm():
    X, y = make_blobs(n_samples=200, centers=[[-5, -5], [5, 5]], cluster_std=0.5, random_state=0)
    with pytest.warns(EmptyErrorSetWarning, match="error set is empty"):
        clf = JTTClassifier(lambda_up="auto", id_epochs=20, random_state=0).fit(X, y)
    assert clf.error_set_.sum() == 0 and clf.lambda_up_ == 1.0
    assert clf.score(X, y) == 1.0
    with pytest.warns(EmptyErrorSetWarning):
        JTTClassifier(upweight_mode="reweight", id_epochs=20, random_state=0).fit(X, y)


def test_bad_parameters_say_the_fix():
    X, y = _data(n=50)
    with pytest.raises(ValueError, match="upweight_mode='reweight'"):
        JTTClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="whole number"):
        JTTClassifier(lambda_up=2.5).fit(X, y)
    JTTClassifier(lambda_up=2.5, upweight_mode="reweight", random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="lambda_up"):
        JTTClassifier(lambda_up=0.5).fit(X, y)


def test_group_labels_go_to_the_scorer_only():
    b = make_spurious_benchmark(600, 200, 10, random_state=0)
    X = np.vstack([b.train.X, b.val.X])
    y = np.r_[b.train.y, b.val.y]
    g = np.r_[b.train.group_labels, b.val.group_labels]
    cv = [(np.arange(600), np.arange(600, 800))]
    with sklearn.config_context(enable_metadata_routing=True):
        assert not JTTClassifier().get_metadata_routing().consumes("fit", ["group_labels"])
        search = GridSearchCV(
            JTTClassifier(random_state=0), {"lambda_up": [2, 5]}, scoring=worst_group_scorer, cv=cv
        ).fit(X, y, group_labels=g)
    ref = JTTClassifier(random_state=0, lambda_up=5).fit(X[:600], y[:600])
    expected = worst_group_accuracy(y[600:], ref.predict(X[600:]), group_labels=g[600:])
    assert search.cv_results_["split0_test_score"][1] == pytest.approx(expected)


# -- effect ----------------------------------------------------------------


def test_tuned_jtt_beats_erm_on_worst_group():
    """JTT tuned on validation WGA, as users will (its settings need the search)."""
    b = make_spurious_benchmark(5000, 1000, 2000, random_state=0)
    erm = ERMClassifier(random_state=0).fit(b.train.X, b.train.y)
    grid = {"id_epochs": [1, 2], "lambda_up": [5, 10, "auto"], "learning_rate": [1e-3, 1e-2]}
    best, _ = select_on_validation(JTTClassifier(random_state=0), grid, b.train, b.val)
    te = b.test
    wga_erm = worst_group_accuracy(te.y, erm.predict(te.X), group_labels=te.group_labels)
    wga_jtt = worst_group_accuracy(te.y, best.predict(te.X), group_labels=te.group_labels)
    assert wga_erm < 0.5
    assert wga_jtt > wga_erm + 0.12


# -- generic ---------------------------------------------------------------


# determinism, pickling, cloning and multiclass output: tests/test_common.py (skgroup's suite)
def test_error_set_reproducible_and_identification_model_pickles():
    rng = np.random.RandomState(0)
    X = rng.randn(300, 5).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.5 * rng.randn(300, 3), axis=1)
    a = JTTClassifier(lambda_up=3, random_state=3).fit(X, y)
    b = JTTClassifier(lambda_up=3, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.error_set_, b.error_set_)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.identification_model_.predict(X), a.identification_model_.predict(X))
    assert not hasattr(clone(a), "error_set_")
