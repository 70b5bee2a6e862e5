"""FocalClassifier: the focal loss on a head; what it does and does not do under class imbalance."""

import numpy as np
import pytest

from skgroup import ERMClassifier, FocalClassifier

F64 = dict(dtype="float64", tol=1e-9, max_iter=1000)


def gaussians(n0, n1, *, d=5, sep=2.0, seed=0):
    """Two unit-covariance Gaussian classes whose means differ by ``sep`` along the first axis: the
    class posterior is logistic in x, so a linear softmax head is well specified."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = sep / 2
    X = np.vstack([rng.normal(size=(n0, d)) - mu, rng.normal(size=(n1, d)) + mu])
    return X, np.r_[np.zeros(n0, int), np.ones(n1, int)]


def boundary(est):
    """Where the decision boundary crosses the first axis (the other weights are noise)."""
    w = est.coef_[1] - est.coef_[0]
    return -(est.intercept_[1] - est.intercept_[0]) / w[0]


def test_gamma_zero_is_erm():
    X, y = gaussians(300, 60)
    erm = ERMClassifier(**F64).fit(X, y)
    focal = FocalClassifier(gamma=0.0, **F64).fit(X, y)
    np.testing.assert_allclose(focal.coef_, erm.coef_, atol=1e-7)
    np.testing.assert_allclose(focal.intercept_, erm.intercept_, atol=1e-7)


def test_focal_keeps_the_bayes_boundary_and_lowers_the_confidence():
    # The known answer: focal loss is classification-calibrated (its minimiser over all functions
    # has the Bayes classifier's argmax), and with a well-specified linear head both it and ERM
    # recover the Bayes boundary of the *training* distribution, log(n0 / n1) / sep along the first
    # axis. So it does not move the boundary toward the majority under class imbalance (minority
    # recall does not rise, see docs/methods/class_imbalance.rst), while its fitted probabilities are
    # less confident: the weights shrink as gamma grows.
    X, y = gaussians(4000, 200)
    bayes = np.log(4000 / 200) / 2.0
    erm = ERMClassifier(**F64).fit(X, y)
    assert boundary(erm) == pytest.approx(bayes, abs=0.1)
    norms = [np.linalg.norm(erm.coef_)]
    for gamma in (1.0, 2.0, 5.0):
        focal = FocalClassifier(gamma=gamma, **F64).fit(X, y)
        assert boundary(focal) == pytest.approx(boundary(erm), abs=0.05)
        norms.append(np.linalg.norm(focal.coef_))
    assert np.all(np.diff(norms) < 0) and norms[-1] < 0.5 * norms[0]
    # confidence on the training rows drops with it
    p_erm = erm.predict_proba(X).max(axis=1).mean()
    assert focal.predict_proba(X).max(axis=1).mean() < p_erm - 0.05


def test_focal_down_weights_the_rows_the_model_fits():
    # the mechanism: the focal gradient is CE's times a factor that falls as p_y rises, so a fit
    # that starts from ERM's model moves toward the rows ERM gets wrong
    X, y = gaussians(2000, 100, seed=3)
    erm = ERMClassifier(**F64).fit(X, y)
    focal = FocalClassifier(gamma=2.0, **F64).fit(X, y)
    p_erm = erm.predict_proba(X)[np.arange(len(y)), y]
    p_focal = focal.predict_proba(X)[np.arange(len(y)), y]
    hard, easy = p_erm < 0.5, p_erm > 0.9
    # relative to ERM, the probability of the true class rises on the hard rows and falls on the easy ones
    assert np.mean(p_focal[hard] - p_erm[hard]) > 0.02
    assert np.mean(p_focal[easy] - p_erm[easy]) < -0.02
