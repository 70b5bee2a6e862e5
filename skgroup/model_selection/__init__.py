"""Model selection for group robustness, with and without group labels.

* :func:`select_on_validation`: the field's protocol (tune on a fixed
  validation split, refit on the training rows) over ``GridSearchCV``;
* :class:`ValidationSplit`: that split as a scikit-learn CV object.
"""

from ._validation import ValidationSplit, select_on_validation

__all__ = ["ValidationSplit", "select_on_validation"]
