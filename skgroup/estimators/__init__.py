"""Group-robust classifiers on frozen features."""

from ._base import BaseHeadClassifier
from ._erm import ERMClassifier

__all__ = ["BaseHeadClassifier", "ERMClassifier", "all_estimators"]


def all_estimators():
    """(name, class) of every skgroup classifier, ERM first (the main job's order)."""
    return [(cls.__name__, cls) for cls in (ERMClassifier,)]
