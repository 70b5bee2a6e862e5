"""Group inference (skgroup.groups): planted groups recovered, the mechanisms by hand, bad input,
and the meta-estimator that trains group-label methods on inferred groups (routing: inferred labels
never reach a scorer, true ones never reach training)."""

import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skgroup import DFRClassifier, ERMClassifier, GroupBalancedClassifier, GroupDROClassifier
from skgroup._cache import SHARED_FITS
from skgroup.datasets import make_spurious_features
from skgroup.groups import (
    EIIL,
    SPARE,
    ClusterInferrer,
    ErrorSplit,
    InferredGroupsClassifier,
    eiil_environments,
    group_recovery,
    infer_groups,
    representation,
    spare_weights,
)
from skgroup.metrics import make_group_scorer, worst_group_accuracy


@pytest.fixture(scope="module")
def planted():
    """Sagawa et al.'s synthetic task: groups 1 and 2 (a != y) are the planted minorities."""
    X, y, g = make_spurious_features(2000, random_state=0)
    return X, y, g


@pytest.fixture(autouse=True)
def _fresh_cache():
    SHARED_FITS.clear()
    yield
    SHARED_FITS.clear()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# -- planted groups --------------------------------------------------------------------------

# adjusted Rand index (ARI) of the inferred against the planted groups within each class (the class
# alone scores 0 there, and 0.80 on the ARI over all rows: groups include the class), on the rows
# fitted (2,000 rows, 10 % minorities). Measured over two draws: features 1.0, SPARE 0.64-0.79,
# probabilities 0.41, error split 0.36-0.38, EIIL 0.10-0.24 (docs/groups.rst)
@pytest.mark.parametrize("inferrer, bound", [
    (ErrorSplit(random_state=0), 0.3),
    (ClusterInferrer("features", random_state=0), 0.95),
    (ClusterInferrer("probabilities", random_state=0), 0.3),
    (EIIL(n_steps=3000, random_state=0), 0.05),
    (SPARE(random_state=0), 0.5),
], ids=["ErrorSplit", "Cluster-features", "Cluster-probabilities", "EIIL", "SPARE"])
def test_planted_groups_are_recovered(planted, inferrer, bound):
    X, y, g = planted
    labels = _quiet(clone(inferrer).fit_predict, X, y)
    scores = group_recovery(g, labels, y)
    assert scores["ari_within_class"] >= bound
    assert scores["ari_class_only"] == pytest.approx(adjusted_rand_score(g, y))
    # every inferrer's second group of a class is enriched in the planted minority of that class
    minority = g % 2 != y
    second = np.isin(labels, [1, 3])
    assert minority[second].mean() > 2 * minority.mean()


def test_group_recovery_by_hand():
    g = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y = g // 2
    perfect = group_recovery(g, np.array([5, 5, 6, 6, 7, 7, 8, 8]), y)
    assert perfect["ari"] == perfect["ari_within_class"] == 1.0
    only_class = group_recovery(g, y, y)
    assert only_class["ari_within_class"] == 0.0 and only_class["ari"] == only_class["ari_class_only"]
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        group_recovery(g, g[:-1], y)


def test_ids_are_class_major_and_largest_group_first(planted):
    X, y, g = planted
    inf = ClusterInferrer("features", random_state=0).fit(X, y)
    assert inf.group_names_ == ((0, 0), (0, 1), (1, 0), (1, 1))
    assert np.all(np.diff(inf.group_counts_[:2]) <= 0) and np.all(np.diff(inf.group_counts_[2:]) <= 0)
    # the class is part of the group: a class-0 row is never in a class-1 group
    assert np.all((inf.labels_ >= 2) == (y == 1))
    # predict on the fitted rows gives the fitted groups (clustering assigns deterministically)
    np.testing.assert_array_equal(inf.predict(X, y), inf.labels_)
    # and new rows of the same distribution land in the planted groups
    X2, y2, g2 = make_spurious_features(600, random_state=1)
    assert adjusted_rand_score(g2, inf.predict(X2, y2)) > 0.95


