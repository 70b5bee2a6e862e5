"""A check suite for group-robust estimators, beside scikit-learn's.

After imbalanced-learn's ``utils/estimator_checks.py``: scikit-learn's
``parametrize_with_checks`` covers the estimator contract; these checks cover
what this field adds: reproducibility from ``random_state`` without touching
the global generators, group labels through metadata routing (1-D ids and
membership matrices), the validation / early-stopping contract, and fitted
models that pickle and clone. :func:`parametrize_with_group_checks` runs
them under pytest::

    from skgroup.utils.estimator_checks import parametrize_with_group_checks

    @parametrize_with_group_checks([MyClassifier(max_iter=5)])
    def test_group_checks(estimator, check):
        check(estimator)

Quick settings of every skgroup estimator for such tests are in its method
spec (``skgroup.estimators.get_spec(name).fast_params``).
"""

import pickle
import warnings
from functools import partial

import numpy as np
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from ..datasets import make_spurious_features
from ..metrics import worst_group_scorer

__all__ = [
    "check_reproducible",
    "check_global_rng_untouched",
    "check_multiclass_proba",
    "check_pickle_and_clone",
    "check_group_labels_routing",
    "check_validation_contract",
    "check_early_stopping_keeps_best",
    "group_checks",
    "parametrize_with_group_checks",
]


def _data(n=400, seed=0):
    X, y, g = make_spurious_features(n, random_state=seed)
    return X.astype(np.float32), y, g


def _three_class(n=300, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 5).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.3 * rng.randn(n, 3), axis=1)
    g = (X[:, 4] > 0).astype(int) * 3 + y
    return X, y, g


