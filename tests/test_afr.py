import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skgroup.datasets import make_spurious_features
from skgroup.estimators import AFRClassifier, ERMClassifier, afr_weights
from skgroup.metrics import worst_group_accuracy

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_EXACT = dict(dtype="float64", tol=1e-10, max_iter=500, second_stage_max_iter=1000)


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    X = rng.normal(size=(n, 4)) + 1.2 * y[:, None]
    return X, y


# -- mechanism: the weights by hand -------------------------------------------------
def test_weights_by_hand():
    # two classes; p_true = 0.5, 0.9, 0.2 (class 0, 0, 1)
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.8, 0.2]]))
    y = np.array([0, 0, 1])
    raw = np.exp(-2.0 * np.array([0.5, 0.9, 0.2]))
    np.testing.assert_allclose(afr_weights(logits, y, 2.0, "none"), raw / raw.sum())
    # count: class c times n / n_c (3/2 and 3/1), the code's rebalancing
    counted = raw * np.array([1.5, 1.5, 3.0])
    np.testing.assert_allclose(afr_weights(logits, y, 2.0, "count"), counted / counted.sum())
    # sum: each class's weights sum to 1/2
    w = afr_weights(logits, y, 2.0, "sum")
    np.testing.assert_allclose([w[:2].sum(), w[2]], [0.5, 0.5])
    np.testing.assert_allclose(w[0] / w[1], raw[0] / raw[1])
    # gamma = 0: uniform within a class
    np.testing.assert_allclose(afr_weights(logits, y, 0.0, "sum"), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="class_balance"):
        afr_weights(logits, y, 1.0, "groups")


def test_fit_splits_stratified_and_weights_the_second_stage_rows():
    X, y = _data()
    clf = AFRClassifier(gamma=3.0, class_balance="count", random_state=0).fit(X, y)
    first, second = clf.first_stage_indices_, clf.second_stage_indices_
    assert first.shape == (320,) and second.shape == (80,)
    np.testing.assert_array_equal(np.sort(np.r_[first, second]), np.arange(400))
    np.testing.assert_allclose(np.bincount(y[second]) / 80, np.bincount(y) / 400, atol=0.01)
    # the stage-1 model saw only its rows: it is ERM on them
    erm = ERMClassifier(random_state=0).fit(X[first], y[first])
    np.testing.assert_allclose(clf.first_stage_model_.coef_, erm.coef_, rtol=1e-4, atol=1e-5)
    # a proper ERMClassifier: its parameters are the stage's settings and an integer seed
    params = clf.first_stage_model_.get_params()
    assert isinstance(params["random_state"], int) and params["l2_reg"] == clf.l2_reg
    expected = afr_weights(clf.first_stage_model_.decision_function(X[second])[:, None] * [-0.5, 0.5],
                           y[second], 3.0, "count")
    np.testing.assert_allclose(clf.sample_weight_, expected, rtol=1e-5)
    assert clf.sample_weight_.sum() == pytest.approx(1.0)


def test_second_stage_minimises_weighted_loss_plus_pull():
    """At the fit, the gradient of sum_i w_i CE_i + lambda (||W - W1||^2 + ||b - b1||^2) vanishes."""
    X, y = _data()
    lam = 0.05
    clf = AFRClassifier(gamma=2.0, reg_coeff=lam, early_stopping=False, random_state=0, **_EXACT).fit(X, y)
    W = torch.tensor(clf.coef_, requires_grad=True)
    b = torch.tensor(clf.intercept_, requires_grad=True)
    W1 = torch.tensor(clf.first_stage_model_.coef_)
    b1 = torch.tensor(clf.first_stage_model_.intercept_)
    rows = clf.second_stage_indices_
    ce = F.cross_entropy(torch.tensor(X[rows]) @ W.T + b, torch.tensor(y[rows]), reduction="none")
    objective = (torch.tensor(clf.sample_weight_) * ce).sum() + lam * (((W - W1) ** 2).sum() + ((b - b1) ** 2).sum())
    gW, gb = torch.autograd.grad(objective, [W, b])
    assert float(gW.abs().max()) < 1e-7 and float(gb.abs().max()) < 1e-7
    # the pull matters: without it the optimum is elsewhere
    free = AFRClassifier(gamma=2.0, reg_coeff=0.0, early_stopping=False, random_state=0, **_EXACT).fit(X, y)
    assert not np.allclose(free.coef_, clf.coef_, atol=1e-3)


def test_strong_pull_keeps_the_first_stage_weights():
    X, y = _data()
    clf = AFRClassifier(gamma=4.0, reg_coeff=1e6, early_stopping=False, random_state=0, **_EXACT).fit(X, y)
    np.testing.assert_allclose(clf.coef_, clf.first_stage_model_.coef_, atol=1e-5)
    np.testing.assert_allclose(clf.intercept_, clf.first_stage_model_.intercept_, atol=1e-5)


