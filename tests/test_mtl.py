"""Regularized multitask learning: the objective, the module contract, the constrained form, Sec. 3."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skgroup import RegularizedMTLClassifier
from skgroup.objectives import MultitaskLoss, MultitaskOutput, Objective
from skgroup.datasets import make_mtl_toy, make_spurious_features
from skgroup.estimators import make_multitask_head, project_l1_sphere
from skgroup.metrics import worst_group_accuracy


def _data(n=300, seed=0):
    X, y, g = make_spurious_features(n, n_core=4, n_spurious=3, sigma_core=2.0, random_state=seed)
    return X, y, g


# -- the L1-sphere projection --------------------------------------------------


@pytest.mark.parametrize("v, radius", [
    ([3.0, -1.0, 0.5], 1.0),     # outside the ball: soft-thresholding, small entries go to 0
    ([0.01, -0.02, 0.0], 1.0),   # inside: every magnitude grows by the same amount
    ([0.2, 0.2], 0.1),
    ([5.0, 0.0, 0.0, 0.0], 5.0),  # already on the sphere
])
def test_projection_lands_on_the_sphere_and_is_nearest(v, radius):
    v = torch.tensor(v, dtype=torch.float64)
    a = project_l1_sphere(v, radius)
    assert float(a.abs().sum()) == pytest.approx(radius, rel=1e-12)
    # nearest point: no point of the sphere sampled around it is closer to v
    rng = np.random.default_rng(0)
    cand = rng.normal(size=(20000, v.numel())) * 0.3 + a.numpy()
    cand = cand * (radius / np.abs(cand).sum(axis=1, keepdims=True))
    assert np.linalg.norm(cand - v.numpy(), axis=1).min() >= float(torch.linalg.vector_norm(a - v)) - 1e-9


def test_projection_matches_duchi_outside_the_ball():
    a = project_l1_sphere(torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64), 1.0)
    np.testing.assert_allclose(a.numpy(), [1.0, 0.0, 0.0])
    a = project_l1_sphere(torch.tensor([0.6, 0.5, -0.02], dtype=torch.float64), 1.0)
    np.testing.assert_allclose(a.numpy(), [0.55, 0.45, 0.0])


# -- the objective (eq. 9) -----------------------------------------------------


def test_objective_is_eq9_with_size_normalised_penalty():
    g = torch.Generator().manual_seed(0)
    logits, rec, x = torch.randn(8, 3, generator=g), torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    h_end, h_aux = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    y, idx = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(8)
    obj = MultitaskLoss(alpha_aux=0.5, alpha_reg=2.0)
    got = obj(MultitaskOutput(logits, rec, x, h_end, h_aux), y, idx)
    ce = torch.nn.functional.cross_entropy(logits, y)
    mse = ((rec - x) ** 2).sum() / (8 * 5)
    l1 = h_end.abs().sum() / (8 * 4) + h_aux.abs().sum() / (8 * 4)
    assert float(got) == pytest.approx(float(ce + 0.5 * mse + 2.0 * l1), rel=1e-6)
    np.testing.assert_allclose(obj.last_terms.numpy(), [float(ce), float(mse), float(l1)], rtol=1e-6)
    # no auxiliary output: the end task and the penalty on h_end only (the paper's end-task + L1 ablation)
    solo = MultitaskLoss(alpha_aux=0.0, alpha_reg=2.0)(MultitaskOutput(logits, h_end=h_end), y, idx)
    assert float(solo) == pytest.approx(float(ce + 2.0 * h_end.abs().mean()), rel=1e-6)


def test_objective_refuses_plain_logits():
    with pytest.raises(TypeError, match="MultitaskOutput"):
        MultitaskLoss()(torch.zeros(2, 2), torch.tensor([0, 1]), torch.arange(2))
    with pytest.raises(ValueError, match="auxiliary head"):
        MultitaskLoss(alpha_aux=1.0)(MultitaskOutput(torch.zeros(2, 2)), torch.tensor([0, 1]), torch.arange(2))
    assert MultitaskLoss(end=Objective()).online is False


# -- the module ------------------------------------------------------------------


def test_module_returns_structure_in_training_and_logits_in_eval():
    m = make_multitask_head(5, 3, hidden_layer_sizes=(6,), noise_std=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    out = m.train()(x)
    assert isinstance(out, MultitaskOutput)
    assert out.logits.shape == (4, 3) and out.reconstruction.shape == (4, 5) and out.h_end.shape == (4, 6)
    assert torch.equal(out.target, x) and not torch.equal(out.h_end, out.h_aux)  # h_aux sees the noised x
    assert torch.equal(m.eval()(x), out.logits)
    torch.manual_seed(7)
    a = m.train()(x).reconstruction
    torch.manual_seed(7)
    assert torch.equal(a, m(x).reconstruction)  # the noise is torch's (forked, seeded) global RNG


@pytest.mark.parametrize("params", [
    dict(),
    dict(hidden_layer_sizes=(8, 4)),
    dict(featurizer="diagonal", l1_radius=0.5, alpha_reg=0.0, solver="sgd"),
    dict(alpha_aux=0.0),
])
def test_numpy_prediction_is_the_torch_module(params):
    X, y, _ = _data()
    clf = RegularizedMTLClassifier(max_iter=3, batch_size=64, random_state=0, **params).fit(X, y)
    with torch.no_grad():
        z = clf._module().eval()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(clf._logits(X), z, rtol=1e-5, atol=1e-5)
    assert (clf.aux_coef_ is None) == (params.get("alpha_aux", 1.0) == 0)
    for key in ("end_loss", "aux_loss", "l1", "train_loss"):
        assert clf.history_[key].shape == (3,)


def test_constraints_hold_after_every_step():
    X, y, _ = _data()
    seen = []

    from skgroup.engine import EpochCallback

    @torch.no_grad()
    def record(epoch, module):
        seen.append((float(module.trunk.weight.abs().sum()), float(torch.linalg.vector_norm(module.aux.weight))))

    clf = RegularizedMTLClassifier(featurizer="diagonal", l1_radius=0.3, alpha_reg=0.0, solver="sgd", max_iter=4,
                                   batch_size=32, random_state=0, callbacks=[EpochCallback(record)]).fit(X, y)
    np.testing.assert_allclose(seen, [(0.3, 1.0)] * 4, rtol=1e-5)
    assert np.abs(clf.coefs_[0]).sum() == pytest.approx(0.3, rel=1e-5)
    assert np.linalg.norm(clf.aux_coef_) == pytest.approx(1.0, rel=1e-5)
    assert clf.coefs_[0].shape == (X.shape[1],)


def test_no_gp_selection_needs_no_group_labels():
    X, y, _ = _data()
    Xv, yv, _ = _data(200, seed=1)
    clf = RegularizedMTLClassifier(max_iter=5, batch_size=64, monitor="accuracy", n_iter_no_change=None,
                                   random_state=0).fit(X, y, X_val=Xv, y_val=yv)
    best = int(np.argmax(clf.validation_scores_["accuracy"])) + 1
    assert clf.best_iteration_ == best
    assert clf.score(Xv, yv) == pytest.approx(clf.validation_scores_["accuracy"][best - 1])


@pytest.mark.parametrize("params, match", [
    (dict(featurizer="diagonal", hidden_layer_sizes=(4,)), "hidden_layer_sizes=()"),
    (dict(l1_radius=1.0), "featurizer='diagonal'"),
    (dict(solver="lbfgs"), "solver"),
    (dict(alpha_aux=-1.0), "alpha_aux"),
    (dict(noise_std=-0.1), "noise_std"),
    (dict(l1_radius=0.0, featurizer="diagonal"), "l1_radius"),
])
def test_bad_parameters_name_the_argument(params, match):
    X, y, _ = _data(60)
    with pytest.raises((ValueError, InvalidParameterError), match=match):
        RegularizedMTLClassifier(max_iter=1, **params).fit(X, y)


def test_projection_under_adam_warns():
    X, y, _ = _data(60)
    with pytest.warns(UserWarning, match="solver='sgd'"):
        RegularizedMTLClassifier(featurizer="diagonal", l1_radius=1.0, max_iter=1).fit(X, y)


# -- Sec. 3 ------------------------------------------------------------------------


def test_make_mtl_toy_follows_the_paper():
    b = make_mtl_toy(random_state=0)
    np.testing.assert_array_equal(np.bincount(b.train.group_labels), [450, 50, 50, 450])
    np.testing.assert_array_equal(np.bincount(b.val.group_labels), [45, 5, 5, 45])
    np.testing.assert_array_equal(np.bincount(b.test.group_labels), [250] * 4)
    big = make_mtl_toy(4000, 4, 40000, random_state=1).test
    ys, as_ = 2 * big.y - 1, 2 * big.attribute - 1
    np.testing.assert_allclose((big.X[:, 0] - ys).var(), 0.6, rtol=0.03)
    np.testing.assert_allclose((big.X[:, 1] - as_).var(), 0.1, rtol=0.03)
    np.testing.assert_array_equal(big.group_labels, 2 * big.y + big.attribute)
    with pytest.raises(ValueError, match="n_minority"):
        make_mtl_toy(100, n_minority=200)


def test_sec3_regularized_mtl_beats_the_end_task_alone_at_small_capacity():
    """||a||_1 = 0.1: the end task alone keeps whichever feature its random head starts
    favouring (the spurious one on these seeds); the reconstruction task keeps the core
    feature on every seed, and worst-group accuracy follows (paper, Table 2: 64.15% -> 94.02%)."""
    common = dict(featurizer="diagonal", l1_radius=0.1, alpha_reg=0.0, noise_std=1.0, solver="sgd",
                  batch_size=64, learning_rate=1e-3, max_iter=60, l2_reg=0.0)
    end_only, mtl = [], []
    for seed in (0, 1):
        b = make_mtl_toy(random_state=seed)
        for alpha, out in ((0.0, end_only), (10.0, mtl)):
            clf = RegularizedMTLClassifier(alpha_aux=alpha, random_state=seed, **common).fit(b.train.X, b.train.y)
            out.append(worst_group_accuracy(b.test.y, clf.predict(b.test.X), group_labels=b.test.group_labels))
    assert min(mtl) > 0.8
    assert np.mean(mtl) - np.mean(end_only) > 0.5
