"""What every group inferrer shares: the protocol, input checks, the reference model, group ids.

An inferrer is fitted on labelled rows, ``fit(X, y)``, and then names the
group of any labelled rows, ``predict(X, y)`` (the class is part of the
group, as in every paper implemented here: groups are (class, inferred
attribute) cells). Group ids are integers laid out class by class: the
groups of class ``classes_[0]`` first, each class's groups ordered by their
size on the rows the inferrer was fitted on (largest first), so that the
ids of a class's majority and minority groups are stable across fits and
mean the same on training and validation rows. ``group_names_`` holds the
(class, index within the class) pair of every id.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._cache import SHARED_FITS, canonical, fingerprint
from ..engine._fit import encode_labels, resolve_seed

__all__ = ["BaseGroupInferrer", "group_recovery", "model_outputs"]


def model_outputs(model, X):
    """Logits (n, K) of a fitted classifier: a skgroup head's own, else log-probabilities or scores."""
    if hasattr(model, "_logits"):
        return np.asarray(model._logits(X), dtype=np.float64)
    if hasattr(model, "predict_log_proba"):
        with np.errstate(divide="ignore"):
            out = np.asarray(model.predict_log_proba(X), dtype=np.float64)
        return np.maximum(out, -1e4)
    scores = np.asarray(model.decision_function(X), dtype=np.float64)
    if scores.ndim == 1:  # binary scores: logits (-s/2, s/2) have the same softmax
        scores = np.column_stack([-scores / 2, scores / 2])
    return scores


class BaseGroupInferrer(BaseEstimator):
    """Base class: ``fit(X, y)``, ``predict(X, y)`` -> group ids, ``fit_predict(X, y)``.

    Subclasses implement ``_fit(X, y_enc)`` (returning the ids of the fitted
    rows as (class, within-class index) pairs, i.e. two int arrays) and
    ``_predict(X, y_enc)`` (the same for other rows), and set
    ``n_groups_per_class_`` in ``_fit``.
    """

    _parameter_constraints: dict = {}

    # -- inputs ---------------------------------------------------------------------
    def _check_fit_data(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=True)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        name = type(self).__name__
        if classes.shape[0] < 2:
            raise ValueError(
                f"y holds one class only ({classes[0]!r}): {name} infers groups within each class from "
                "what separates the classes (a model of y, or its errors), so it needs at least two classes. "
                "Pass labelled rows of every class."
            )
        if X.shape[0] > 1 and np.all(np.ptp(X, axis=0) == 0):
            raise ValueError(
                f"X: every feature is constant over the {X.shape[0]} rows, so no group (nor class) can be told "
                f"apart from another; {name} needs features that vary (check the feature extraction)."
            )
        self.classes_ = classes
        return X, y_enc.ravel()

    def _check_predict_data(self, X, y):
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        y = column_or_1d(y, warn=True)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}: pass the labels of the rows of X.")
        return X, encode_labels(self.classes_, y, "y")

    def _seed(self, offset=0):
        return (resolve_seed(self.random_state) + offset) % (2**32)

    def _fixed_seed(self):
        return isinstance(self.random_state, Integral) and not isinstance(self.random_state, bool)

    # -- the reference model -----------------------------------------------------------
    def _reference_estimator(self):
        """The estimator to clone for the reference model (None: LaBonte et al.'s biased ERM, shared)."""
        return self.estimator

    def _reference(self, X, y_enc):
        """The fitted reference (biased) model of (X, y): ``estimator`` cloned and fitted, shared per data.

        Fitted once per distinct data and settings in a process (see
        :mod:`skgroup._cache`) when its seed is fixed: every inferrer (and every
        candidate of a search) asking for the same model on the same rows gets
        a copy of one fit. ``estimator=None``: the biased ERM model of
        LaBonte et al. (2023), the one behind the bias-unsupervised score
        (:func:`skgroup.estimators._base.biased_erm`; full-batch L-BFGS, no seed).
        """
        estimator = self._reference_estimator()
        if estimator is None:
            from ..estimators._base import biased_erm

            return biased_erm(X, y_enc, dtype="float64" if X.dtype == np.float64 else "float32")
        est = clone(estimator)
        params = est.get_params(deep=False)
        own = params.get("random_state", 0)
        fixed = own is None and self._fixed_seed() or (isinstance(own, Integral) and not isinstance(own, bool))
        if "random_state" in params and own is None:
            est.set_params(random_state=self._seed(17))
        if not fixed:
            return est.fit(X, y_enc)
        key = SHARED_FITS.key("group_reference", fingerprint(X, y_enc), canonical(est))
        return SHARED_FITS.get_or_fit(key, lambda: est.fit(X, y_enc))

    # -- the protocol ------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the inferrer on labelled rows; ``labels_`` holds their groups.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._validate_params()
        X, y_enc = self._check_fit_data(X, y)
        cls, within = self._fit(X, y_enc)
        sizes = np.zeros((self.classes_.shape[0], int(np.max(self.n_groups_per_class_))), dtype=np.int64)
        np.add.at(sizes, (cls, within), 1)
        # within each class, the largest inferred group first: ids comparable across fits and splits
        order = [np.argsort(-sizes[c, :k], kind="stable") for c, k in enumerate(self.n_groups_per_class_)]
        self.rank_within_class_ = [np.argsort(o) for o in order]
        self.group_offsets_ = np.concatenate([[0], np.cumsum(self.n_groups_per_class_)[:-1]]).astype(np.int64)
        self.n_groups_ = int(np.sum(self.n_groups_per_class_))
        names = [c.item() if hasattr(c, "item") else c for c in self.classes_]
        self.group_names_ = tuple((names[c], j) for c, k in enumerate(self.n_groups_per_class_) for j in range(k))
        self.labels_ = self._ids(cls, within)
        self.group_counts_ = np.bincount(self.labels_, minlength=self.n_groups_)
        return self

    def _ids(self, cls, within):
        out = np.empty(cls.shape[0], dtype=np.int64)
        for c in range(self.classes_.shape[0]):
            rows = cls == c
            out[rows] = self.group_offsets_[c] + self.rank_within_class_[c][within[rows]]
        return out

    def predict(self, X, y):
        """Group ids of labelled rows (the class is part of the group, so ``y`` is needed).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels among ``classes_``.

        Returns
        -------
        ndarray of shape (n_samples,), int
            Ids in ``range(n_groups_)``; ``group_names_[id]`` is (class, index).
        """
        X, y_enc = self._check_predict_data(X, y)
        cls, within = self._predict(X, y_enc)
        return self._ids(cls, within)

    def fit_predict(self, X, y):
        """``fit(X, y)`` and the groups of those rows (``labels_``)."""
        return self.fit(X, y).labels_.copy()

    def _fit(self, X, y_enc):  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X, y_enc):  # pragma: no cover - abstract
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags


