"""Group-robust classifiers on frozen features."""

from ._base import BaseHeadClassifier, BelowERMWarning
from ._cvar import CVaRClassifier, DegenerateCVaRWarning
from ._erm import ERMClassifier
from ._gradtune import GradTuneClassifier, last_layer_gradient_norms
from ._group_dro import GroupDROClassifier
from ._jtt import EmptyErrorSetWarning, JTTClassifier, LargeErrorSetWarning
from ._mixture import MixtureBalancedClassifier

__all__ = [
    "BaseHeadClassifier",
    "BelowERMWarning",
    "CVaRClassifier",
    "DegenerateCVaRWarning",
    "ERMClassifier",
    "EmptyErrorSetWarning",
    "GroupDROClassifier",
    "JTTClassifier",
    "LargeErrorSetWarning",
    "GradTuneClassifier",
    "MixtureBalancedClassifier",
    "all_estimators",
    "last_layer_gradient_norms",
]


def all_estimators():
    """(name, class) of every skgroup classifier, ERM first (the main job's order)."""
    return [
        (cls.__name__, cls)
        for cls in (
            ERMClassifier,
            GroupDROClassifier,
            JTTClassifier,
            CVaRClassifier,
            GradTuneClassifier,
            MixtureBalancedClassifier,
        )
    ]
