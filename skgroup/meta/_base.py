"""What the meta-estimators share: the base estimator's checks, weighted and
resampled fits of it, metadata routing, seeds, labels, groups and validation.

A meta-estimator here trains any scikit-learn classifier through the only
thing every such classifier offers, ``fit(X, y, sample_weight=...)`` (or
through resampled rows, which needs nothing at all). Inputs go to the base
estimator untouched: a pandas DataFrame keeps its dtypes (categorical
columns included) and rows are taken with :func:`sklearn.utils._safe_indexing`,
so ``HistGradientBoostingClassifier(categorical_features='from_dtype')`` sees
its categories. Labels are passed as given (strings stay strings); the
wrapper's own bookkeeping uses their positions in ``classes_``.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    get_routing_for_object,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_method_params,
    _num_samples,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    has_fit_parameter,
    validate_data,
)

from .._groups import check_group_labels
from ..metrics._metrics import accuracy_by_cell, accuracy_by_group

__all__ = ["BaseMetaClassifier", "SingleModelMetaClassifier", "seed_estimator", "weight_keyword"]

#: Validation scores a meta-estimator can select on (larger is better for all).
META_MONITORS = ("worst_group_accuracy", "worst_class_accuracy", "accuracy")


def _pipeline_last(estimator):
    """The last step of a (nested) Pipeline, or the estimator itself."""
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def weight_keyword(estimator):
    """The keyword under which ``estimator.fit`` takes per-row weights, or None when it takes none.

    ``'sample_weight'`` for an estimator whose ``fit`` names it; for a
    ``Pipeline``, ``'<last step>__sample_weight'`` with metadata routing off
    (the Pipeline's own convention), and ``'sample_weight'`` with routing on
    when a step requests it.
    """
    if isinstance(estimator, Pipeline):
        last = _pipeline_last(estimator)
        if last is None or isinstance(last, str):
            return None
        if _routing_enabled():
            consumes = get_routing_for_object(estimator).consumes("fit", ["sample_weight"])
            return "sample_weight" if consumes else None
        if not has_fit_parameter(last, "sample_weight"):
            return None
        names, step = [], estimator
        while isinstance(step, Pipeline):
            names.append(step.steps[-1][0])
            step = step.steps[-1][1]
        return "__".join(names) + "__sample_weight"
    return "sample_weight" if has_fit_parameter(estimator, "sample_weight") else None


def _no_weight_message(owner, estimator, why):
    name = type(estimator).__name__
    if isinstance(estimator, Pipeline) and _routing_enabled() and has_fit_parameter(_pipeline_last(estimator),
                                                                                    "sample_weight"):
        return (
            f"{owner} {why}, and with metadata routing on a Pipeline passes sample_weight only to the steps "
            "that request it: call .set_fit_request(sample_weight=True) on its last step "
            f"({type(_pipeline_last(estimator)).__name__})."
        )
    return (
        f"{owner} {why}, but {name}.fit does not accept sample_weight. Wrap a classifier whose fit takes "
        "sample_weight (HistGradientBoostingClassifier, RandomForestClassifier, LogisticRegression, ...), or a "
        "Pipeline whose last step takes it, e.g. make_pipeline(StandardScaler(), LogisticRegression())."
    )


def _has_base(method):
    """available_if: the (fitted or unfitted) base estimator has ``method``."""

    def check(self):
        fitted = getattr(self, "estimator_", None)
        return hasattr(fitted if fitted is not None else self.estimator, method)

    return check


def seed_estimator(estimator, seed):
    """A clone of ``estimator`` whose unset ``random_state`` parameters (nested ones too) are ``seed``.

    Like the ensembles of scikit-learn, so that a meta-estimator's fits are
    determined by its own ``random_state``; a base estimator's explicit
    ``random_state`` is kept.
    """
    est = clone(estimator)
    params = est.get_params(deep=True)
    unset = {k: int(seed) for k, v in params.items() if (k == "random_state" or k.endswith("__random_state"))
             and v is None}
    if unset:
        est.set_params(**unset)
    return est


class BaseMetaClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Base class of the meta-estimators: a group-robust method around ``estimator``."""

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "random_state": ["random_state"],
    }

    # group labels reach fit through routing only for the methods that train on them
    __metadata_request__fit = {"group_labels": False}

    #: sub-estimator parameters (name -> attribute) that receive the routed fit metadata
    _children = ("estimator",)

    def _child(self, name):
        return getattr(self, name)

    # -- the base estimator ------------------------------------------------
    def _check_weighted(self, estimator, why):
        """The keyword ``estimator.fit`` takes weights under, or a ValueError that names the fix."""
        keyword = weight_keyword(estimator)
        if keyword is None:
            raise ValueError(_no_weight_message(type(self).__name__, estimator, why))
        return keyword

    def _fit_one(self, estimator, X, y, params, *, sample_weight=None, rows=None, seed=None):
        """Fit a seeded clone of ``estimator`` on (X, y), weighted or on ``rows`` (repeats allowed)."""
        est = seed_estimator(estimator, seed) if seed is not None else clone(estimator)
        params = dict(params)
        if rows is not None:
            params = _check_method_params(X, params=params, indices=rows)
            if sp.issparse(X) and X.format not in ("csr", "csc"):
                X = X.tocsr()  # the formats without row indexing (coo, dia, ...)
            try:
                X = _safe_indexing(X, rows)
            except TypeError:  # array-likes that only convert (numpy's __array__ protocol)
                X = _safe_indexing(np.asarray(X), rows)
            y = y[rows]
        if sample_weight is not None:
            params[weight_keyword(est)] = sample_weight
        return est.fit(X, y, **params)

    # -- inputs ----------------------------------------------------------------
    def _check_fit_data(self, X, y):
        """(X untouched, y as an array, y's positions in ``classes_``); sets classes_, n_features_in_."""
        X, y = validate_data(self, X, y, skip_check_array=True, reset=True)
        y = column_or_1d(np.asarray(y), warn=True)
        if y.shape[0] == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={y.shape}) while a minimum of 1 is required by "
                             f"{type(self).__name__}.")
        check_classification_targets(y)
        check_consistent_length(X, y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y, but the data contains only "
                f"one class: {classes[0]!r}."
            )
        self.classes_ = classes
        return X, y, y_enc.ravel()

    def _encode(self, y, name):
        y = column_or_1d(np.asarray(y), warn=True)
        pos = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
        unknown = self.classes_[pos] != y
        if np.any(unknown):
            raise ValueError(
                f"{name} holds labels the model was not fitted on: {np.unique(y[unknown])[:5].tolist()}; its "
                f"classes are {self.classes_.tolist()}."
            )
        return pos

    def _membership(self, group_labels, y_enc, name="group_labels"):
        """The groups of the training rows; the classes when ``group_labels`` is None."""
        if group_labels is None:
            return check_group_labels(self.classes_[y_enc], y_enc.shape[0], name="y")
        return check_group_labels(group_labels, y_enc.shape[0], name=name)

    def _route_fit(self, own, fit_params):
        """Fit metadata for each sub-estimator (``_children``) as {child: params}.

        With routing on, ``process_routing`` decides (the wrapper's own
        metadata in ``own`` reaches a sub-estimator only if it requests it);
        with routing off, ``fit_params`` go to every sub-estimator and
        ``own`` to none. ``sample_weight`` is the method's to set.
        """
        children = [c for c in self._children if self._child(c) is not None]
        if _routing_enabled():
            passed = {}
            for key, value in own.items():
                if value is not None and any(
                    get_routing_for_object(self._child(c)).consumes("fit", [key]) for c in children
                ):
                    passed[key] = value
            routed = process_routing(self, "fit", **passed, **fit_params)
            out = {c: dict(routed[c]["fit"]) for c in children}
        else:
            out = {c: dict(fit_params) for c in children}
        for params in out.values():
            if any(k == "sample_weight" or k.endswith("__sample_weight") for k in params):
                raise ValueError(
                    f"sample_weight was passed to {type(self).__name__}.fit (or routed to its estimator), but the "
                    "method sets the rows' weights itself; fit without sample_weight."
                )
        return out

    def get_metadata_routing(self):
        """The routing of fit metadata: the wrapper's own requests, and ``fit`` of each sub-estimator.

        Returns
        -------
        routing : MetadataRouter
        """
        router = MetadataRouter(owner=self).add_self_request(self)
        for name in self._children:
            child = self._child(name)
            if child is not None:
                router.add(**{name: child}, method_mapping=MethodMapping().add(caller="fit", callee="fit"))
        return router

    def _rng(self):
        return check_random_state(self.random_state)

    @staticmethod
    def _draw_seed(rng):
        return int(rng.randint(np.iinfo(np.int32).max))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        base = get_tags(self.estimator)
        tags.input_tags = base.input_tags
        if base.classifier_tags is not None:
            tags.classifier_tags.multi_class = base.classifier_tags.multi_class
        tags.target_tags.required = True
        return tags