def test_string_classes_and_group_names():
    X, y, g = make_spurious_features(400, random_state=0)
    names = np.array(["cat", "dog"])[y]
    inf = ErrorSplit(random_state=0).fit(X, names)
    assert inf.group_names_ == (("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1))
    with pytest.raises(ValueError, match="labels the model was not fitted on"):
        inf.predict(X, np.array(["cat", "cow"])[y])


# -- mechanisms by hand ------------------------------------------------------------------------

class _Fixed(ClassifierMixin, BaseEstimator):
    """Predicts the class stored in the first column of X (a 'biased model' whose errors we choose)."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.asarray(X)[:, 0].astype(int)

    def predict_log_proba(self, X):
        p = np.full((len(X), len(self.classes_)), 0.1 / (len(self.classes_) - 1))
        p[np.arange(len(X)), self.predict(X)] = 0.9
        return np.log(p)


def test_error_split_cells_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 1, 2, 0, 2])
    X = np.column_stack([pred, np.arange(9.0)])
    cells = ErrorSplit(_Fixed()).fit(X, y)
    # (class, prediction): 3 cells a class, the class's largest first -> correct cells are 0 of each class
    expected_within = {(0, 0): 0, (0, 1): 1, (0, 2): 2, (1, 1): 0, (1, 2): 1, (1, 0): 2,
                       (2, 2): 0, (2, 0): 1, (2, 1): 2}
    expected = [3 * c + expected_within[(c, p)] for c, p in zip(y, pred)]
    np.testing.assert_array_equal(cells.labels_, expected)
    assert cells.error_rate_ == pytest.approx(3 / 9)
    errors = ErrorSplit(_Fixed(), split="error").fit(X, y)
    np.testing.assert_array_equal(errors.labels_, 2 * y + (pred != y))


def test_gradient_representation_by_hand():
    rng = np.random.RandomState(0)
    X = rng.randn(50, 3)
    y = (X[:, 0] > 0).astype(int)
    model = ERMClassifier(random_state=0).fit(X, y)
    p1 = model.predict_proba(X)[:, 1]
    G = representation("gradients", X, y, model)
    np.testing.assert_allclose(G, (p1 - y)[:, None] * np.column_stack([X, np.ones(50)]), rtol=1e-5, atol=1e-6)


def test_eiil_is_the_reference_codes_double_backpropagation():
    """The closed-form penalty gradient gives the assignment of the authors' autograd formulation."""
    rng = np.random.RandomState(0)
    n, steps = 300, 400
    z = 2 * rng.randn(n, 2)
    y = rng.randint(0, 2, n)
    env, q = eiil_environments(z, y, n_steps=steps, learning_rate=1e-2, seed=3)
    # opt_env/utils/opt_utils.py: split_data_opt, with the same initial assignment
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.tensor(z) * scale, torch.tensor(y), reduction="none")
    w = torch.tensor(np.random.default_rng(3).standard_normal(n), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(steps):
        grad_a = torch.autograd.grad((loss * w.sigmoid()).mean(), [scale], create_graph=True)[0]
        grad_b = torch.autograd.grad((loss * (1 - w.sigmoid())).mean(), [scale], create_graph=True)[0]
        negated = -torch.stack([grad_a**2, grad_b**2]).mean()
        opt.zero_grad()
        negated.backward(retain_graph=True)
        opt.step()
    np.testing.assert_allclose(q, w.sigmoid().detach().numpy(), atol=2e-3)
    np.testing.assert_array_equal(env, (w.sigmoid() > 0.5).long().numpy())


def test_eiil_puts_the_reference_models_errors_in_its_high_loss_environment():
    """The penalty's derivative is positive exactly on misclassified rows (binary), so they share an environment."""
    X, y, g = make_spurious_features(1000, random_state=0)
    inf = EIIL(ERMClassifier(l2_reg=1.0), n_steps=2000, random_state=0).fit(X, y)
    ref = inf.estimator_
    wrong = ref.predict(X) != y
    loss = -ref.predict_log_proba(X)[np.arange(len(y)), y]
    for c in (0, 1):
        rows = y == c
        assert wrong[rows].sum() >= 5
        ids = np.unique(inf.labels_[rows & wrong])
        assert ids.shape == (1,)
        same = rows & (inf.labels_ == ids[0])
        assert loss[same].mean() > loss[rows & ~same].mean()


def test_spare_weights_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2, 3])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    w = spare_weights(labels, y, powers=[1.0, 2.0])
    # class 0: groups of 3 and 1 rows, power 1 -> 1/3, 1/3, 1/3, 1 normalised to sum 1 in the class
    c0 = np.array([1 / 3, 1 / 3, 1 / 3, 1.0]) / 2.0
    # class 1: groups of 2 and 1 rows, power 2 -> 1/4, 1/4, 1
    c1 = np.array([0.25, 0.25, 1.0]) / 1.5
    expected = np.concatenate([c0, c1])
    np.testing.assert_allclose(w, expected * 7 / expected.sum())
    assert w[:4].sum() == pytest.approx(w[4:].sum())  # every class equally often


