"""Group inference: group labels from the data alone, and methods trained on them.

Most users have no group labels, not even on validation. The inferrers here
name the group of every labelled row from what a biased model, its errors
or the data's structure reveal, with one protocol (scikit-learn objects):
``fit(X, y)``, then ``predict(X, y)`` -> group ids of any labelled rows,
or ``fit_predict(X, y)``. Groups are (class, inferred attribute) cells.

* :class:`ErrorSplit`: a biased model's (class, prediction) cells, JTT's
  error set within each class (Liu et al., 2021; LaBonte et al., 2023);
* :class:`ClusterInferrer`: per-class clustering of the features or of a
  biased model's outputs or loss gradients, k by silhouette (GEORGE,
  Sohoni et al., 2020; SpuCo's Cluster);
* :class:`EIIL`: the environments that maximise a reference model's IRM
  penalty (Creager et al., 2021);
* :class:`SPARE`: clusters of early-training outputs per class, with their
  importance-sampling weights (Yang et al., 2024);
* :class:`InferredGroupsClassifier`: any method that trains on group labels
  (Group DRO, group balancing, DFR, DPE) trained on inferred groups; it is
  in ``RobustSearchCV('auto')``, the inference shared by its candidates.

See ``docs/groups.rst`` for how well each recovers planted groups.
"""

from ._base import BaseGroupInferrer, group_recovery, model_outputs
from ._error_split import ErrorSplit
from ._cluster import ClusterInferrer, representation
from ._eiil import EIIL, eiil_environments
from ._spare import SPARE, spare_weights
from ._meta import InferredGroupsClassifier, default_inferrer, infer_groups

__all__ = [
    "BaseGroupInferrer",
    "ClusterInferrer",
    "EIIL",
    "ErrorSplit",
    "InferredGroupsClassifier",
    "SPARE",
    "default_inferrer",
    "eiil_environments",
    "group_recovery",
    "infer_groups",
    "model_outputs",
    "representation",
    "spare_weights",
]
