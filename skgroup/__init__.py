"""skgroup: scikit-learn estimators for group-robust classification.

Robust heads (Group DRO, JTT, CVaR DRO, GradTune, DFR, AFR, class and group balancing,
regularized multitask learning) trained on
frozen penultimate-layer features, with worst-group metrics and scorers that
travel through scikit-learn's metadata routing.
"""

__version__ = "0.1.0"

from .estimators import (
    AFRClassifier,
    CVaRClassifier,
    DFRClassifier,
    DPEClassifier,
    ERMClassifier,
    GradTuneClassifier,
    GroupBalancedClassifier,
    GroupDROClassifier,
    JTTClassifier,
    MixtureBalancedClassifier,
    RegularizedMTLClassifier,
)
from .groups import InferredGroupsClassifier  # noqa: E402 - registers the inferred-group methods
from .metrics import (
    group_accuracies,
    make_group_labels,
    worst_class_accuracy,
    worst_class_scorer,
    worst_group_accuracy,
    worst_group_scorer,
)

__all__ = [
    "CVaRClassifier",
    "ERMClassifier",
    "GroupDROClassifier",
    "JTTClassifier",
    "GradTuneClassifier",
    "MixtureBalancedClassifier",
    "RegularizedMTLClassifier",
    "GroupBalancedClassifier",
    "AFRClassifier",
    "DFRClassifier",
    "DPEClassifier",
    "InferredGroupsClassifier",
    "group_accuracies",
    "make_group_labels",
    "worst_class_accuracy",
    "worst_class_scorer",
    "worst_group_accuracy",
    "worst_group_scorer",
]
