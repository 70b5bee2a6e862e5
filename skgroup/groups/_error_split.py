"""Error split: a biased model's (class, prediction) cells, JTT's error set within each class."""

import numpy as np
from sklearn.utils._param_validation import HasMethods, StrOptions

from ._base import BaseGroupInferrer, model_outputs

__all__ = ["ErrorSplit"]


class ErrorSplit(BaseGroupInferrer):
    """Groups from a biased model's mistakes: (class, prediction) cells, or JTT's error set per class.

    A model trained by ERM on spuriously correlated data predicts from the
    shortcut, so within a class the rows it gets wrong are mostly the
    minority groups. Just Train Twice (Liu et al., ICML 2021) upweights that
    *error set* :math:`E = \\{i : \\hat f(x_i) \\neq y_i\\}`; LaBonte et al.
    ("The Group Robustness is in the Details", NeurIPS 2023) use the
    (class, biased prediction) cells as stand-in groups for model selection
    (the bias-unsupervised score); SpuCo's ``JTTInference`` returns the two
    sets correct / misclassified. Here the groups are, with
    ``split='prediction'``, the cells

    .. math:: g_i = (y_i, \\hat f(x_i)) \\qquad (K \\text{ groups per class})

    and with ``split='error'`` the pairs :math:`(y_i, [\\hat f(x_i) \\neq y_i])`
    (2 per class). For two classes both are the same partition.

    The biased model :math:`\\hat f` is ``estimator`` fitted on the rows of
    ``fit``; None uses LaBonte et al.'s biased model: ERM without class
    balancing, full-batch L-BFGS at the library's weak default L2
    (:class:`~skgroup.ERMClassifier` with ``l2_reg=1e-4``), fitted once per
    data and shared with the bias-unsupervised score. JTT's own
    identification model is an *under*-fitted ERM (T epochs): pass
    ``estimator=ERMClassifier(solver='adamw', max_iter=2)`` for it (or any
    classifier; a fitted one inside ``sklearn.frozen.FrozenEstimator``).
    ``predict`` puts new rows in the cells of the same model's predictions.

    Published numbers: JTT's error set upweighted, worst-group accuracy 86.7
    (Waterbirds), 81.1 (CelebA), 72.6 (MultiNLI), 69.3 (CivilComments) with
    validation group labels for tuning (Liu et al., 2021, Table 1); the
    measured recovery of planted groups here is in ``docs/groups.rst``.

    Parameters
    ----------
    estimator : classifier or None, default=None
        The biased model (cloned and fitted on ``fit``'s rows; a
        ``random_state`` of None is set from ``random_state``). None:
        LaBonte et al.'s biased ERM (see above).
    split : {'prediction', 'error'}, default='prediction'
        (class, prediction) cells, or (class, misclassified) pairs.
    random_state : int, RandomState or None, default=None
        Seeds the biased model when it has a ``random_state`` of None.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimator_ : fitted classifier
        The biased model.
    labels_ : ndarray of shape (n_samples,)
        Groups of the fitted rows.
    n_groups_, n_groups_per_class_, group_names_, group_offsets_, group_counts_ :
        The groups (see :class:`BaseGroupInferrer`).
    error_rate_ : float
        Share of the fitted rows the biased model misclassifies.

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.groups import ErrorSplit
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> ErrorSplit().fit(X, y).group_names_
    ((0, 0), (0, 1), (1, 0), (1, 1))
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "split": [StrOptions({"prediction", "error"})],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator=None, *, split="prediction", random_state=None):
        self.estimator = estimator
        self.split = split
        self.random_state = random_state

    def _cells(self, X, y_enc):
        pred = np.argmax(model_outputs(self.estimator_, X), axis=1)
        if self.split == "error":
            return y_enc, (pred != y_enc).astype(np.int64)
        return y_enc, pred.astype(np.int64)

    def _fit(self, X, y_enc):
        self.estimator_ = self._reference(X, y_enc)
        k = self.classes_.shape[0]
        self.n_groups_per_class_ = np.full(k, 2 if self.split == "error" else k, dtype=np.int64)
        cls, within = self._cells(X, y_enc)
        wrong = within != 0 if self.split == "error" else within != cls
        self.error_rate_ = float(np.mean(wrong))
        return cls, within

    def _predict(self, X, y_enc):
        return self._cells(X, y_enc)
