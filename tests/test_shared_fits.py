"""Shared work is done once: JTT's identification model, GradTune's base model and the
biased ERM model of the bias-unsupervised score, across a grid (skgroup._cache).

Fits are counted twice: by the cache's own counter, and by a spy on the engine
that counts the stages actually trained.
"""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold

from skgroup import ERMClassifier, GradTuneClassifier, JTTClassifier
from skgroup._cache import SHARED_FITS, canonical, fingerprint
from skgroup.datasets import make_spurious_features
from skgroup.engine import HeadExecutor
from skgroup.metrics import worst_class_scorer
from skgroup.model_selection import ValidationSplit


@pytest.fixture
def data():
    X, y, g = make_spurious_features(500, random_state=0)
    return X, y, g


@pytest.fixture
def stages(monkeypatch):
    """Names of the stages the engine trains, in order."""
    SHARED_FITS.clear()
    trained = []
    original = HeadExecutor.train

    def spy(self, stage):
        trained.append(stage.name)
        return original(self, stage)

    monkeypatch.setattr(HeadExecutor, "train", spy)
    yield trained
    SHARED_FITS.clear()


def _search(est, grid, X, y, cv):
    return GridSearchCV(est, grid, scoring=worst_class_scorer, cv=cv, refit=False, error_score="raise").fit(X, y)


def test_gridsearch_over_lambda_up_fits_the_identification_model_once(data, stages):
    X, y, _ = data
    est = JTTClassifier(batch_size=64, random_state=0)
    search = _search(est, {"lambda_up": [2, 5, 10]}, X, y, ValidationSplit(400, 100))
    assert SHARED_FITS.fits["jtt_identification"] == 1
    assert SHARED_FITS.hits["jtt_identification"] == 2
    assert stages.count("identification") == 1 and stages.count("final") == 3
    # the same scores as without reuse
    with SHARED_FITS.disabled():
        plain = _search(est, {"lambda_up": [2, 5, 10]}, X, y, ValidationSplit(400, 100))
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"])
    assert stages.count("identification") == 4


def test_each_fold_and_each_setting_is_its_own_key(data, stages):
    X, y, _ = data
    _search(JTTClassifier(batch_size=64, random_state=0), {"lambda_up": [2, 5], "id_epochs": [1, 2]}, X, y,
            KFold(3))
    # 3 folds x 2 identification settings; lambda_up is shared
    assert SHARED_FITS.fits["jtt_identification"] == 6
    assert stages.count("identification") == 6 and stages.count("final") == 12


def test_reused_identification_model_gives_the_same_fit(data, stages):
    X, y, _ = data
    a = JTTClassifier(batch_size=64, random_state=0).fit(X, y)
    b = JTTClassifier(batch_size=64, random_state=0).fit(X, y)
    assert stages.count("identification") == 1
    with SHARED_FITS.disabled():
        c = JTTClassifier(batch_size=64, random_state=0).fit(X, y)
    for other in (b, c):
        np.testing.assert_array_equal(a.error_set_, other.error_set_)
        np.testing.assert_array_equal(a.coef_, other.coef_)
        np.testing.assert_array_equal(a.identification_model_.coef_, other.identification_model_.coef_)
    assert a.identification_model_ is not b.identification_model_  # copies, never shared objects


def test_no_reuse_without_a_fixed_seed_or_with_callbacks(data, stages):
    from skgroup.engine import EpochCallback

    X, y, _ = data
    for _ in range(2):
        JTTClassifier(batch_size=64).fit(X, y)
    assert stages.count("identification") == 2
    for _ in range(2):
        JTTClassifier(batch_size=64, random_state=0, callbacks=[EpochCallback(lambda e, m: False)]).fit(X, y)
    assert stages.count("identification") == 4


def test_gradtune_base_model_fitted_once_across_its_grid(data, stages):
    X, y, _ = data
    est = GradTuneClassifier(n_top=40, n_finetune=60, max_iter=10, random_state=0)
    _search(est, {"lr_scale": [0.01, 0.1], "n_top": [20, 40]}, X, y, ValidationSplit(400, 100))
    assert SHARED_FITS.fits["gradtune_base"] == 1
    assert stages.count("erm") == 1 and stages.count("finetune") == 4


def test_gradtune_base_with_validation_rows_too(data, stages):
    X, y, _ = data
    for lr_scale in (0.01, 0.1):
        GradTuneClassifier(n_top=20, n_finetune=40, max_iter=10, lr_scale=lr_scale, random_state=0).fit(
            X[:400], y[:400], X_val=X[400:], y_val=y[400:])
    assert SHARED_FITS.fits["gradtune_base"] == 1 and stages.count("erm") == 1


def test_biased_model_of_the_bias_unsupervised_monitor_fitted_once(data, stages):
    X, y, _ = data
    for l2 in (1e-3, 1e-2, 1e-1):
        ERMClassifier(l2_reg=l2, monitor="bias_unsupervised", random_state=0).fit(
            X[:400], y[:400], X_val=X[400:], y_val=y[400:])
    assert SHARED_FITS.fits["biased_erm"] == 1
    assert stages.count("erm") == 4  # the biased model once, then the three candidates


def test_parallel_gridsearch_still_correct(data):
    X, y, _ = data
    SHARED_FITS.clear()
    est = JTTClassifier(batch_size=64, random_state=0)
    par = GridSearchCV(est, {"lambda_up": [2, 5]}, scoring=worst_class_scorer, cv=KFold(2), refit=False,
                       n_jobs=2).fit(X, y)
    with SHARED_FITS.disabled():
        seq = _search(est, {"lambda_up": [2, 5]}, X, y, KFold(2))
    np.testing.assert_array_equal(par.cv_results_["mean_test_score"], seq.cv_results_["mean_test_score"])


def test_fingerprint_and_canonical():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.astype(np.float64))
    assert fingerprint(a) != fingerprint(a.reshape(2, 3))
    b = a.copy()
    b[2, 1] += 1
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(np.array(["x", "y"], dtype=object)) == fingerprint(np.array(["x", "y"], dtype=object))
    assert canonical(ERMClassifier(l2_reg=1e-3)) == canonical(ERMClassifier(l2_reg=1e-3))
    assert canonical(ERMClassifier(l2_reg=1e-3)) != canonical(ERMClassifier(l2_reg=1e-2))


def test_lru_bound_and_recording():
    from skgroup._cache import SharedFits

    cache = SharedFits(maxsize=2)
    with cache.recording() as record:
        for i in range(3):
            cache.put(cache.key("k", i), {"v": i})
    assert len(cache) == 2 and cache.get(cache.key("k", 0)) is None
    assert len(record) == 3 and cache.fits["k"] == 3
    other = SharedFits()
    other.load(record)
    assert other.get(cache.key("k", 0)) == {"v": 0} and other.fits == {}
