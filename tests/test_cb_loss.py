"""CBLossClassifier: effective-number class weights over any loss."""

import numpy as np
import pytest
import torch

from skgroup import CBLossClassifier, ERMClassifier, MixtureBalancedClassifier
from skgroup.objectives import FocalLoss

F64 = dict(dtype="float64", tol=1e-9, max_iter=1000)


def gaussians(n0, n1, *, d=5, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = sep / 2
    X = np.vstack([rng.normal(size=(n0, d)) - mu, rng.normal(size=(n1, d)) + mu])
    return X, np.r_[np.zeros(n0, int), np.ones(n1, int)]


def recall(est, X, y, c):
    return float(np.mean(est.predict(X[y == c]) == c))


def test_class_weights_by_hand_and_the_two_limits():
    X, y = gaussians(200, 20)
    est = CBLossClassifier(beta=0.9, **F64).fit(X, y)
    w = np.array([0.1 / (1 - 0.9**200), 0.1 / (1 - 0.9**20)])
    np.testing.assert_allclose(est.class_weight_, 2 * w / w.sum(), rtol=1e-12)
    assert est.class_counts_.tolist() == [200, 20]
    # beta = 0: every class weighs 1, ERM
    erm = ERMClassifier(**F64).fit(X, y)
    np.testing.assert_allclose(CBLossClassifier(beta=0.0, **F64).fit(X, y).coef_, erm.coef_, atol=1e-7)
    # beta -> 1: inverse class frequency, LaBonte et al.'s upweighting
    up = MixtureBalancedClassifier(balancing="upweighting", **F64).fit(X, y)
    near_one = CBLossClassifier(beta=1 - 1e-9, **F64).fit(X, y)
    np.testing.assert_allclose(near_one.coef_, up.coef_, atol=1e-5)
    np.testing.assert_allclose(near_one.intercept_, up.intercept_, atol=1e-5)


def test_class_balanced_focal_minimises_the_weighted_focal_objective():
    # loss='focal' puts the weights over the focal loss (Cui et al.'s class-balanced focal loss):
    # the fitted model is a stationary point of sum_i w_yi FL(z_i, y_i) / sum_i w_yi + l2/2 ||W||^2
    X, y = gaussians(300, 30, seed=1)
    l2 = 1e-2
    est = CBLossClassifier(beta=0.99, loss=FocalLoss(2.0), l2_reg=l2, **F64).fit(X, y)
    w = torch.as_tensor(est.class_weight_[y])
    Wt, bt = torch.tensor(est.coef_, requires_grad=True), torch.tensor(est.intercept_, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(torch.as_tensor(X) @ Wt.T + bt, torch.as_tensor(y), reduction="none")
    focal = (1 - torch.exp(-ce)) ** 2 * ce
    f = (w * focal).sum() / w.sum() + 0.5 * l2 * (Wt**2).sum()
    assert max(float(g.abs().max()) for g in torch.autograd.grad(f, (Wt, bt))) < 1e-6
    # and it is not the class-balanced cross-entropy model
    ce_model = CBLossClassifier(beta=0.99, l2_reg=l2, **F64).fit(X, y)
    assert np.abs(ce_model.coef_ - est.coef_).max() > 1e-2


def test_minority_recall_rises_over_erm():
    X, y = gaussians(2000, 100)
    X_test, y_test = gaussians(3000, 3000, seed=1)
    erm = ERMClassifier().fit(X, y)
    cb = CBLossClassifier().fit(X, y)  # beta = 0.9999: about inverse frequency at these sizes
    assert recall(cb, X_test, y_test, 1) > recall(erm, X_test, y_test, 1) + 0.3
    # the balanced accuracy rises with it (a real gain, not a flipped bias)
    bal = lambda m: (recall(m, X_test, y_test, 0) + recall(m, X_test, y_test, 1)) / 2  # noqa: E731
    assert bal(cb) > bal(erm) + 0.1


def test_bad_beta_names_the_parameter():
    with pytest.raises(ValueError, match="beta"):
        CBLossClassifier(beta=1.0).fit(*gaussians(20, 5))