class SingleModelMetaClassifier(BaseMetaClassifier):
    """A meta-estimator whose result is one fitted base estimator, ``estimator_`` (JTT, balancing)."""

    def _check_predict_X(self, X):
        return check_predict_X(self, X)

    def predict(self, X):
        """Predictions of the final model ``estimator_``."""
        X = self._check_predict_X(X)
        return self.estimator_.predict(X)

    @available_if(_has_base("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of ``estimator_``, columns in the order of ``classes_``."""
        X = self._check_predict_X(X)
        return aligned_proba(self.estimator_, X, self.classes_)

    @available_if(_has_base("predict_proba"))
    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    @available_if(_has_base("decision_function"))
    def decision_function(self, X):
        """Decision function of ``estimator_``."""
        X = self._check_predict_X(X)
        return self.estimator_.decision_function(X)


def check_predict_X(estimator, X):
    """Fitted, and X has the features (count and names) of the fit; X itself is not converted."""
    check_is_fitted(estimator)
    if getattr(X, "ndim", 2) == 1:
        raise ValueError(
            "Expected 2D array, got 1D array instead. Reshape your data either using array.reshape(-1, 1) if your "
            "data has a single feature or array.reshape(1, -1) if it contains a single sample."
        )
    validate_data(estimator, X, reset=False, skip_check_array=True)
    return X


def aligned_proba(estimator, X, classes):
    """``estimator.predict_proba(X)`` with one column per entry of ``classes`` (zeros for classes it lacks).

    A model fitted on resampled rows may have seen fewer classes than the data.
    """
    P = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    own = np.asarray(estimator.classes_)
    if own.shape[0] == classes.shape[0] and np.array_equal(own, classes):
        return P
    out = np.zeros((P.shape[0], classes.shape[0]))
    out[:, np.searchsorted(classes, own)] = P
    return out


def one_hot_predictions(estimator, X, classes):
    """``estimator.predict(X)`` as one-hot rows over ``classes`` (a vote)."""
    pred = np.asarray(estimator.predict(X))
    out = np.zeros((pred.shape[0], classes.shape[0]))
    out[np.arange(pred.shape[0]), np.searchsorted(classes, pred)] = 1.0
    return out


class Validation:
    """Validation rows of a fit, encoded, with the score they select on."""

    def __init__(self, owner, X_val, y_val, group_labels_val, monitor):
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val (validation features and labels), or neither.")
        if X_val is None:
            if group_labels_val is not None:
                raise ValueError("group_labels_val was given without X_val and y_val: pass all three.")
            raise ValueError("Validation needs X_val and y_val.")
        validate_data(owner, X_val, reset=False, skip_check_array=True)
        self.X = X_val
        self.y = owner._encode(y_val, "y_val")
        if self.y.shape[0] != _num_samples(X_val):
            raise ValueError(f"X_val has {_num_samples(X_val)} rows but y_val has {self.y.shape[0]}.")
        self.membership = None
        if group_labels_val is not None:
            self.membership = check_group_labels(group_labels_val, self.y.shape[0], name="group_labels_val")
        if monitor == "auto":
            monitor = "worst_group_accuracy" if self.membership is not None else "worst_class_accuracy"
        elif monitor == "worst_group_accuracy" and self.membership is None:
            raise ValueError(
                "monitor='worst_group_accuracy' needs group labels of the validation rows: pass "
                "group_labels_val=..., or monitor='worst_class_accuracy' or 'accuracy', which need none."
            )
        self.monitor = monitor
        self.n_classes = len(owner.classes_)

    def score(self, scores):
        """The monitored score of the predictions ``argmax(scores)`` (rows x classes)."""
        correct = np.argmax(scores, axis=1) == self.y
        if self.monitor == "accuracy":
            return float(correct.mean())
        if self.monitor == "worst_class_accuracy":
            acc, _ = accuracy_by_cell(correct, self.y, self.n_classes)
        else:
            acc, _ = accuracy_by_group(correct, self.membership.matrix)
        return float(np.nanmin(acc))
