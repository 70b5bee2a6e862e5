"""Train any method that uses group labels on inferred groups: ``InferredGroupsClassifier``."""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.metrics import adjusted_rand_score
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._cache import SHARED_FITS, canonical, fingerprint
from .._groups import check_group_labels
from ..engine._fit import resolve_seed
from ..utils._signature import fit_takes as _takes
from ..estimators import DFRClassifier, GroupBalancedClassifier, GroupDROClassifier, MethodSpec, register_method
from ..estimators import scaled_epochs
from ._cluster import ClusterInferrer

__all__ = ["InferredGroupsClassifier", "default_inferrer", "infer_groups"]


def _is_seed(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _with_seed(inferrer, random_state):
    inferrer = clone(inferrer)
    if "random_state" in inferrer.get_params(deep=False) and inferrer.get_params(deep=False)["random_state"] is None:
        if _is_seed(random_state):
            inferrer.set_params(random_state=int(random_state))
    return inferrer


def infer_groups(inferrer, X, y, X_val=None, y_val=None, *, random_state=None):
    """Fit a clone of ``inferrer`` on (X, y); return it with the groups of X and of X_val (or None).

    Shared per process (see :mod:`skgroup._cache`): with a fixed seed (the
    inferrer's, or ``random_state`` when the inferrer's is None) a second
    call on the same rows and settings returns a copy of the first one's
    result, so the candidates of a search that wrap the same inferrer infer
    the groups once.
    """
    inferrer = _with_seed(inferrer, random_state)
    seed = inferrer.get_params(deep=False).get("random_state")
    key = SHARED_FITS.key("group_inference", fingerprint(X, y), canonical(inferrer)) if _is_seed(seed) else None
    cached = SHARED_FITS.get(key)
    if cached is None:
        fitted = inferrer.fit(X, y)
        cached = (fitted, fitted.labels_.copy())
        SHARED_FITS.put(key, cached)
    fitted, labels = cached
    labels_val = None
    if X_val is not None:
        vkey = None if key is None else SHARED_FITS.key("group_inference_val", key[1], fingerprint(X_val, y_val))
        labels_val = SHARED_FITS.get_or_fit(vkey, lambda: fitted.predict(X_val, y_val)) if vkey else \
            fitted.predict(X_val, y_val)
    return fitted, labels, labels_val


def _trains_on_group_labels(estimator):
    """Whether ``estimator``'s fit requests ``group_labels`` (the methods that train on them do)."""
    if not _takes(estimator, "group_labels"):
        return False
    try:
        return "group_labels" in estimator.get_metadata_routing().consumes("fit", ["group_labels"])
    except (AttributeError, TypeError, ValueError):
        return False


def _default_estimator():
    return GroupDROClassifier()


def default_inferrer():
    """The inferrer used when none is given: per-class k-means of the standardised features, k by
    silhouette (GEORGE on a frozen backbone), the best recovery of planted groups measured here
    (``python benchmarks/groups.py --section recovery``, docs/groups.rst)."""
    return ClusterInferrer("features")


def _estimator_has(attr):
    def check(self):
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        return hasattr(self.estimator if self.estimator is not None else _default_estimator(), attr)

    return check


class InferredGroupsClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A method that trains on group labels, trained on groups inferred from the data alone.

    Group DRO, group balancing, DFR, DPE (and any estimator whose ``fit``
    takes ``group_labels``) learn from group labels that users rarely have.
    This meta-estimator infers them: ``inferrer`` (a
    :mod:`skgroup.groups` inferrer, fitted on the training rows) names the
    group of every training row, and ``estimator`` is trained with those
    groups as its ``group_labels``. SPARE's importance weights go to an
    estimator that trains on ``sample_weight`` instead (ERM under SPARE's
    sampling).

    Validation rows (``X_val, y_val``) are handed on for the estimator's
    epoch selection (or, for DFR and DPE, as the rows they train on). Their
    groups are the user's ``group_labels_val`` when given (for selection
    only), else inferred by the same fitted inferrer; a method that *trains*
    on the validation rows (DFR, DPE) always gets the inferred ones, so no
    true group label is ever trained on. True training ``group_labels``
    are never used in training: when passed (directly, or routed with
    ``set_fit_request(group_labels=True)``) they only score the inference,
    ``group_recovery_``. Inferred labels never leave the estimator: scorers
    of a search get the routed true labels, never these.

    The inference depends on the data and the inferrer, not on the wrapped
    method's settings, so with a fixed seed it runs once per data in a
    process (:func:`infer_groups`), and
    :class:`~skgroup.model_selection.RobustSearchCV` fits one candidate per
    distinct inference first and ships it to the others
    (``_shared_fit_signature``).

    Parameters
    ----------
    estimator : classifier or None, default=None
        The method (cloned); None: :class:`~skgroup.GroupDROClassifier`.
    inferrer : group inferrer or None, default=None
        A :mod:`skgroup.groups` inferrer (cloned); None:
        ``ClusterInferrer('features')`` (:func:`default_inferrer`).
    random_state : int, RandomState or None, default=None
        Seeds the inferrer and the estimator where their own
        ``random_state`` is None.

    Attributes
    ----------
    estimator_ : fitted classifier
    inferrer_ : fitted inferrer
    group_labels_ : ndarray of shape (n_samples,)
        The inferred groups of the training rows.
    group_labels_val_ : ndarray or None
        The inferred groups of the validation rows (when X_val was given).
    group_recovery_ : float or None
        Adjusted Rand index between the true ``group_labels`` (when passed)
        and the inferred ones (1: the same partition; about 0: unrelated).
    classes_ : ndarray
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.groups import ClusterInferrer, InferredGroupsClassifier
    >>> from skgroup import GroupDROClassifier
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = InferredGroupsClassifier(GroupDROClassifier(max_iter=3), ClusterInferrer("logits"),
    ...                                random_state=0).fit(X, y)
    >>> clf.inferrer_.n_groups_
    4
    """

    # true training group labels are for scoring the inference only: not routed unless asked
    __metadata_request__fit = {"group_labels": False, "X_val": True, "y_val": True, "group_labels_val": True}

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "inferrer": [HasMethods(["fit", "predict", "fit_predict"]), None],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator=None, inferrer=None, *, random_state=None):
        self.estimator = estimator
        self.inferrer = inferrer
        self.random_state = random_state

    @property
    def _fits_on_validation(self):
        est = self.estimator if self.estimator is not None else _default_estimator()
        return bool(getattr(est, "_fits_on_validation", False))

    def _inferrer(self):
        return self.inferrer if self.inferrer is not None else default_inferrer()

    def _seed(self):
        """One integer for the inferrer and the estimator (drawn once when random_state is not an int)."""
        return int(self.random_state) if _is_seed(self.random_state) else resolve_seed(self.random_state)

    def _shared_fit_signature(self):
        """What the inference depends on besides the data: candidates agreeing on it share one inference."""
        return canonical((_with_seed(self._inferrer(), self.random_state), self.random_state))

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None):
        """Infer the groups of the training (and validation) rows, then fit the estimator on them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,), default=None
            True groups, never trained on: only ``group_recovery_`` reads them.
        X_val, y_val : validation rows, default=None
            Handed on to the estimator (epoch selection, or DFR's / DPE's
            training rows).
        group_labels_val : array-like, default=None
            True groups of the validation rows, for the estimator's epoch
            selection; inferred when None (and always for DFR / DPE, which
            train on them).
        """
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val (validation features and labels), or neither.")
        if group_labels_val is not None and X_val is None:
            raise ValueError("group_labels_val was given without X_val and y_val: pass all three.")
        if X_val is not None:
            X_val = validate_data(self, X_val, dtype=X.dtype, reset=False)
            y_val = np.asarray(y_val)
            if y_val.shape[0] != X_val.shape[0]:
                raise ValueError(f"X_val has {X_val.shape[0]} rows but y_val has {y_val.shape[0]}.")
        seed = self._seed()
        estimator = clone(self.estimator if self.estimator is not None else _default_estimator())
        params = estimator.get_params(deep=False)
        if "random_state" in params and params["random_state"] is None:
            estimator.set_params(random_state=seed)
        trains_on_groups = _trains_on_group_labels(estimator)
        self.inferrer_, self.group_labels_, self.group_labels_val_ = infer_groups(
            self._inferrer(), X, y, X_val, y_val, random_state=seed)
        fit_params = {}
        if trains_on_groups:
            fit_params["group_labels"] = self.group_labels_
        elif hasattr(self.inferrer_, "sample_weight_") and _takes(estimator, "sample_weight"):
            fit_params["sample_weight"] = self.inferrer_.sample_weight_
        else:
            raise ValueError(
                f"estimator={type(estimator).__name__} neither trains on group_labels (its fit does not request "
                f"them) nor takes sample weights from the inferrer ({type(self.inferrer_).__name__} gives none), so "
                "the inferred groups would change nothing. Wrap a method that trains on groups "
                "(GroupDROClassifier, GroupBalancedClassifier, DFRClassifier, DPEClassifier), or use the SPARE "
                "inferrer's weights with ERMClassifier."
            )
        if X_val is not None and _takes(estimator, "X_val"):
            fit_params.update(X_val=X_val, y_val=y_val)
            if _takes(estimator, "group_labels_val"):
                uses_as_training = bool(getattr(estimator, "_fits_on_validation", False))
                fit_params["group_labels_val"] = (self.group_labels_val_ if uses_as_training or group_labels_val is None
                                                  else group_labels_val)
        self.estimator_ = estimator.fit(X, y, **fit_params)
        self.classes_ = self.estimator_.classes_
        self.group_recovery_ = None
        if group_labels is not None:
            membership = check_group_labels(group_labels, X.shape[0])
            if membership.disjoint:
                self.group_recovery_ = float(adjusted_rand_score(membership.ids(), self.group_labels_))
        return self

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        return tags


def _search_space(data):
    # The group-label methods of the registry on inferred groups, each at a reduced grid
    # (the inference is shared, the methods are not): Group DRO over the paper's strong and
    # weak L2 at DomainBed's upper eta (Sagawa et al., 2020); group reweighting (SubpopBench's
    # ReWeight) at the library's L2; DFR tuning its own C (Kirichenko et al., 2023). Group DRO at
    # its default 5 CelebA epochs: the 15 of GroupDROClassifier's own space were measured with
    # group labels, not on inferred groups.
    epochs = scaled_epochs(5, data)
    return [
        {"estimator": [GroupDROClassifier(max_iter=epochs)], "estimator__eta": [0.1],
         "estimator__l2_reg": [1e-3, 0.1]},
        {"estimator": [GroupBalancedClassifier()], "estimator__balancing": ["reweight"]},
        {"estimator": [DFRClassifier()]},
    ]


register_method(MethodSpec(
    InferredGroupsClassifier,
    search_space=_search_space,
    # DFR: it trains on the validation rows, so the checks see X_val change the model whatever the data
    fast_params={"estimator": DFRClassifier(n_retrains=3)},
    check_params={"estimator": GroupBalancedClassifier(dtype="float64", tol=1e-10, max_iter=500)},
    benchmark_grid=[
        {"estimator": [GroupDROClassifier()], "estimator__eta": [0.01, 0.1], "estimator__l2_reg": [1e-3, 0.1]},
        {"estimator": [GroupBalancedClassifier()], "estimator__balancing": ["reweight", "sqrt_reweight"]},
    ],
    quick_grid={"estimator": [GroupBalancedClassifier(max_iter=50)]},
    # inferred groups are the method's own: it needs no group labels
    trains_on_group_labels=False,
    finetune=False,
))
