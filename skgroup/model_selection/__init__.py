"""Model selection for group robustness, with and without group labels.

* :class:`RobustSearchCV`: choose the method and its settings on validation
  data (or CV folds) by worst-class accuracy, the bias-unsupervised score,
  accuracy (no group labels) or worst-group accuracy, with bootstrap
  intervals and shared work done once;
* :func:`search_space`: the search space of each method, scaled to the data
  (``candidates='auto'``), read from the methods' specs
  (:class:`skgroup.estimators.MethodSpec`);
* :func:`select_on_validation`: the field's protocol (tune on a fixed
  validation split, refit on the training rows) over ``GridSearchCV``;
* :class:`ValidationSplit`: that split as a scikit-learn CV object.
"""

from ._search import SELECTION_RULES, RobustSearchCV
from ..estimators import scaled_epochs, search_space, searched_parameters
from ._validation import ValidationSplit, select_on_validation

__all__ = [
    "RobustSearchCV",
    "SELECTION_RULES",
    "ValidationSplit",
    "scaled_epochs",
    "search_space",
    "searched_parameters",
    "select_on_validation",
]
