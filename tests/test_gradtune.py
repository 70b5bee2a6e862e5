import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils import Bunch
from sklearn.utils.estimator_checks import parametrize_with_checks

from skgroup.datasets import make_spurious_features
from skgroup.estimators import BelowMajorityWarning
from skgroup.estimators._erm import ERMClassifier
from skgroup.estimators._gradtune import (
    GradTuneClassifier,
    last_layer_gradient_norms,
    select_finetune_set,
)
from skgroup.metrics import worst_group_accuracy
from skgroup.model_selection import select_on_validation


def _three_class_data(n=90, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, n_features)) + 1.5 * y[:, None]
    return X.astype(np.float32), y


def _autograd_norms(head, X, y):
    """Per-sample ||d CE / d(last Linear W, b)||, one backward pass per row."""
    module = head._module().double()
    last = [m for m in module if isinstance(m, torch.nn.Linear)][-1]
    out = []
    for xi, yi in zip(torch.from_numpy(X).double(), torch.from_numpy(y)):
        module.zero_grad()
        F.cross_entropy(module(xi[None]), yi[None]).backward()
        out.append(torch.sqrt((last.weight.grad**2).sum() + (last.bias.grad**2).sum()).item())
    return np.array(out)


# -- mechanism: the norms are autograd's ------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("hidden", [(), (7,), (6, 4)])
def test_gradient_norms_equal_autograd(hidden):
    X, y = _three_class_data()
    head = ERMClassifier(hidden_layer_sizes=hidden, max_iter=30, random_state=0).fit(X, y)
    norms = last_layer_gradient_norms(head, X, y)
    np.testing.assert_allclose(norms, _autograd_norms(head, X, y), rtol=1e-6, atol=1e-8)


def test_gradient_norms_closed_form_hand_case():
    # one feature, two classes, W = 0, b = 0: softmax = (1/2, 1/2), so
    # ||p - e_y|| = sqrt(2) / 2 and the norm is sqrt(2)/2 * sqrt(x^2 + 1)
    head = ERMClassifier().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    head.coefs_, head.intercepts_ = [np.zeros((1, 2))], [np.zeros(2)]
    X = np.array([[0.0], [3.0], [-1.0]])
    np.testing.assert_allclose(
        last_layer_gradient_norms(head, X, [1, 0, 1]), np.sqrt(0.5) * np.sqrt([1.0, 10.0, 2.0])
    )


def test_gradient_norms_reject_foreign_estimators():
    X, y = _three_class_data()
    with pytest.raises(TypeError, match="skgroup head"):
        last_layer_gradient_norms(LogisticRegression().fit(X, y), X, y)
    with pytest.raises(NotFittedError, match="not fitted"):
        last_layer_gradient_norms(ERMClassifier(), X, y)
    head = ERMClassifier().fit(X, y)
    with pytest.raises(ValueError, match="not fitted on"):
        last_layer_gradient_norms(head, X, y + 5)
    # a FrozenEstimator is unwrapped
    np.testing.assert_array_equal(
        last_layer_gradient_norms(FrozenEstimator(head), X, y), last_layer_gradient_norms(head, X, y)
    )


# -- mechanism: the fine-tuning set ------------------------------------------
def test_selection_top_k_then_proportional_draws():
    norms = np.array([5.0, 0.1, 9.0, 3.0, 0.0, 7.0, 1.0, 2.0, 0.5, 4.0])
    chosen = select_finetune_set(norms, 3, 6, np.random.default_rng(0))
    assert chosen.shape == (6,) and np.unique(chosen).shape == (6,)
    np.testing.assert_array_equal(chosen[:3], [2, 5, 0])  # 9, 7, 5
    assert 4 not in chosen  # zero norm: zero probability
    # the draws follow norm / sum(norm) over the rest: row 9 (4.0) is drawn
    # far more often than row 1 (0.1)
    rng = np.random.default_rng(1)
    counts = np.zeros(10)
    for _ in range(2000):
        counts[select_finetune_set(norms, 3, 4, rng)[3]] += 1
    rest = np.array([1, 3, 4, 6, 7, 8, 9])
    np.testing.assert_allclose(counts[rest] / 2000, norms[rest] / norms[rest].sum(), atol=0.03)


def test_fit_selection_sizes_and_indices():
    X, y = _three_class_data(n=300)
    erm = ERMClassifier(class_weight="balanced").fit(X[:150], y[:150])
    clf = GradTuneClassifier(estimator=erm, prefit=True, n_top=40, n_finetune=60, max_iter=5, random_state=0)
    clf.fit(X[150:], y[150:])
    assert clf.gradient_norms_.shape == (150,)
    np.testing.assert_allclose(clf.gradient_norms_, last_layer_gradient_norms(erm, X[150:], y[150:]))
    assert clf.finetune_indices_.shape == (60,)
    assert np.unique(clf.finetune_indices_).shape == (60,)
    top40 = np.argsort(-clf.gradient_norms_, kind="stable")[:40]
    np.testing.assert_array_equal(clf.finetune_indices_[:40], top40)


