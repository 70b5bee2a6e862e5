"""One spec per method: every list of methods in skgroup is derived from here.

A :class:`MethodSpec` says, for one estimator class, what the rest of the
library needs to know about it: its search space (what
:class:`~skgroup.model_selection.RobustSearchCV` searches, after DomainBed's
``hparams_registry.py``: one deterministic, documented grid per method, each
range with its source), quick settings for tests, the wider grid the
benchmarks tune over, whether its training needs group labels, and whether
the fine-tuning path can run it. The estimator's module registers its spec
next to the class::

    register_method(MethodSpec(
        MyClassifier,
        search_space=lambda data: {"strength": [0.1, 1.0]},
        fast_params={"max_iter": 5},
    ))

and :func:`~skgroup.estimators.all_estimators`, the search registry, the
common tests, the benchmark grids and the main job all read the registry.

How the search spaces scale with the data
-----------------------------------------

* **Epochs.** The minibatch defaults were tuned on CelebA attributes
  (162,770 training rows, batch 1024: 159 steps an epoch). With
  ``batch_size='auto'`` (``min(1024, max(32, n // 100))``) an epoch is
  about 100 steps from 3,200 rows up, but only ``n / 32`` steps below, and
  about ``n / 1024`` steps beyond 100,000 rows. Epoch counts are therefore
  given as CelebA epochs and converted to this data's epochs at the same
  number of optimizer steps (:func:`scaled_epochs`).
* **Learning rates** are ``'auto'``: each estimator rescales its
  CelebA-tuned rate by the features' median row norm.
* **L2 strengths and the methods' own knobs** (``lambda_up``, ``alpha``,
  ``eta``) are scale-free: the papers' ranges are used as they are.
"""

import math
from dataclasses import dataclass, field
from typing import Callable

from ..engine import resolve_batch_size

__all__ = [
    "DataShape",
    "MethodSpec",
    "all_estimators",
    "get_spec",
    "method_specs",
    "register_method",
    "scaled_epochs",
    "search_space",
    "searched_parameters",
]

#: Optimizer steps an epoch on CelebA attributes at the default batch size: the
#: unit in which the minibatch epoch defaults were tuned.
CELEBA_STEPS_PER_EPOCH = math.ceil(162_770 / 1024)


@dataclass(frozen=True)
class DataShape:
    """What a search space may depend on."""

    n_samples: int
    n_features: int
    n_classes: int

    @property
    def steps_per_epoch(self):
        return math.ceil(self.n_samples / resolve_batch_size("auto", self.n_samples))


def scaled_epochs(celeba_epochs, data):
    """Epochs on ``data`` with as many optimizer steps as ``celeba_epochs`` on CelebA attributes."""
    steps = celeba_epochs * CELEBA_STEPS_PER_EPOCH
    return max(1, round(steps / data.steps_per_epoch))


@dataclass(frozen=True)
class MethodSpec:
    """What the library knows about one method.

    Attributes
    ----------
    estimator : type
        The estimator class.
    search_space : callable(DataShape) -> dict or list of dict
        The grid :class:`~skgroup.model_selection.RobustSearchCV` searches
        on data of this shape (a ``GridSearchCV`` ``param_grid``);
        deterministic, at most a dozen configurations.
    fast_params : dict
        Quick, deterministic settings for tests (skgroup's own check suite,
        :mod:`skgroup.utils.estimator_checks`).
    check_params : dict
        Settings under scikit-learn's ``parametrize_with_checks``, which fits
        hundreds of times on tiny data and compares fits to 1e-7: float64
        and tight tolerances where a method needs them.
    benchmark_grid : dict, list of dict or None
        The wider grid ``benchmarks/compare.py`` tunes over (None: the search
        space at the benchmark's shape).
    quick_grid : dict, list of dict or None
        The benchmarks' smoke-test grid (None: ``fast_params`` as a grid).
    trains_on_group_labels : bool
        The method is only itself with training group labels (Group DRO
        without them is worst-class DRO and still itself; DFR and group
        balancing without them would quietly become class balancing):
        ``RobustSearchCV('auto')`` leaves it out unless ``fit`` gets
        ``group_labels``.
    finetune : bool
        ``FineTuneClassifier(method=...)`` can run it (its plan trains
        through the engine's executors only).
    finetune_instead : str
        Why it cannot, and what to do instead (the fine-tuning path's error).
    wraps_estimator : bool
        A meta-estimator of :mod:`skgroup.meta`: it trains a user's
        classifier (its ``estimator`` parameter), so it is not a method of
        its own in :func:`all_estimators` or ``RobustSearchCV('auto')``,
        and its search space covers the method's knobs only (the base
        estimator is the user's). ``fast_params`` and ``check_params`` then
        hold a quick base estimator.
    """

    estimator: type
    search_space: Callable
    fast_params: dict = field(default_factory=dict)
    check_params: dict = field(default_factory=dict)
    benchmark_grid: object = None
    quick_grid: object = None
    trains_on_group_labels: bool = False
    finetune: bool = True
    finetune_instead: str = ""
    wraps_estimator: bool = False

    @property
    def name(self):
        return self.estimator.__name__

    def grid(self, n_samples, n_features, n_classes):
        """The search space at this shape, validated (see :func:`search_space`)."""
        for value, what in ((n_samples, "n_samples"), (n_features, "n_features"), (n_classes, "n_classes")):
            if int(value) != value or value < 1:
                raise ValueError(f"{what} must be a positive integer; got {value!r}.")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2; got {n_classes}.")
        grid = self.search_space(DataShape(int(n_samples), int(n_features), int(n_classes)))
        return [dict(g) for g in grid] if isinstance(grid, list) else dict(grid)


