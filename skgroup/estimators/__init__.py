"""Group-robust classifiers on frozen features."""

from ._afr import AFRClassifier, afr_weights
from ._base import BaseHeadClassifier, BelowERMWarning
from ._cvar import CVaRClassifier, DegenerateCVaRWarning
from ._dfr import DFRClassifier, TinyHeldOutGroupWarning
from ._erm import ERMClassifier
from ._gradtune import GradTuneClassifier, last_layer_gradient_norms
from ._group_balanced import GroupBalancedClassifier
from ._group_dro import GroupDROClassifier
from ._jtt import EmptyErrorSetWarning, JTTClassifier, LargeErrorSetWarning
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
    "AFRClassifier",
    "BaseHeadClassifier",
    "BelowERMWarning",
    "CVaRClassifier",
    "DFRClassifier",
    "DegenerateCVaRWarning",
    "Diagonal",
    "ERMClassifier",
    "EmptyErrorSetWarning",
    "GroupBalancedClassifier",
    "GroupDROClassifier",
    "JTTClassifier",
    "LargeErrorSetWarning",
    "GradTuneClassifier",
    "MixtureBalancedClassifier",
    "MultitaskHead",
    "MultitaskHistory",
    "ProjectConstraints",
    "RegularizedMTLClassifier",
    "TinyHeldOutGroupWarning",
    "afr_weights",
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
            GroupBalancedClassifier,
            AFRClassifier,
            DFRClassifier,
        )
    ]