def test_gamma_zero_is_class_balanced_erm_on_the_second_stage_rows():
    X, y = _data()
    clf = AFRClassifier(gamma=0.0, reg_coeff=0.0, early_stopping=False, random_state=0, **_EXACT).fit(X, y)
    rows = clf.second_stage_indices_
    erm = ERMClassifier(class_weight="balanced", l2_reg=0.0, dtype="float64", tol=1e-10, max_iter=1000)
    erm.fit(X[rows], y[rows])
    np.testing.assert_allclose(clf.coef_, erm.coef_, rtol=1e-4, atol=1e-4)


def test_mlp_head_retrains_only_the_last_layer():
    X, y = _data()
    clf = AFRClassifier(hidden_layer_sizes=(5,), max_iter=30, second_stage_max_iter=30, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.coefs_[0], clf.first_stage_model_.coefs_[0])
    np.testing.assert_array_equal(clf.intercepts_[0], clf.first_stage_model_.intercepts_[0])
    assert not np.allclose(clf.coefs_[1], clf.first_stage_model_.coefs_[1])
    assert not hasattr(clf, "coef_")


def test_errors_name_the_argument():
    X, y = _data(20)
    with pytest.raises(ValueError, match="first_stage_fraction"):
        AFRClassifier(first_stage_fraction=0.99).fit(X, y)
    with pytest.raises(ValueError, match="gamma"):
        AFRClassifier(gamma=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="class_balance"):
        AFRClassifier(class_balance="groups").fit(X, y)


def test_group_labels_are_not_used_in_training():
    assert AFRClassifier().get_metadata_routing().fit.requests["group_labels"] is False
    X, y = _data()
    g = np.random.default_rng(0).integers(0, 4, size=y.shape[0])
    a = AFRClassifier(random_state=0).fit(X, y)
    b = AFRClassifier(random_state=0).fit(X, y, group_labels=g)
    np.testing.assert_array_equal(a.coef_, b.coef_)


# -- effect -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 2])
def test_afr_lifts_the_worst_group_without_group_labels(seed):
    """Sagawa et al.'s task with a readable core (sigma_core = 3, 10 + 10 dimensions, 10% minority):
    ERM relies on the spurious block; AFR's weights land on the minority rows the ERM model gets
    wrong, and its retrained layer does clearly better on the worst group (stage 2's iteration
    selected on validation worst-group accuracy, as in the paper)."""
    kw = dict(sigma_core=3.0, n_core=10, n_spurious=10)
    X, y, g = make_spurious_features(5000, random_state=seed, **kw)
    Xv, yv, gv = make_spurious_features(1000, group_balanced=True, random_state=seed + 100, **kw)
    Xt, yt, gt = make_spurious_features(4000, group_balanced=True, random_state=seed + 200, **kw)
    erm = ERMClassifier(random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        afr = AFRClassifier(random_state=seed).fit(X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    wga_erm = worst_group_accuracy(yt, erm.predict(Xt), group_labels=gt)
    wga_afr = worst_group_accuracy(yt, afr.predict(Xt), group_labels=gt)
    assert wga_afr > wga_erm + 0.1, (wga_erm, wga_afr)
    # the minority groups (1, 2) carry far more weight per row than the majority
    gs = g[afr.second_stage_indices_]
    minority = np.isin(gs, [1, 2])
    assert afr.sample_weight_[minority].mean() > 3 * afr.sample_weight_[~minority].mean()


def test_a_large_gamma_gives_the_limit_of_the_weights_not_an_error():
    # exp(-gamma * p) underflows to 0 for every row at gamma = 1e6: in log space the normalised weights
    # go to the limit, all the mass on the rows the first stage finds hardest (per class with 'sum')
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]))
    y = np.array([0, 0, 1, 1])  # p_true = 0.5, 0.9, 0.2, 0.7
    np.testing.assert_allclose(afr_weights(logits, y, 1e6, "none"), [0, 0, 1, 0], atol=1e-300)
    np.testing.assert_allclose(afr_weights(logits, y, 1e6, "sum"), [0.5, 0, 0.5, 0], atol=1e-300)
    np.testing.assert_allclose(afr_weights(logits, y, 60.0, "none"),
                               np.exp(-60 * np.array([0.5, 0.9, 0.2, 0.7])) / np.exp(-60 * np.array(
                                   [0.5, 0.9, 0.2, 0.7])).sum(), rtol=1e-12)
    X, y = _data(200)
    with pytest.warns(UserWarning, match=r"gamma=1e\+06.*effective"):
        clf = AFRClassifier(gamma=1e6, random_state=0).fit(X, y)
    assert np.isfinite(clf.coef_).all() and np.isclose(clf.sample_weight_.sum(), 1.0)