def test_split_mode_holds_out_a_stratified_half():
    X, y = _three_class_data(n=300)
    clf = GradTuneClassifier(n_top=40, n_finetune=60, max_iter=5, early_stopping=False, random_state=0).fit(X, y)
    hold = clf.holdout_indices_
    assert hold.shape == (150,)
    np.testing.assert_array_equal(np.bincount(y[hold]), [50, 50, 50])
    assert np.isin(clf.finetune_indices_, hold).all()
    # phase 1 saw only the other half: the norms are the ERM clone's on the held-out rows
    np.testing.assert_allclose(clf.gradient_norms_, last_layer_gradient_norms(clf.estimator_, X[hold], y[hold]))
    assert clf.estimator_.class_weight == "balanced"
    assert clf.validation_scores_ is None


def test_split_mode_chooses_the_epoch_on_the_other_half_of_the_held_out_rows():
    X, y = _three_class_data(n=300)
    full = GradTuneClassifier(n_top=40, n_finetune=60, max_iter=5, early_stopping=False, random_state=0).fit(X, y)
    clf = GradTuneClassifier(n_top=40, n_finetune=60, max_iter=5, random_state=0).fit(X, y)
    hold = clf.holdout_indices_
    # the same 150 held-out rows (same seed), half of them (stratified) scored and fine-tuned on
    assert hold.shape == (75,) and np.isin(hold, full.holdout_indices_).all()
    np.testing.assert_array_equal(np.bincount(y[hold]), [25, 25, 25])
    assert np.isin(clf.finetune_indices_, hold).all()
    assert clf.validation_scores_["worst_class_accuracy"].shape == (5,)
    assert 1 <= clf.best_iteration_ <= 5


def test_split_mode_epoch_selection_keeps_a_long_run_above_the_majority_class():
    # imbalanced classes whose minority is hard: class-balanced fine-tuning on the rows with the
    # largest gradient norms, run for every epoch at a large step, swings to the minority class;
    # choosing the epoch on held-out rows keeps a model above the constant answer
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.12).astype(int)
    X = rng.normal(size=(n, 5)) + 0.6 * y[:, None] * np.array([1, 0.5, 0, 0, 0])
    kw = dict(lr_scale=0.05, max_iter=100, random_state=0)
    with pytest.warns(BelowMajorityWarning):
        unmonitored = GradTuneClassifier(early_stopping=False, **kw).fit(X, y)
    assert balanced_accuracy_score(y, unmonitored.predict(X)) <= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", BelowMajorityWarning)
        chosen = GradTuneClassifier(**kw).fit(X, y)
    assert balanced_accuracy_score(y, chosen.predict(X)) > 0.55


def test_sizes_larger_than_holdout_are_capped_with_a_warning():
    X, y = _three_class_data(n=60)
    erm = ERMClassifier().fit(X, y)
    with pytest.warns(UserWarning, match="capped"):
        clf = GradTuneClassifier(estimator=erm, prefit=True, max_iter=3).fit(X[:45], y[:45])
    np.testing.assert_array_equal(np.sort(clf.finetune_indices_), np.arange(45))
    with pytest.raises(ValueError, match="n_top"):
        GradTuneClassifier(estimator=erm, prefit=True, n_top=10, n_finetune=5).fit(X, y)


