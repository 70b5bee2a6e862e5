"""scikit-learn's estimator checks over every skgroup estimator.

The checks fit hundreds of times on tiny data and compare fits to 1e-7, so
each estimator runs them with float64 and a tight tolerance, and fast
settings where a method has long schedules.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skgroup.estimators import all_estimators

CHECK_PARAMS = {
    "ERMClassifier": dict(dtype="float64", tol=1e-10, max_iter=500),
    "GradTuneClassifier": dict(dtype="float64", max_iter=20),
    "MixtureBalancedClassifier": dict(dtype="float64", max_iter=10),
}

# name -> {check name: reason}
EXPECTED_FAILED = {}

ESTIMATORS = [cls(**CHECK_PARAMS.get(name, {})) for name, cls in all_estimators()]


def expected_failed_checks(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_every_estimator_is_checked():
    assert {type(e).__name__ for e in ESTIMATORS} >= {"ERMClassifier"}