def group_recovery(group_labels, inferred, y):
    """How well inferred groups recover the true ones: adjusted Rand indices (ARI).

    Group ids cross the class with an attribute, so the ARI of the groups is
    high even for an inferrer that recovers nothing but the class (on
    Sagawa et al.'s synthetic task with 10 % minorities, the class alone
    scores 0.80). Three numbers therefore:

    * ``'ari'``: ARI of the inferred against the true groups over all rows;
    * ``'ari_class_only'``: the same for the class alone (the floor that
      ``'ari'`` has to beat);
    * ``'ari_within_class'``: the mean over classes of the ARI within the
      class's rows: how well the attribute is recovered (0: not at all,
      1: exactly).

    Parameters
    ----------
    group_labels : array-like of shape (n_samples,)
        True group ids (1-D).
    inferred : array-like of shape (n_samples,)
        Inferred group ids.
    y : array-like of shape (n_samples,)
        Classes.

    Returns
    -------
    dict
    """
    from sklearn.metrics import adjusted_rand_score

    g, h, y = np.asarray(group_labels), np.asarray(inferred), np.asarray(y)
    if not (g.shape == h.shape == y.shape) or g.ndim != 1:
        raise ValueError(f"group_labels, inferred and y must be 1-D arrays of one length; got shapes "
                         f"{g.shape}, {h.shape}, {y.shape}.")
    within = [adjusted_rand_score(g[y == c], h[y == c]) for c in np.unique(y)]
    return {"ari": float(adjusted_rand_score(g, h)), "ari_class_only": float(adjusted_rand_score(g, y)),
            "ari_within_class": float(np.mean(within))}