@pytest.mark.filterwarnings("ignore:n_finetune:UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_finetuning_starts_from_the_erm_weights():
    X, y = _three_class_data()
    erm = ERMClassifier(class_weight="balanced").fit(X, y)
    coef = erm.coef_.copy()
    tiny = GradTuneClassifier(estimator=erm, prefit=True, learning_rate=1e-9, max_iter=3, random_state=0)
    tiny.fit(X, y)
    np.testing.assert_allclose(tiny.coef_, erm.coef_, atol=1e-6)
    np.testing.assert_array_equal(erm.coef_, coef)  # the prefit estimator is untouched
    reset = GradTuneClassifier(estimator=erm, prefit=True, reset=True, learning_rate=1e-9, max_iter=3)
    reset.fit(X, y)
    np.testing.assert_allclose(reset.coef_, 0.0, atol=1e-6)  # retraining starts from zero


@pytest.mark.filterwarnings("ignore:n_finetune:UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_learning_rate_is_scaled_by_the_median_squared_norm():
    X, y = _three_class_data()
    erm = ERMClassifier().fit(X, y)
    clf = GradTuneClassifier(estimator=erm, prefit=True, lr_scale=0.5, max_iter=2).fit(X, y)
    expected = 0.5 / np.median((X.astype(np.float64) ** 2).sum(axis=1) + 1)
    assert clf.learning_rate_ == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:n_finetune:UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_head_keeps_hidden_layers_frozen():
    X, y = _three_class_data()
    erm = ERMClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X, y)
    clf = GradTuneClassifier(estimator=erm, prefit=True, lr_scale=0.5, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.coefs_[0], erm.coefs_[0])
    np.testing.assert_array_equal(clf.intercepts_[0], erm.intercepts_[0])
    assert not np.allclose(clf.coefs_[1], erm.coefs_[1])
    assert not hasattr(clf, "coef_")
    assert clf.predict_proba(X).shape == (X.shape[0], 3)


def test_prefit_errors_name_the_fix():
    X, y = _three_class_data()
    with pytest.raises(ValueError, match="prefit=True needs a fitted estimator"):
        GradTuneClassifier(prefit=True).fit(X, y)
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        GradTuneClassifier(estimator=ERMClassifier(), prefit=True).fit(X, y)
    with pytest.raises(TypeError, match="skgroup head"):
        GradTuneClassifier(estimator=LogisticRegression()).fit(X, y)
    erm = ERMClassifier().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        GradTuneClassifier(estimator=erm, prefit=True).fit(X[:, :3], y)


def test_group_labels_are_not_routed_to_training():
    # fit takes them only to stratify splits and score validation rows; routing never sends them
    requests = GradTuneClassifier().get_metadata_routing().fit.requests
    assert requests["group_labels"] is False
    assert requests["X_val"] is True and requests["y_val"] is True


# -- effect ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 3])
def test_gradtune_beats_erm_on_worst_group(seed):
    """Sagawa et al.'s synthetic task (defaults: noisy core, easy spurious
    feature, 10% minority): ERM on 3,000 rows, then GradTune on 4,000
    held-out rows (k = 300, M' = 400), its step chosen on validation
    worst-group accuracy."""
    X, y, g = make_spurious_features(3000, random_state=seed)
    Xh, yh, gh = make_spurious_features(4000, random_state=seed + 100)
    Xv, yv, gv = make_spurious_features(2000, group_balanced=True, random_state=seed + 200)
    Xt, yt, gt = make_spurious_features(4000, group_balanced=True, random_state=seed + 300)
    erm = ERMClassifier(class_weight="balanced").fit(X, y)
    gradtune = GradTuneClassifier(
        estimator=FrozenEstimator(erm), prefit=True, n_top=300, n_finetune=400, random_state=seed
    )
    best, search = select_on_validation(
        gradtune,
        {"lr_scale": [0.03, 0.1, 0.3]},
        Bunch(X=Xh, y=yh, group_labels=gh),
        Bunch(X=Xv, y=yv, group_labels=gv),
    )
    plain = ERMClassifier().fit(X, y)
    wga = {
        name: worst_group_accuracy(yt, m.predict(Xt), group_labels=gt)
        for name, m in (("erm", plain), ("balanced_erm", erm), ("gradtune", best))
    }
    assert wga["gradtune"] > max(wga["erm"], wga["balanced_erm"]) + 0.05, wga
    # the fine-tuning set is rich in the minority groups (10% of the held-out rows)
    assert np.isin(gh[best.finetune_indices_], [1, 2]).mean() > 0.4


# -- estimator contract --------------------------------------------------------
def test_multiclass_proba_decision_function():
    X, y = _three_class_data(n=300)
    labels = np.array(["x", "y", "z"])[y]
    clf = GradTuneClassifier(n_top=40, n_finetune=60, max_iter=50, lr_scale=0.1, random_state=0).fit(X, labels)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert clf.decision_function(X).shape == (300, 3)
    np.testing.assert_array_equal(clf.classes_, ["x", "y", "z"])
    assert clf.score(X, labels) > 0.7


def test_determinism_pickle_clone():
    X, y = _three_class_data(n=300)
    kw = dict(n_top=40, n_finetune=60, max_iter=30, lr_scale=0.1, random_state=3)
    a = GradTuneClassifier(**kw).fit(X, y)
    b = GradTuneClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.finetune_indices_, b.finetune_indices_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = GradTuneClassifier(**{**kw, "random_state": 4}).fit(X, y)
    assert not np.array_equal(a.holdout_indices_, c.holdout_indices_)


def test_frozen_prefit_survives_clone():
    X, y = _three_class_data(n=120)
    erm = ERMClassifier().fit(X[:60], y[:60])
    clf = clone(GradTuneClassifier(estimator=FrozenEstimator(erm), prefit=True, max_iter=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sizes capped to 60 rows
        clf.fit(X[60:], y[60:])
    assert clf.estimator_ is erm


# the default configuration is checked in test_common.py; here the MLP-head variant
@parametrize_with_checks(
    [
        GradTuneClassifier(estimator=ERMClassifier(hidden_layer_sizes=(4,), max_iter=20), max_iter=20, random_state=0),
    ]
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # checks use tiny data: k, M' are capped
        check(estimator)
