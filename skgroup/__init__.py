"""skgroup: scikit-learn estimators for group-robust classification.

Robust heads (every method of :mod:`skgroup.estimators`, each importable from
here) trained on frozen penultimate-layer features, or on a whole backbone
(:mod:`skgroup.finetune`), with worst-group metrics and scorers that travel
through scikit-learn's metadata routing.
"""

__version__ = "0.1.0"

from .estimators import all_estimators as _all_estimators
from . import groups as _groups  # noqa: F401 - registers the inferred-group methods
from .metrics import (
    group_accuracies,
    make_group_labels,
    worst_class_accuracy,
    worst_class_scorer,
    worst_group_accuracy,
    worst_group_scorer,
)

# every registered method at the top level, from the one registry (their modules register them)
globals().update(_all_estimators())

__all__ = [name for name, _ in _all_estimators()] + [
    "group_accuracies",
    "make_group_labels",
    "worst_class_accuracy",
    "worst_class_scorer",
    "worst_group_accuracy",
    "worst_group_scorer",
]
