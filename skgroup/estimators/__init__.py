"""Group-robust classifiers on frozen features."""

from ._base import BaseHeadClassifier
from ._erm import ERMClassifier

__all__ = ["BaseHeadClassifier", "ERMClassifier"]
