"""Group-robust classifiers on frozen features."""

from ._base import BaseHeadClassifier
from ._cvar import CVaRClassifier, DegenerateCVaRWarning
from ._erm import ERMClassifier
from ._gradtune import GradTuneClassifier, last_layer_gradient_norms
from ._group_dro import GroupDROClassifier
from ._jtt import EmptyErrorSetWarning, JTTClassifier
from ._mixture import MixtureBalancedClassifier
from ._mtl import (
    Diagonal,
    MultitaskHead,
    MultitaskHistory,
    ProjectConstraints,
    RegularizedMTLClassifier,
    make_multitask_head,
    project_l1_sphere,
)

__all__ = [
    "BaseHeadClassifier",
    "CVaRClassifier",
    "DegenerateCVaRWarning",
    "Diagonal",
    "ERMClassifier",
    "EmptyErrorSetWarning",
    "GroupDROClassifier",
    "JTTClassifier",
    "GradTuneClassifier",
    "MixtureBalancedClassifier",
    "MultitaskHead",
    "MultitaskHistory",
    "ProjectConstraints",
    "RegularizedMTLClassifier",
    "all_estimators",
    "last_layer_gradient_norms",
    "make_multitask_head",
    "project_l1_sphere",
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
            RegularizedMTLClassifier,
        )
    ]