_SPECS = {}


def register_method(spec):
    """Add a method to the registry (its module calls this next to the class); returns ``spec``."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method takes a MethodSpec; got {type(spec).__name__}.")
    if spec.name in _SPECS and _SPECS[spec.name].estimator is not spec.estimator:
        raise ValueError(f"{spec.name} already has a method spec (from {_SPECS[spec.name].estimator.__module__}).")
    _SPECS[spec.name] = spec
    return spec


def method_specs(*, with_group_labels=True, wrappers=False):
    """Every registered spec of the heads, ERM first then in registration order.

    ``with_group_labels=False``: only the methods that are themselves
    without training group labels. ``wrappers=True``: the meta-estimators
    of :mod:`skgroup.meta` (which wrap a user's classifier) instead of the
    heads.
    """
    specs = sorted(_SPECS.values(), key=lambda s: s.name != "ERMClassifier")
    return [s for s in specs if (with_group_labels or not s.trains_on_group_labels)
            and s.wraps_estimator == wrappers]


def get_spec(name):
    """The spec of the estimator class named ``name``."""
    if name not in _SPECS:
        raise ValueError(
            f"No method spec is registered for {name!r}; registered: {list(_SPECS)}. Pass "
            "(estimator, param_grid) pairs as candidates, or register one with "
            "skgroup.estimators.register_method(MethodSpec(...))."
        )
    return _SPECS[name]


def registered_spec(name):
    """The spec of ``name``, or None for an estimator that registered none."""
    return _SPECS.get(name)


def all_estimators():
    """(name, class) of every skgroup head classifier, ERM first (the main job's order).

    The meta-estimators of :mod:`skgroup.meta` are not listed: they need a
    classifier to wrap (``method_specs(wrappers=True)`` lists their specs).
    """
    return [(s.name, s.estimator) for s in method_specs()]


def search_space(estimator_name, n_samples, n_features, n_classes):
    """The grid that ``RobustSearchCV('auto')`` searches for one estimator on data of this shape.

    Parameters
    ----------
    estimator_name : str
        A class name, e.g. ``'JTTClassifier'``.
    n_samples : int
        Training rows (the rows the candidate is fitted on).
    n_features, n_classes : int

    Returns
    -------
    dict or list of dict
        Parameter name -> list of values, as ``GridSearchCV``'s
        ``param_grid``. Deterministic: the same shape gives the same grid.

    Examples
    --------
    >>> from skgroup.model_selection import search_space
    >>> search_space("ERMClassifier", 3000, 200, 2)["l2_reg"]
    [0.0001, 0.01, 1.0]
    """
    return get_spec(estimator_name).grid(n_samples, n_features, n_classes)


def searched_parameters(estimator_name, n_samples=3000, n_features=2, n_classes=2):
    """Sorted names of the parameters the registry searches for ``estimator_name`` on data of this
    shape (what a warning tells a user to search), or None when none is registered."""
    if estimator_name not in _SPECS:
        return None
    space = search_space(estimator_name, n_samples, n_features, n_classes)
    return sorted({k for grid in (space if isinstance(space, list) else [space]) for k in grid})