def test_spare_powers_follow_the_silhouette(planted):
    X, y, g = planted
    spare = SPARE(random_state=0).fit(X, y)
    expected = np.where(spare.class_silhouettes_ < 0.9, 2.0, 1.0)
    np.testing.assert_array_equal(spare.sampling_powers_, expected)
    lenient = clone(spare).set_params(silhouette_threshold=-1.0).fit(X, y)
    np.testing.assert_array_equal(lenient.sampling_powers_, [1.0, 1.0])
    np.testing.assert_allclose(spare.importance_weights(X, y), spare.sample_weight_)


def test_silhouette_chooses_the_number_of_planted_clusters():
    rng = np.random.RandomState(0)
    centres = np.array([[0, 0], [8, 0], [0, 8]])
    X = np.vstack([centres[i % 3] + rng.randn(2) for i in range(300)] + [rng.randn(100, 2) + [20, 20]])
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    inf = ClusterInferrer("features", max_clusters=5, random_state=0).fit(X, y)
    assert inf.n_groups_per_class_[0] == 3
    assert set(inf.silhouette_scores_[0]) == {2, 3, 4, 5}
    fixed = ClusterInferrer("features", n_clusters=2, random_state=0).fit(X, y)
    assert fixed.n_groups_per_class_.tolist() == [2, 2]


# -- bad input ---------------------------------------------------------------------------------

INFERRERS = [ErrorSplit(), ClusterInferrer(), ClusterInferrer("logits"), EIIL(n_steps=10), SPARE()]
IDS = ["ErrorSplit", "Cluster", "Cluster-logits", "EIIL", "SPARE"]


@pytest.mark.parametrize("inferrer", INFERRERS, ids=IDS)
def test_one_class_is_refused(inferrer):
    X = np.random.RandomState(0).randn(20, 3)
    with pytest.raises(ValueError, match="y holds one class only"):
        clone(inferrer).fit(X, np.zeros(20, int))


@pytest.mark.parametrize("inferrer", INFERRERS, ids=IDS)
def test_constant_features_are_refused(inferrer):
    X = np.ones((20, 3))
    with pytest.raises(ValueError, match="X: every feature is constant"):
        clone(inferrer).fit(X, np.arange(20) % 2)


@pytest.mark.parametrize("inferrer", [ClusterInferrer(n_clusters=4), SPARE(n_clusters=4)], ids=["Cluster", "SPARE"])
def test_fewer_rows_than_clusters_is_refused(inferrer):
    rng = np.random.RandomState(0)
    X, y = rng.randn(23, 3), np.r_[np.zeros(20, int), np.ones(3, int)]
    with pytest.raises(ValueError, match=r"n_clusters=4: class 1 has only 3 row\(s\), fewer rows than clusters"):
        clone(inferrer).fit(X, y)
    with pytest.raises(ValueError, match="n_clusters='auto': class 1 has 2 row"):
        clone(inferrer).set_params(n_clusters="auto").fit(X[:22], y[:22])


def test_a_class_constant_in_the_representation_is_refused():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3)
    X[20:] = 1.0
    with pytest.raises(ValueError, match="rows of class 1 are identical"):
        ClusterInferrer(random_state=0).fit(X, np.r_[np.zeros(20, int), np.ones(20, int)])


