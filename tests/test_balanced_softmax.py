"""BalancedSoftmaxClassifier: the logit-adjusted loss; on a linear head it is post-hoc adjusted ERM."""

import numpy as np
import pytest

from skgroup import BalancedSoftmaxClassifier, ERMClassifier

F64 = dict(dtype="float64", tol=1e-10, max_iter=1000)


def gaussians(counts, *, d=5, sep=2.0, seed=0):
    """One unit-covariance Gaussian class per entry of ``counts``, means ``sep`` apart on a line."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c, n in enumerate(counts):
        mu = np.zeros(d)
        mu[0] = sep * (c - (len(counts) - 1) / 2)
        X.append(rng.normal(size=(n, d)) + mu)
        y.append(np.full(n, c))
    return np.vstack(X), np.concatenate(y)


def recall(est, X, y, c):
    return float(np.mean(est.predict(X[y == c]) == c))


@pytest.mark.parametrize("counts", [(600, 40), (500, 120, 30)])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_on_a_linear_head_it_is_erm_with_the_intercepts_moved_by_minus_tau_log_prior(counts, tau):
    # CE(Wx + b + tau log pi) is ERM's objective in b' = b + tau log pi, and L2 leaves intercepts free:
    # the optimum is ERM's weights with b = b_ERM - tau log pi (up to a constant shared by the classes)
    X, y = gaussians(counts)
    erm = ERMClassifier(**F64).fit(X, y)
    bs = BalancedSoftmaxClassifier(tau=tau, **F64).fit(X, y)
    prior = np.asarray(counts) / sum(counts)
    np.testing.assert_allclose(bs.class_prior_, prior, rtol=1e-15)
    np.testing.assert_allclose(bs.coef_ - bs.coef_.mean(0), erm.coef_ - erm.coef_.mean(0), atol=1e-6)
    shift = bs.intercept_ - erm.intercept_
    np.testing.assert_allclose(shift - shift.mean(), -tau * (np.log(prior) - np.log(prior).mean()), atol=1e-6)
    # so it predicts what Menon et al.'s post-hoc adjustment of ERM predicts
    X_test, _ = gaussians(counts, seed=5)
    post_hoc = np.argmax(erm.predict_log_proba(X_test) - tau * np.log(prior), axis=1)
    np.testing.assert_array_equal(bs.predict(X_test), post_hoc)


def test_tau_zero_is_erm():
    X, y = gaussians((300, 30))
    np.testing.assert_allclose(BalancedSoftmaxClassifier(tau=0.0, **F64).fit(X, y).intercept_,
                               ERMClassifier(**F64).fit(X, y).intercept_, atol=1e-7)


def test_minority_recall_rises_over_erm():
    X, y = gaussians((2000, 100))
    X_test, y_test = gaussians((3000, 3000), seed=1)
    erm = ERMClassifier().fit(X, y)
    bs = BalancedSoftmaxClassifier().fit(X, y)
    assert recall(bs, X_test, y_test, 1) > recall(erm, X_test, y_test, 1) + 0.3
    bal = lambda m: (recall(m, X_test, y_test, 0) + recall(m, X_test, y_test, 1)) / 2  # noqa: E731
    assert bal(bs) > bal(erm) + 0.1
