"""Group-robustness metrics, per-group reports and routed scorers."""

from ._metrics import (
    EmptyCellWarning,
    MissingGroupWarning,
    below_majority,
    bias_unsupervised_score,
    class_difference,
    per_group_accuracy,
    worst_class_accuracy,
    worst_group_accuracy,
)
from ._report import GroupReport, class_diff_interval, group_accuracies, group_proportions, paired_bootstrap
from ._scorers import (
    MetadataRoutingRequired,
    bias_unsupervised_scorer,
    class_diff_scorer,
    make_group_scorer,
    worst_class_scorer,
    worst_group_scorer,
)
from .._groups import UngroupedRowsWarning, make_group_labels

__all__ = [
    "EmptyCellWarning",
    "GroupReport",
    "MetadataRoutingRequired",
    "MissingGroupWarning",
    "UngroupedRowsWarning",
    "below_majority",
    "bias_unsupervised_score",
    "bias_unsupervised_scorer",
    "class_diff_scorer",
    "class_difference",
    "group_accuracies",
    "group_proportions",
    "make_group_labels",
    "make_group_scorer",
    "paired_bootstrap",
    "class_diff_interval",
    "per_group_accuracy",
    "worst_class_accuracy",
    "worst_class_scorer",
    "worst_group_accuracy",
    "worst_group_scorer",
]