def test_predict_needs_the_labels_of_its_rows(planted):
    X, y, _ = planted
    inf = ErrorSplit(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 2000 rows but y has 10"):
        inf.predict(X, y[:10])


# -- the meta-estimator ----------------------------------------------------------------------

def test_inferred_groups_reach_the_estimator_as_its_group_labels(planted):
    X, y, g = planted
    inferrer = ClusterInferrer("features", random_state=0)
    meta = _quiet(InferredGroupsClassifier(GroupDROClassifier(max_iter=3, batch_size=64), inferrer,
                                           random_state=0).fit, X, y)
    direct = _quiet(GroupDROClassifier(max_iter=3, batch_size=64, random_state=0).fit, X, y,
                    group_labels=clone(inferrer).fit_predict(X, y))
    np.testing.assert_array_equal(meta.predict_proba(X), direct.predict_proba(X))
    assert meta.estimator_.group_names_ == tuple(range(4))
    assert meta.group_recovery_ is None


def test_true_training_group_labels_are_never_trained_on(planted):
    X, y, g = planted
    meta = InferredGroupsClassifier(GroupBalancedClassifier(), ErrorSplit(), random_state=0)
    a = _quiet(clone(meta).fit, X, y, group_labels=g)
    b = _quiet(clone(meta).fit, X, y, group_labels=np.random.RandomState(0).permutation(g))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.group_recovery_ == pytest.approx(adjusted_rand_score(g, a.group_labels_))
    assert b.group_recovery_ < 0.05


def test_inferred_labels_never_reach_a_scorer(planted):
    """A routed scorer receives the user's true group labels of its fold, not the inferred ones."""
    X, y, g = planted
    seen = []

    def record(y_true, y_pred, *, group_labels):
        seen.append(np.asarray(group_labels).copy())
        return worst_group_accuracy(y_true, y_pred, group_labels=group_labels)

    scorer = make_group_scorer(record)
    meta = InferredGroupsClassifier(GroupBalancedClassifier(), ClusterInferrer("features"), random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(meta, {"random_state": [0]}, scoring=scorer, cv=2)
        _quiet(search.fit, X, y, group_labels=g)
    assert len(seen) == 2
    for labels, (_, test) in zip(seen, StratifiedKFold(2).split(X, y)):  # GridSearchCV's cv=2
        np.testing.assert_array_equal(labels, g[test])


def test_dfr_trains_on_inferred_validation_groups_even_with_true_ones(planted):
    X, y, g = planted
    Xv, yv, gv = make_spurious_features(800, random_state=1)
    meta = InferredGroupsClassifier(DFRClassifier(Cs=[0.1], n_retrains=2), ClusterInferrer("features"), random_state=0)
    fitted = _quiet(meta.fit, X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    np.testing.assert_array_equal(fitted.estimator_.group_counts_, np.bincount(fitted.group_labels_val_))
    assert fitted.estimator_.holdout_source_ == "X_val"


def test_epoch_selection_uses_true_validation_groups_when_given(planted, monkeypatch):
    X, y, g = planted
    Xv, yv, gv = make_spurious_features(400, random_state=1)
    got = {}
    original = GroupDROClassifier.fit

    def spy(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None):
        got.update(group_labels_val=group_labels_val)
        return original(self, X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                        group_labels_val=group_labels_val)

    monkeypatch.setattr(GroupDROClassifier, "fit", spy)
    meta = InferredGroupsClassifier(GroupDROClassifier(max_iter=2, batch_size=64), ErrorSplit(), random_state=0)
    _quiet(meta.fit, X, y, X_val=Xv, y_val=yv, group_labels_val=gv)
    np.testing.assert_array_equal(got["group_labels_val"], gv)
    _quiet(meta.fit, X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(got["group_labels_val"], meta.group_labels_val_)


def test_spare_weights_train_an_erm_model(planted):
    X, y, g = planted
    spare = SPARE(random_state=0)
    meta = _quiet(InferredGroupsClassifier(ERMClassifier(), spare, random_state=0).fit, X, y)
    direct = ERMClassifier(random_state=0).fit(X, y, sample_weight=clone(spare).fit(X, y).sample_weight_)
    np.testing.assert_allclose(meta.predict_proba(X), direct.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_an_estimator_that_ignores_groups_is_refused(planted):
    X, y, g = planted
    with pytest.raises(ValueError, match="estimator=ERMClassifier neither trains on group_labels"):
        InferredGroupsClassifier(ERMClassifier(), ErrorSplit(), random_state=0).fit(X, y)


def test_the_inference_is_fitted_once_for_every_wrapped_method(planted):
    X, y, g = planted
    inferrer = ClusterInferrer("features")
    for est in (GroupDROClassifier(max_iter=2, batch_size=64), GroupBalancedClassifier()):
        _quiet(InferredGroupsClassifier(est, inferrer, random_state=0).fit, X, y)
    assert SHARED_FITS.fits["group_inference"] == 1 and SHARED_FITS.hits["group_inference"] == 1
    a = InferredGroupsClassifier(GroupDROClassifier(), inferrer, random_state=0)._shared_fit_signature()
    b = InferredGroupsClassifier(GroupBalancedClassifier(), inferrer, random_state=0)._shared_fit_signature()
    assert a == b != InferredGroupsClassifier(GroupDROClassifier(), inferrer, random_state=1)._shared_fit_signature()
    # a random seed shares nothing
    SHARED_FITS.clear()
    infer_groups(inferrer, X, y)
    assert SHARED_FITS.fits.get("group_inference", 0) == 0


def test_inferred_group_dro_beats_erm_on_planted_groups():
    data_tr = make_spurious_features(3000, random_state=0)
    X, y, _ = data_tr
    Xt, yt, gt = make_spurious_features(2000, group_balanced=True, random_state=2)
    erm = ERMClassifier(random_state=0).fit(X, y)
    meta = _quiet(InferredGroupsClassifier(GroupDROClassifier(), ClusterInferrer("features"), random_state=0).fit,
                  X, y)
    erm_wga = worst_group_accuracy(yt, erm.predict(Xt), group_labels=gt)
    meta_wga = worst_group_accuracy(yt, meta.predict(Xt), group_labels=gt)
    assert meta_wga > erm_wga + 0.15


# -- label-free selection rules of RobustSearchCV --------------------------------------------

@pytest.fixture(scope="module")
def small_benchmark():
    from skgroup.datasets import make_spurious_benchmark

    return make_spurious_benchmark(600, 300, 300, random_state=0)


def _candidates():
    return [(ERMClassifier(), {"l2_reg": [1e-4, 1.0]}),
            (InferredGroupsClassifier(GroupBalancedClassifier()),
             {"estimator__balancing": ["reweight", "sqrt_reweight"]})]


def test_class_diff_rule_scores_minus_the_class_difference(small_benchmark):
    from skgroup.metrics import class_difference
    from skgroup.model_selection import RobustSearchCV

    tr, va = small_benchmark.train, small_benchmark.val
    search = _quiet(RobustSearchCV(_candidates(), selection="class_diff", early_stopping=False, random_state=0).fit,
                    tr.X, tr.y, X_val=va.X, y_val=va.y)
    from sklearn.base import clone as _clone

    for (name, est, params), score in zip(search._configs(600, 200, 2), search.results_["score"]):
        model = _quiet(search._prepare(est, params, 0, None, False).fit, tr.X, tr.y)
        assert score == pytest.approx(-class_difference(va.y, model.predict(va.X)))
    assert search.best_score_ == pytest.approx(max(search.results_["score"]))
    assert _clone(search).selection == "class_diff"


def test_inferred_worst_group_rule_scores_the_groups_inferred_on_validation(small_benchmark):
    from skgroup.model_selection import RobustSearchCV

    tr, va = small_benchmark.train, small_benchmark.val
    search = _quiet(RobustSearchCV(_candidates(), selection="inferred_worst_group", early_stopping=False,
                                   random_state=0).fit, tr.X, tr.y, X_val=va.X, y_val=va.y)
    # the rule's inference and the candidates' (both the default inferrer, one seed) are one fit
    assert search.shared_fits_["group_inference"] == 1
    _, _, groups = infer_groups(ClusterInferrer("features"), tr.X, tr.y, va.X, va.y, random_state=0)
    for (name, est, params), score in zip(search._configs(600, 200, 2), search.results_["score"]):
        model = _quiet(search._prepare(est, params, 0, None, False).fit, tr.X, tr.y)
        assert score == pytest.approx(worst_group_accuracy(va.y, model.predict(va.X), group_labels=groups))
    # and it is the search's default rule
    default = _quiet(RobustSearchCV(_candidates(), early_stopping=False, random_state=0).fit, tr.X, tr.y,
                     X_val=va.X, y_val=va.y)
    assert default.selection_ == "inferred_worst_group"
    np.testing.assert_array_equal(default.results_["score"], search.results_["score"])


def test_grid_estimators_are_not_shared_between_candidates(small_benchmark):
    from skgroup.model_selection import RobustSearchCV

    tr, va = small_benchmark.train, small_benchmark.val
    inner = GroupDROClassifier(max_iter=2, batch_size=64)
    grid = {"estimator": [inner], "estimator__l2_reg": [1e-3, 10.0]}
    search = _quiet(RobustSearchCV([(InferredGroupsClassifier(inferrer=ErrorSplit()), grid)], random_state=0).fit,
                    tr.X, tr.y, X_val=va.X, y_val=va.y)
    assert inner.l2_reg == GroupDROClassifier().l2_reg  # the grid's object is left alone
    assert search.best_estimator_.estimator_.l2_reg == search.best_params_["estimator__l2_reg"]
    assert search.results_["accuracy"][0] != search.results_["accuracy"][1]


def test_auto_searches_the_inferred_group_methods_and_dpe_without_group_labels():
    from skgroup.model_selection import RobustSearchCV

    names = {name for name, _, _ in RobustSearchCV()._configs(3000, 200, 2, with_group_labels=False)}
    assert {"InferredGroupsClassifier", "DPEClassifier"} <= names
    assert "GroupBalancedClassifier" not in names and "DFRClassifier" not in names


def test_class_diff_interval_by_hand():
    from skgroup.metrics import class_diff_interval

    # three classes, three replicates of their accuracies; level 1/2 -> the 25th and 75th percentiles
    reps = np.array([[[0.5, 0.6, 0.9]], [[0.6, 0.5, 0.8]], [[0.7, 0.6, 1.0]]])
    point = np.array([[0.6, 0.55, 0.9]])
    low, high = class_diff_interval(point, reps, 0.5)
    # pair (0, 1): differences -0.1, 0.1, 0.1 -> [0.0, 0.1]: holds 0 -> |d| in [0, 0.1]
    # pair (0, 2): -0.4, -0.2, -0.3 -> [-0.35, -0.25] -> |d| in [0.25, 0.35]
    # pair (1, 2): -0.3, -0.3, -0.4 -> [-0.35, -0.3] -> |d| in [0.3, 0.35]
    np.testing.assert_allclose(high, [-np.mean([0.0, 0.25, 0.3])])
    np.testing.assert_allclose(low, [-np.mean([0.1, 0.35, 0.35])])
    one = class_diff_interval(np.array([[0.7]]), np.array([[[0.6]], [[0.8]]]), 0.95)
    np.testing.assert_array_equal(one, ([0.0], [0.0]))


def test_class_diff_interval_holds_its_estimate_when_the_classes_are_recalled_alike():
    # two classes recalled almost alike: the resampled |acc_0 - acc_1| are nearly all larger than the
    # estimate, so the plain percentile interval of minus ClassDiff lay entirely below the estimate
    from skgroup.metrics import class_diff_interval, paired_bootstrap

    # recalls 750 / 1000 and 749 / 999: ClassDiff 0.00025, far below the resampling noise (~0.02)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [1000, 999])
    correct = np.concatenate([rng.permutation(np.repeat([True, False], [750, 250])),
                              rng.permutation(np.repeat([True, False], [749, 250]))])
    point, reps = paired_bootstrap(correct[None], y, reduce="class_diff", n_bootstrap=1000, random_state=0)
    assert point[0] == pytest.approx(-(0.75 - 749 / 999))
    plain = np.percentile(reps[:, 0], [2.5, 97.5])
    assert plain[1] < point[0]  # the defect: the estimate above its own percentile interval
    cell_point, cell_reps = paired_bootstrap(correct[None], y, reduce="none", n_bootstrap=1000, random_state=0)
    np.testing.assert_allclose(reps[:, 0], -np.abs(cell_reps[:, 0, 0] - cell_reps[:, 0, 1]))
    low, high = class_diff_interval(cell_point, cell_reps, 0.95)
    assert low[0] <= point[0] <= high[0]
    assert high[0] == 0.0 and low[0] < -0.02  # |d| in [0, ~0.04]: the noise, not the bias


def test_class_diff_search_intervals_hold_their_scores(small_benchmark):
    from skgroup.model_selection import RobustSearchCV

    tr, va = small_benchmark.train, small_benchmark.val
    search = _quiet(RobustSearchCV(_candidates(), selection="class_diff", early_stopping=False, random_state=0).fit,
                    tr.X, tr.y, X_val=va.X, y_val=va.y)
    r = search.results_
    assert np.all((r["ci_low"] <= r["score"]) & (r["score"] <= r["ci_high"]))
