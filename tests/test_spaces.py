"""The method specs: one per estimator, every list derived from them; search spaces deterministic,
valid and scaled to the data."""

import pytest
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid

from skgroup._cache import canonical
from skgroup.estimators import (
    DataShape,
    ERMClassifier,
    MethodSpec,
    all_estimators,
    get_spec,
    method_specs,
    register_method,
)
from skgroup.estimators._spec import CELEBA_STEPS_PER_EPOCH
from skgroup.model_selection import scaled_epochs, search_space

SHAPES = [(500, 38, 2), (3000, 200, 2), (162_770, 38, 2), (4900, 1536, 3), (1_000_000, 2048, 10)]


def test_every_list_comes_from_the_specs():
    names = [spec.name for spec in method_specs()]
    assert names[0] == "ERMClassifier" and len(set(names)) == len(names)
    assert [n for n, _ in all_estimators()] == names
    for spec in method_specs():
        assert spec.estimator.__name__ == spec.name and get_spec(spec.name) is spec
        spec.estimator(**spec.fast_params)._validate_params()
        spec.estimator(**spec.check_params)._validate_params()
        for grid in (spec.benchmark_grid, spec.quick_grid):
            for params in ParameterGrid(grid or {}):
                spec.estimator().set_params(**params)._validate_params()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}")
@pytest.mark.parametrize("name,cls", all_estimators(), ids=[n for n, _ in all_estimators()])
def test_every_configuration_is_valid(name, cls, shape):
    grid = search_space(name, *shape)
    configs = list(ParameterGrid(grid))
    assert 1 <= len(configs) <= 12, f"{name}: {len(configs)} configurations at {shape}"
    for params in configs:
        # names and values the estimator accepts (values cloned as a search clones them)
        cls().set_params(**{k: clone(v, safe=False) for k, v in params.items()})._validate_params()
    # deterministic (estimator-valued entries, InferredGroupsClassifier's methods, by class and parameters)
    assert canonical(search_space(name, *shape)) == canonical(grid)


def test_epochs_scale_with_the_data():
    # T = 2 CelebA epochs is about as many optimizer steps on every data size
    assert scaled_epochs(2, DataShape(162_770, 38, 2)) == 2
    assert scaled_epochs(2, DataShape(3000, 200, 2)) == 3
    assert scaled_epochs(2, DataShape(500, 38, 2)) == 20
    assert scaled_epochs(2, DataShape(1_000_000, 38, 2)) == 1
    small, large = search_space("JTTClassifier", 3000, 200, 2), search_space("JTTClassifier", 162_770, 38, 2)
    assert small["id_epochs"] == [2, 3] and large["id_epochs"] == [1, 2]
    for n in (500, 3000, 162_770):
        d = DataShape(n, 10, 2)
        steps = scaled_epochs(2, d) * d.steps_per_epoch
        assert abs(steps - 2 * CELEBA_STEPS_PER_EPOCH) <= d.steps_per_epoch / 2 + 1


def test_finetuning_set_scales_and_cvar_alphas_fit_the_batch():
    assert search_space("GradTuneClassifier", 162_770, 38, 2)["n_finetune"] == [500]
    assert search_space("GradTuneClassifier", 600, 38, 2)["n_finetune"] == [150]
    # batch 32 at 3,000 rows: alpha = 0.05 would average 1.6 losses, so it gets batch 64 (3.2 losses)
    small = search_space("CVaRClassifier", 3000, 200, 2)
    assert [(p["alpha"], p.get("batch_size")) for p in small] == [([0.05], [64]), ([0.1], None), ([0.2], None),
                                                                   ([0.5], None)]
    # batch 1024 on CelebA: every alpha at the 'auto' batch
    assert all("batch_size" not in p for p in search_space("CVaRClassifier", 162_770, 38, 2))
    # fewer rows than the batch alpha = 0.05 needs: left out
    assert [p["alpha"] for p in search_space("CVaRClassifier", 40, 200, 2)] == [[0.1], [0.2], [0.5]]


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="No method spec is registered for 'Nope'"):
        search_space("Nope", 100, 2, 2)
    with pytest.raises(ValueError, match="n_samples"):
        search_space("ERMClassifier", 0, 2, 2)
    with pytest.raises(ValueError, match="n_classes"):
        search_space("ERMClassifier", 100, 2, 1)
    class ERMClassifier2(ERMClassifier):
        pass

    ERMClassifier2.__name__ = "ERMClassifier"
    with pytest.raises(ValueError, match="already has a method spec"):
        register_method(MethodSpec(ERMClassifier2, search_space=lambda data: {}))
    with pytest.raises(TypeError, match="MethodSpec"):
        register_method({"estimator": ERMClassifier})


def test_auto_leaves_out_methods_that_need_training_group_labels_without_them():
    from skgroup.model_selection import RobustSearchCV

    search = RobustSearchCV("auto")
    without = {name for name, _, _ in search._configs(3000, 20, 2, with_group_labels=False)}
    with_labels = {name for name, _, _ in search._configs(3000, 20, 2, with_group_labels=True)}
    need = {"DFRClassifier", "GroupBalancedClassifier", "IRMClassifier", "VRExClassifier", "CORALClassifier",
            "MMDClassifier", "LISAClassifier"}
    assert need <= with_labels - without
    assert {"ERMClassifier", "JTTClassifier", "AFRClassifier", "MixupClassifier", "LfFClassifier"} <= without
    free = {spec.name for spec in method_specs(with_group_labels=False)}
    assert free == {spec.name for spec in method_specs()} - need


def test_searched_parameters_names_the_grid_keys():
    from skgroup.model_selection import searched_parameters

    assert searched_parameters("JTTClassifier") == ["id_epochs", "lambda_up", "max_iter"]
    assert "hidden_layer_sizes" in searched_parameters("RegularizedMTLClassifier", 3000, 1536, 3)
    assert "hidden_layer_sizes" not in searched_parameters("RegularizedMTLClassifier")
    assert searched_parameters("Nope") is None
