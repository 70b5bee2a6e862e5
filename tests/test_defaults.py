"""Defaults users can trust: the 'auto' learning rate, and the warning when a fit's own
validation split shows it below ERM with nothing to show for it."""

import warnings

import numpy as np
import pytest

from skgroup import CVaRClassifier, ERMClassifier, GroupDROClassifier, JTTClassifier
from skgroup.datasets import make_spurious_benchmark
from skgroup.estimators import BelowERMWarning
from skgroup.estimators._base import BaseHeadClassifier, auto_learning_rate


@pytest.fixture(scope="module")
def data():
    return make_spurious_benchmark(600, 400, 10, random_state=0)


def test_auto_learning_rate_rescales_to_the_row_norm():
    rng = np.random.RandomState(0)
    X = rng.randn(500, 8)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert auto_learning_rate(X, 1e-2) == pytest.approx(1e-2 * np.sqrt(8))
    assert auto_learning_rate(100 * X, 1e-2) == pytest.approx(1e-2 * np.sqrt(8) / 100)
    assert auto_learning_rate(np.zeros((5, 3)), 1e-2) == 1e-2  # no norm to scale by


@pytest.mark.parametrize("cls", [JTTClassifier, CVaRClassifier, GroupDROClassifier])
def test_auto_learning_rate_in_every_minibatch_head(data, cls):
    est = cls(learning_rate="auto", max_iter=2, random_state=0).fit(data.train.X, data.train.y)
    ref = cls._reference_learning_rate
    assert est.learning_rate_ == pytest.approx(auto_learning_rate(data.train.X, ref))
    assert est.learning_rate_ < ref / 10  # Gaussian features of norm ~100: a 35x smaller step


def test_defaults_not_below_erm_are_silent(data):
    from skgroup.estimators import LargeErrorSetWarning

    tr, va = data.train, data.val
    with warnings.catch_warnings():
        warnings.simplefilter("error", BelowERMWarning)
        warnings.simplefilter("error", LargeErrorSetWarning)
        JTTClassifier(random_state=0).fit(tr.X, tr.y, X_val=va.X, y_val=va.y)


def test_below_erm_warning_says_why_and_what_to_search(data, monkeypatch):
    tr, va = data.train, data.val
    # a reference that also saw the validation rows beats any honest fit on them
    oracle = ERMClassifier(random_state=0).fit(np.vstack([tr.X, va.X]), np.r_[tr.y, va.y])
    monkeypatch.setattr(BaseHeadClassifier, "_erm_reference", lambda self, X, y: oracle)
    with pytest.warns(BelowERMWarning, match=r"points below ERM's.*Search id_epochs, lambda_up, max_iter"):
        JTTClassifier(random_state=0).fit(tr.X, tr.y, X_val=va.X, y_val=va.y)
    # no validation split, nothing to compare on: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", BelowERMWarning)
        JTTClassifier(random_state=0).fit(tr.X, tr.y)


def test_jtt_warns_when_its_error_set_is_not_a_minority():
    from skgroup.estimators import LargeErrorSetWarning

    rng = np.random.RandomState(0)
    X = rng.randn(400, 5).astype(np.float32)
    y = rng.randint(0, 3, 400)  # labels unrelated to X: an early model errs on most rows
    with pytest.warns(LargeErrorSetWarning, match=r"misclassifies \d+ of 400 .*Search id_epochs"):
        JTTClassifier(random_state=0).fit(X, y)


def test_main_job_names_what_to_search_for_defaults_below_erm():
    from skgroup.__main__ import below_erm_notes

    def row(name, wga):
        return (name, np.array([0.7, wga, 0.7, 1.0]), None)

    note = below_erm_notes([row("ERMClassifier", 0.44), row("GradTuneClassifier", 0.40), row("JTTClassifier", 0.6)])
    assert "GradTuneClassifier: 0.400 < ERM's 0.440; search lr_scale" in note and "JTTClassifier" not in note
    assert below_erm_notes([row("ERMClassifier", 0.44), row("JTTClassifier", 0.6)]) == ""