def _fit(estimator, X, y, g=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # capped sizes, degenerate CVaR: the checks test contracts
        return estimator.fit(X, y, group_labels=g, **kwargs)


def _params_of(estimator):
    return {k: v for k, v in estimator.get_params(deep=False).items() if k != "estimator"}


def check_reproducible(name, estimator):
    """Two fits with the same integer ``random_state`` give the same model."""
    X, y, g = _data()
    est = clone(estimator).set_params(random_state=3)
    a, b = _fit(clone(est), X, y, g), _fit(clone(est), X, y, g)
    # the learned weights where the model keeps them as a list of layers (heads), else its predictions
    for Wa, Wb in zip(getattr(a, "coefs_", []), getattr(b, "coefs_", [])):
        np.testing.assert_array_equal(Wa, Wb, err_msg=f"{name}: two fits with random_state=3 differ")
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def check_global_rng_untouched(name, estimator):
    """A fit neither reads nor advances the global torch and numpy generators."""
    X, y, g = _data()
    torch.manual_seed(123)
    np.random.seed(123)
    torch_before = torch.get_rng_state().clone()
    np_before = np.random.get_state()[1].copy()
    _fit(clone(estimator).set_params(random_state=0), X, y, g)
    assert torch.equal(torch_before, torch.get_rng_state()), f"{name} advanced the global torch RNG"
    np.testing.assert_array_equal(np_before, np.random.get_state()[1], err_msg=f"{name} advanced numpy's RNG")


def check_multiclass_proba(name, estimator):
    """Three classes: probabilities sum to one, logits have three columns, better than chance."""
    X, y, g = _three_class()
    est = _fit(clone(estimator).set_params(random_state=0), X, y, g)
    P = est.predict_proba(X)
    assert P.shape == (X.shape[0], 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert est.decision_function(X).shape == (X.shape[0], 3)
    assert est.score(X, y) > 0.5, f"{name} scores {est.score(X, y):.2f} on 3 separable classes"


def check_pickle_and_clone(name, estimator):
    """A fitted model pickles to the same predictions; clone gives the parameters, unfitted."""
    X, y, g = _data()
    est = _fit(clone(estimator).set_params(random_state=0), X, y, g)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    fresh = clone(est)
    assert _params_of(fresh).keys() == _params_of(est).keys()
    assert not hasattr(fresh, "coefs_") and not hasattr(fresh, "classes_")


def check_group_labels_routing(name, estimator):
    """Group labels reach fit only when requested, and GridSearchCV routes them to the scorer.

    The default request of ``group_labels`` for ``fit`` is explicit (True for
    methods that train on them, False otherwise), so passing them to a
    search never raises scikit-learn's "unrequested metadata" error; the
    search scores folds by worst-group accuracy for 1-D ids and for a boolean
    membership matrix.
    """
    X, y, g = _data()
    request = estimator.get_metadata_routing().fit.requests.get("group_labels")
    assert request in (True, False), f"{name}: fit's group_labels request is {request!r}, not explicit"
    for labels in (g, np.eye(4, dtype=bool)[g]):
        with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search = GridSearchCV(clone(estimator), {"random_state": [0]}, scoring=worst_group_scorer, cv=2)
            search.fit(X, y, group_labels=labels)
        assert np.isfinite(search.best_score_), f"{name}: the routed worst-group score is not finite"


def _has_epochs(estimator):
    """Whether the method trains by epochs with early stopping (DFR tunes C on held-out halves instead)."""
    return "early_stopping" in estimator.get_params()


def check_validation_contract(name, estimator):
    """``X_val``/``y_val`` switch validation on; the scores, best epoch and errors follow the contract.

    A method without epochs (no ``early_stopping`` parameter, e.g. DFR,
    whose held-out data is ``X_val``) must still take the three validation
    arguments, use them, and refuse ``X_val`` without ``y_val``.
    """
    X, y, g = _data()
    Xv, yv, gv = _data(200, seed=1)
    if not _has_epochs(estimator):
        with_val = _fit(clone(estimator).set_params(random_state=0), X, y, g, X_val=Xv, y_val=yv, group_labels_val=gv)
        without = _fit(clone(estimator).set_params(random_state=0), X, y, g)
        assert not np.array_equal(with_val.predict_proba(Xv), without.predict_proba(Xv)), (
            f"{name}: passing X_val, y_val, group_labels_val did not change the model"
        )
        try:
            _fit(clone(estimator), X, y, g, X_val=Xv)
        except ValueError as exc:
            assert "y_val" in str(exc), f"{name}: the error for X_val without y_val does not name y_val: {exc}"
        else:
            raise AssertionError(f"{name} accepted X_val without y_val")
        return
    est = _fit(clone(estimator).set_params(random_state=0), X, y, g, X_val=Xv, y_val=yv, group_labels_val=gv)
    scores = est.validation_scores_
    assert scores is not None, f"{name}: validation_scores_ is None although X_val was given"
    for metric in ("accuracy", "loss", "worst_class_accuracy", "worst_group_accuracy"):
        assert metric in scores and scores[metric].shape == (est.n_iter_,), f"{name}: validation_scores_[{metric!r}]"
    assert 1 <= est.best_iteration_ <= est.n_iter_
    if getattr(estimator, "_selects_on_heldout", False) or getattr(estimator, "_auto_validation_split", False):
        # without X_val, 'auto' chooses the epoch on rows held out of X when every class gets 20 of them
        Xl, yl, gl = _data(2000)
        held = _fit(clone(estimator).set_params(random_state=0), Xl, yl, gl)
        assert held.validation_scores_ is not None, f"{name}: no epoch selection on rows held out of X"
        small = _fit(clone(estimator).set_params(random_state=0), X[:60], y[:60], g[:60])
        assert small.validation_scores_ is None, f"{name}: held out too few rows per class to score them"
        off = _fit(clone(estimator).set_params(random_state=0, early_stopping=False), X, y, g)
    else:
        off = _fit(clone(estimator).set_params(random_state=0), X, y, g)
    assert off.validation_scores_ is None and off.best_iteration_ is None
    bad_settings = [(dict(monitor="worst_group_accuracy"), "group_labels_val")]
    if not getattr(estimator, "_x_val_is_heldout", False):  # (GradTune fine-tunes on part of X_val)
        bad_settings.append((dict(early_stopping=False), "early_stopping"))
    for bad, match in bad_settings:
        try:
            _fit(clone(estimator).set_params(**bad), X, y, None, X_val=Xv, y_val=yv)
        except ValueError as exc:
            assert match in str(exc), f"{name}: the error for {bad} does not name {match!r}: {exc}"
        else:
            raise AssertionError(f"{name} accepted {bad} with X_val and y_val")
    # the internal split: a stratified validation_fraction of the training rows
    inner = _fit(clone(estimator).set_params(random_state=0, early_stopping=True), X, y, g)
    assert inner.validation_scores_ is not None and "worst_group_accuracy" in inner.validation_scores_


def check_early_stopping_keeps_best(name, estimator):
    """With ``restore_best``, the kept weights score the best validation value seen (methods with epochs)."""
    if not _has_epochs(estimator):
        return
    X, y, g = _data()
    Xv, yv, gv = _data(200, seed=1)
    est = _fit(clone(estimator).set_params(random_state=0, monitor="accuracy", n_iter_no_change=None,
                                           early_stopping=True), X, y, g, X_val=Xv, y_val=yv)
    best = np.nanmax(est.validation_scores_["accuracy"])
    if getattr(estimator, "_x_val_is_heldout", False):  # validation is X_val less the held-out rows
        rest = np.setdiff1d(np.arange(Xv.shape[0]), est.holdout_indices_)
        Xv, yv = Xv[rest], yv[rest]
    kept = est.score(Xv, yv)
    assert abs(kept - best) < 1e-6, f"{name}: the kept model scores {kept:.4f} on validation, the best epoch {best:.4f}"


def group_checks():
    """Every check of this suite."""
    return [
        check_reproducible,
        check_global_rng_untouched,
        check_multiclass_proba,
        check_pickle_and_clone,
        check_group_labels_routing,
        check_validation_contract,
        check_early_stopping_keeps_best,
    ]


def parametrize_with_group_checks(estimators):
    """A ``pytest.mark.parametrize`` over (estimator, check) pairs of this suite."""
    import pytest

    cases, ids = [], []
    for est in estimators:
        name = type(est).__name__
        for check in group_checks():
            cases.append((est, partial(_run, check, name)))
            ids.append(f"{name}-{check.__name__}")
    return pytest.mark.parametrize("estimator, check", cases, ids=ids)


def _run(check, name, estimator):
    check(name, estimator)
