"""skgroup.analysis: hand-computed cases, effects on the synthetic task, plots."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from skgroup import ERMClassifier
from skgroup.analysis import (
    cvar_set_composition,
    error_set_analysis,
    gradient_norm_summary,
    gradient_norms_by_group,
    group_accuracy_table,
    group_spectra,
    hyperparameter_table,
    intra_class_spectral_ratio,
    jtt_error_set_ablation,
    misclassified,
    spectral_imbalance,
    table_columns,
    worst_alpha_mask,
    worst_set_composition,
)
from skgroup.datasets import make_spurious_features
from skgroup.estimators._gradtune import last_layer_gradient_norms


def cols(table):
    return table_columns(table)


@pytest.fixture(scope="module")
def spurious():
    X, y, g = make_spurious_features(1200, n_core=20, n_spurious=20, random_state=0)
    Xv, yv, gv = make_spurious_features(400, n_core=20, n_spurious=20, group_balanced=True, random_state=1)
    erm = ERMClassifier(random_state=0).fit(X, y)
    return SimpleNamespace(X=X, y=y, g=g, Xv=Xv, yv=yv, gv=gv, erm=erm)


# -- error-set analysis -----------------------------------------------------

G8 = np.array([0, 0, 0, 0, 0, 0, 1, 1])
E8 = np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)


def test_error_set_hand_computed():
    # |E| = 3: one row of group 0 (size 6), both rows of group 1 (size 2)
    t = cols(error_set_analysis(E8, G8))
    np.testing.assert_array_equal(t["group"], [0, 1])
    np.testing.assert_array_equal(t["group_size"], [6, 2])
    np.testing.assert_array_equal(t["n_in_set"], [1, 2])
    np.testing.assert_allclose(t["precision"], [1 / 3, 2 / 3])
    np.testing.assert_allclose(t["recall"], [1 / 6, 1.0])
    np.testing.assert_allclose(t["empirical_rate"], [0.75, 0.25])
    np.testing.assert_allclose(t["enrichment"], [(1 / 3) / 0.75, (2 / 3) / 0.25])


def test_error_set_accepts_indices_membership_and_fitted_jtt():
    ref = cols(error_set_analysis(E8, G8))
    by_index = cols(error_set_analysis(np.array([5, 6, 7]), G8))
    np.testing.assert_allclose(by_index["enrichment"], ref["enrichment"])
    jtt_like = SimpleNamespace(error_set_=E8)
    np.testing.assert_allclose(cols(error_set_analysis(jtt_like, G8))["recall"], ref["recall"])
    # overlapping groups: column 1 = every row, so its precision is 1 and enrichment 1
    M = np.column_stack([G8 == 1, np.ones(8, bool)])
    t = cols(error_set_analysis(E8, M))
    np.testing.assert_allclose(t["precision"], [2 / 3, 1.0])
    np.testing.assert_allclose(t["enrichment"], [(2 / 3) / 0.25, 1.0])


def test_error_set_degenerate_and_bad_input():
    with pytest.warns(UserWarning, match="error set is empty"):
        t = cols(error_set_analysis(np.zeros(8, bool), G8))
    assert np.isnan(t["precision"]).all() and np.isnan(t["enrichment"]).all()
    np.testing.assert_array_equal(t["recall"], [0, 0])
    with pytest.raises(ValueError, match="error_set"):
        error_set_analysis(np.ones(5, bool), G8)
    with pytest.raises(ValueError, match="group_labels"):
        error_set_analysis(E8, G8[:5])
    with pytest.raises(ValueError, match="as booleans"):
        error_set_analysis(E8.astype(int), G8)
    with pytest.raises(ValueError, match="repeated"):
        error_set_analysis(np.array([5, 5, 6]), G8)
    with pytest.raises(TypeError, match="error_set_"):
        error_set_analysis(ERMClassifier(), G8)


def test_tables_without_pandas(monkeypatch):
    import skgroup.utils._tables as tables

    monkeypatch.setattr(tables, "_pandas", lambda: None)
    t = error_set_analysis(E8, G8)
    assert isinstance(t, dict) and list(t)[:3] == ["group", "group_size", "n_in_set"]
    assert all(isinstance(v, np.ndarray) and v.shape == (2,) for v in t.values())


def test_error_set_of_erm_is_enriched_in_minority_groups(spurious):
    E = misclassified(spurious.erm, spurious.X, spurious.y)
    t = cols(error_set_analysis(E, spurious.g))
    # groups 1 and 2 are the minorities of make_spurious_features
    assert min(t["enrichment"][1], t["enrichment"][2]) > 3
    assert max(t["enrichment"][0], t["enrichment"][3]) < 1


# -- gradient norms ---------------------------------------------------------


def _autograd_norms(est, X, y):
    module = est._module().double()
    last = [m for m in module if isinstance(m, torch.nn.Linear)][-1]
    y_enc = np.searchsorted(est.classes_, y)
    out = []
    for i in range(X.shape[0]):
        module.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            module(torch.as_tensor(X[i : i + 1], dtype=torch.float64)), torch.as_tensor(y_enc[i : i + 1])
        )
        loss.backward()
        out.append(torch.sqrt((last.weight.grad**2).sum() + (last.bias.grad**2).sum()).item())
    return np.array(out)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("hidden", [(), (7,)])
def test_last_layer_gradient_norms_match_autograd(hidden):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40) * 2 + 1  # labels 1, 3, 5
    est = ERMClassifier(hidden_layer_sizes=hidden, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_allclose(last_layer_gradient_norms(est, X, y), _autograd_norms(est, X, y), rtol=1e-5)
    with pytest.raises(ValueError, match="not fitted on"):
        last_layer_gradient_norms(est, X, np.full(40, 2))


def test_gradient_norms_use_gradtune_definition(spurious):
    t = cols(gradient_norms_by_group(spurious.erm, spurious.Xv, spurious.yv, group_labels=spurious.gv))
    ref = last_layer_gradient_norms(spurious.erm, spurious.Xv, spurious.yv)
    np.testing.assert_allclose(t["gradient_norm"], ref[t["sample"]])


def test_minority_groups_have_larger_gradient_norms(spurious):
    t = gradient_norms_by_group(spurious.erm, spurious.Xv, spurious.yv, group_labels=spurious.gv)
    c = cols(t)
    assert c["gradient_norm"].shape == (400,) and set(c) >= {"sample", "group", "y", "correct"}
    med = dict(zip(cols(gradient_norm_summary(t))["group"], cols(gradient_norm_summary(t))["median"]))
    assert min(med[1], med[2]) > 5 * max(med[0], med[3])


# -- spectral imbalance -----------------------------------------------------


def _cross(center, a, b):
    # 4 points: center +- a e1, center +- b e2 -> covariance diag(a^2/2, b^2/2)
    c = np.asarray(center, float)
    return np.array([c + [a, 0], c - [a, 0], c + [0, b], c - [0, b]])


def test_group_spectra_hand_computed_with_chunks():
    # group 0: 8 rows (two crosses, same center) -> diag(4^2/2, 1^2/2) = (8, 0.5)
    # group 1: 4 rows -> diag(3^2/2, 2^2/2) = (4.5, 2); far-away centers test the centring
    X = np.vstack([_cross([100, -50], 4, 1), _cross([3, 3], 3, 2), _cross([100, -50], 4, 1)])
    g = np.array([0] * 4 + [1] * 4 + [0] * 4)
    rng = np.random.default_rng(0)
    perm = rng.permutation(12)
    for chunk in (3, 5, 100):
        t = cols(group_spectra(X[perm], g[perm], n_components=2, chunk_size=chunk))
        np.testing.assert_array_equal(t["group"], [0, 0, 1, 1])
        np.testing.assert_array_equal(t["rank"], [1, 2, 1, 2])
        np.testing.assert_array_equal(t["n_samples"], [8, 8, 4, 4])
        np.testing.assert_allclose(t["eigenvalue"], [8, 0.5, 4.5, 2], atol=1e-10)


def test_spectral_imbalance_rho_hand_computed():
    # class 0: majority group 0 (8 rows, lambda_1 = 8), minority group 1 (4 rows, lambda_1 = 4.5)
    # class 1: majority group 3 (8 rows, lambda_1 = 2), minority group 2 (4 rows, lambda_1 = 18)
    X = np.vstack([
        _cross([0, 0], 4, 1), _cross([0, 0], 4, 1), _cross([5, 5], 3, 2),
        _cross([9, 0], 6, 1), _cross([0, 9], 2, 1), _cross([0, 9], 2, 1),
    ])
    y = np.repeat([0, 0, 0, 1, 1, 1], 4)
    g = np.repeat([0, 0, 1, 2, 3, 3], 4)
    rho, spectra = spectral_imbalance(X, y, group_labels=g, n_components=1, return_spectra=True)
    r = cols(rho)
    np.testing.assert_array_equal(r["minority_group"], [1, 2])
    np.testing.assert_array_equal(r["majority_group"], [0, 3])
    np.testing.assert_allclose(r["lambda1_minority"], [4.5, 18])
    np.testing.assert_allclose(r["lambda1_majority"], [8, 2])
    np.testing.assert_allclose(r["rho"], [4.5 / 8, 9.0])
    np.testing.assert_array_equal(cols(spectra)["class"], [0, 0, 1, 1])


def test_spectral_randomized_and_memmap_match_exact(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 3000, 60
    X = (rng.normal(size=(n, d)) * np.geomspace(10, 0.1, d) + 5).astype(np.float32)
    g = rng.integers(0, 3, n)
    exact = cols(group_spectra(X, g, n_components=5, solver="exact"))["eigenvalue"]
    rand = cols(group_spectra(X, g, n_components=5, solver="randomized", chunk_size=700))["eigenvalue"]
    np.testing.assert_allclose(rand, exact, rtol=1e-6)
    ref = np.stack([np.linalg.eigvalsh(np.cov(X[g == k].T.astype(np.float64), bias=True))[::-1][:5] for k in range(3)])
    np.testing.assert_allclose(exact, ref.ravel(), rtol=1e-8)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    np.testing.assert_allclose(cols(group_spectra(mm, g, n_components=5, chunk_size=512))["eigenvalue"], exact)


def test_spectral_degenerate_and_bad_input():
    X = np.vstack([_cross([0, 0], 2, 1), _cross([3, 3], 1, 1)])
    y = np.zeros(8, int)
    with pytest.warns(UserWarning, match="no minority"):
        r = cols(spectral_imbalance(X, y, group_labels=np.repeat([0, 1], 4), n_components=1))
    assert np.isnan(r["rho"]).all()
    with pytest.warns(UserWarning, match="single group"):
        spectral_imbalance(X, y, group_labels=np.zeros(8, int), n_components=1)
    with pytest.raises(ValueError, match="n_components"):
        group_spectra(X, y, n_components=0)
    with pytest.raises(ValueError, match="solver"):
        group_spectra(X, y, solver="svd")
    with pytest.raises(ValueError, match="y must have shape"):
        group_spectra(X, y, y=y[:3])
    with pytest.raises(ValueError, match="NaN"):
        group_spectra(np.full((4, 2), np.nan), np.zeros(4, int))
    with pytest.raises(ValueError, match="lacks the columns"):
        intra_class_spectral_ratio(group_spectra(X, y))  # no class column


# -- CVaR worst-alpha set and dynamic JTT ------------------------------------


def test_worst_alpha_mask_and_composition_hand_computed():
    losses = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    np.testing.assert_array_equal(np.flatnonzero(worst_alpha_mask(losses, 0.4)), [1, 3])
    # alpha * n = 2.5: CVaR weighs the 3rd-largest loss by 0.5, so it is in the set
    np.testing.assert_array_equal(np.flatnonzero(worst_alpha_mask(losses, 0.5)), [1, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(worst_alpha_mask(losses, 0.01)), [1])
    t = cols(worst_set_composition(losses, np.array([0, 1, 1, 0, 0]), alpha=0.4))
    np.testing.assert_allclose(t["precision"], [0.5, 0.5])
    np.testing.assert_allclose(t["recall"], [1 / 3, 1 / 2])
    with pytest.raises(ValueError, match="alpha"):
        worst_alpha_mask(losses, 0)


def _noisy_toy():
    # two clean, separable clusters (groups 0, 1) and 10 rows of pure label noise at the
    # origin (group 2): once the clusters are fit, the 10 worst losses are the noise rows
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal([4, 4], 0.3, (90, 2)), rng.normal([-4, -4], 0.3, (90, 2)), np.zeros((10, 2))])
    y = np.r_[np.ones(90, int), np.zeros(90, int), np.tile([0, 1], 5)]
    g = np.repeat([0, 1, 2], [90, 90, 10])
    return X.astype(np.float32), y, g


def test_cvar_set_composition_toy():
    X, y, g = _noisy_toy()
    table, sets = cvar_set_composition(
        X, y, group_labels=g, alpha=0.5, set_alpha=10 / 190, max_iter=6, learning_rate=0.05,
        batch_size=32, random_state=0, return_sets=True,
    )
    t = cols(table)
    assert sets.shape == (6, 190) and np.all(sets.sum(axis=1) == 10)
    np.testing.assert_array_equal(t["epoch"], np.repeat(np.arange(1, 7), 3))
    np.testing.assert_allclose(t["precision"].reshape(6, 3).sum(axis=1), 1.0)
    last = t["epoch"] == 6
    np.testing.assert_allclose(t["precision"][last], [0, 0, 1])
    np.testing.assert_allclose(t["recall"][last], [0, 0, 1])
    np.testing.assert_array_equal(np.flatnonzero(sets[-1]), np.arange(180, 190))
    assert np.all(t["cvar_loss"] >= t["mean_loss"])
    again = cols(cvar_set_composition(X, y, group_labels=g, alpha=0.5, set_alpha=10 / 190, max_iter=6,
                                      learning_rate=0.05, batch_size=32, random_state=0))
    np.testing.assert_array_equal(again["n_in_set"], t["n_in_set"])


def test_cvar_set_composition_reads_estimator_params_and_rejects_lbfgs():
    X, y, g = _noisy_toy()
    est = ERMClassifier(solver="adamw", max_iter=2, batch_size=64, random_state=0)
    t = cols(cvar_set_composition(X, y, group_labels=g, estimator=est, alpha=0.2))
    assert t["epoch"].max() == 2 and np.all(t["n_in_set"].reshape(2, 3).sum(axis=1) == 38)
    assert not hasattr(est, "coef_")  # the estimator is only read
    with pytest.raises(ValueError, match="minibatch solver"):
        cvar_set_composition(X, y, group_labels=g, solver="lbfgs")


def test_cvar_set_composition_with_cvar_classifier_params():
    cvar_module = pytest.importorskip("skgroup.estimators._cvar")
    X, y, g = _noisy_toy()
    est = cvar_module.CVaRClassifier(alpha=0.1, max_iter=2, random_state=0)  # batch_size='auto'
    t = cols(cvar_set_composition(X, y, group_labels=g, estimator=est))
    assert t["epoch"].max() == 2 and np.all(t["n_in_set"].reshape(2, 3).sum(axis=1) == 19)


def test_jtt_error_set_ablation(spurious):
    s = spurious
    kw = dict(eval_set=(s.Xv, s.yv, s.gv), max_iter=3, identification_epochs=1, batch_size=128,
              learning_rate=1e-2, random_state=0)
    t = cols(jtt_error_set_ablation(s.X, s.y, update_every=(None, 1, 5), **kw))
    np.testing.assert_array_equal(t["variant"], ["static", "every 1 epochs", "every 5 epochs"])
    np.testing.assert_array_equal(t["update_every"], [0, 1, 5])
    np.testing.assert_array_equal(t["n_updates"], [0, 2, 0])
    # K >= max_iter never updates: it is static JTT, bit for bit
    assert t["accuracy"][2] == t["accuracy"][0]
    assert t["worst_group_accuracy"][2] == t["worst_group_accuracy"][0]
    assert t["final_error_set_size"][0] == t["initial_error_set_size"][0] > 0
    # a given static error set replaces the identification model
    given = cols(jtt_error_set_ablation(s.X, s.y, update_every=(None,), error_set=np.zeros(1200, bool), **kw))
    assert given["initial_error_set_size"][0] == 0
    with pytest.raises(ValueError, match="lambda_up"):
        jtt_error_set_ablation(s.X, s.y, lambda_up=0, **kw)
    with pytest.raises(ValueError, match="update_every"):
        jtt_error_set_ablation(s.X, s.y, update_every=(-1,), **kw)


# -- comparisons ------------------------------------------------------------


def test_group_accuracy_table_hand_computed():
    y = np.array([0, 0, 1, 1])
    g = np.array([0, 1, 0, 1])
    t = cols(group_accuracy_table({"a": np.array([0, 1, 1, 1]), "b": y}, None, y, group_labels=g))
    np.testing.assert_array_equal(t["estimator"], ["a", "a", "b", "b"])
    np.testing.assert_allclose(t["accuracy"], [1.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(t["worst_group_accuracy"], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(t["overall_accuracy"], [0.75, 0.75, 1.0, 1.0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_hyperparameter_table_from_grid_search():
    from sklearn.model_selection import GridSearchCV

    X, y, _ = make_spurious_features(200, n_core=5, n_spurious=5, random_state=0)
    search = GridSearchCV(ERMClassifier(max_iter=30), {"l2_reg": [1e-3, 1e-1], "class_weight": [None, "balanced"]}, cv=2)
    search.fit(X, y)
    t = cols(hyperparameter_table(search, "l2_reg"))
    np.testing.assert_allclose(t["score"], search.cv_results_["mean_test_score"])
    assert list(t["value"]) == [p["l2_reg"] for p in search.cv_results_["params"]]
    assert len(set(t["others"])) == 2
    with pytest.raises(ValueError, match="varied"):
        hyperparameter_table(search, "alpha")


# -- plots ------------------------------------------------------------------


def test_plots_return_axes(spurious):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from skgroup import analysis as A

    s = spurious
    X, y, g = _noisy_toy()
    tables = {
        A.plot_error_set_enrichment: error_set_analysis(misclassified(s.erm, s.X, s.y), s.g),
        A.plot_gradient_norms: gradient_norms_by_group(s.erm, s.Xv, s.yv, group_labels=s.gv),
        A.plot_spectra: group_spectra(s.X, s.g, y=s.y, n_components=5),
        A.plot_cvar_set_composition: cvar_set_composition(X, y, group_labels=g, max_iter=2),
        A.plot_error_set_ablation: {"variant": np.array(["static", "every 1 epochs"]),
                                    "accuracy": np.array([0.8, 0.7]),
                                    "worst_group_accuracy": np.array([0.6, 0.3])},
    }
    for plot, table in tables.items():
        ax = plot(table)
        assert isinstance(ax, mpl.axes.Axes)
    fig, ax = plt.subplots()
    assert A.plot_group_accuracies({"erm": s.erm, "truth": s.yv}, s.Xv, s.yv, group_labels=s.gv, ax=ax,
                                   group_names=["a", "b", "c", "d"]) is ax
    table = group_accuracy_table({"erm": s.erm}, s.Xv, s.yv, group_labels=s.gv)
    assert isinstance(A.plot_group_accuracies(table), mpl.axes.Axes)
    assert isinstance(A.plot_gradient_norms(tables[A.plot_gradient_norms], log_scale=True), mpl.axes.Axes)
    cv_results = {"params": [{"C": 0.1}, {"C": 1.0}, {"C": 100.0}], "param_C": [0.1, 1.0, 100.0],
                  "mean_test_score": [0.2, 0.5, 0.4]}
    ax = A.plot_worst_group_vs_param(cv_results, "C")
    assert ax.get_xscale() == "log"
    ax = A.plot_worst_group_vs_param({"lambda_up": [2, 5, 10], "worst_group_accuracy": [0.1, 0.3, 0.6]}, "lambda_up")
    assert isinstance(ax, mpl.axes.Axes)
    plt.close("all")


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    from skgroup.analysis import plot_error_set_enrichment

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_error_set_enrichment(error_set_analysis(E8, G8))


def test_make_table_keeps_tuple_columns_one_dimensional():
    from skgroup.utils._tables import make_table

    t = cols(make_table({"pair": [(0, 1), (1, 0)], "n": [3, 4]}))
    assert t["pair"].shape == (2,) and t["pair"].dtype == object
    assert t["pair"][0] == (0, 1) and list(t["n"]) == [3, 4]
