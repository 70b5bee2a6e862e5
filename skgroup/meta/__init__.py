"""Group-robust training of any scikit-learn classifier: meta-estimators around ``estimator=``.

Several of skgroup's methods need nothing from the model but
``fit(X, y, sample_weight=...)`` and ``predict``: JTT (fit, collect the
errors, refit with them upweighted), class and group balancing (weights or
resampled rows), and Group DRO and CVaR DRO in their reductions form (a game
between weights over groups or rows and weighted refits, after Agarwal et
al., 2018). Each is a meta-estimator here, following scikit-learn's
conventions (``estimator=``, ``estimator_``, ``clone``, ``n_jobs``,
``get_metadata_routing``) and registering a :class:`~skgroup.estimators.MethodSpec`
whose search space covers the method's knobs (the base estimator is the
user's). See ``docs/wrappers.rst``.
"""

from sklearn.base import clone

from ._base import BaseMetaClassifier, SingleModelMetaClassifier, weight_keyword
from ._jtt import JTTMetaClassifier
from ._class_balanced import ClassBalancedMetaClassifier
from ._group_balanced import GroupBalancedMetaClassifier
from ._reductions import BaseReductionClassifier, capped_simplex_projection, cvar
from ._group_dro import GroupDROMetaClassifier
from ._cvar import CVaRMetaClassifier

__all__ = [
    "BaseMetaClassifier",
    "BaseReductionClassifier",
    "CVaRMetaClassifier",
    "ClassBalancedMetaClassifier",
    "GroupBalancedMetaClassifier",
    "GroupDROMetaClassifier",
    "JTTMetaClassifier",
    "SingleModelMetaClassifier",
    "WRAPPERS",
    "capped_simplex_projection",
    "cvar",
    "weight_keyword",
    "wrapped_candidates",
]

#: The meta-estimators, in the order of the tables.
WRAPPERS = (JTTMetaClassifier, ClassBalancedMetaClassifier, GroupBalancedMetaClassifier, GroupDROMetaClassifier,
            CVaRMetaClassifier)


def wrapped_candidates(estimator, *, with_group_labels=True, include_estimator=True):
    """``estimator`` and every meta-estimator around it: candidates for :class:`~skgroup.model_selection.RobustSearchCV`.

    ``RobustSearchCV('auto')`` searches skgroup's heads only, because a
    meta-estimator needs a classifier to wrap and only the user knows which;
    this names it once::

        RobustSearchCV(wrapped_candidates(HistGradientBoostingClassifier()), "worst_group")

    searches the plain estimator (as it is) and each method around it over
    the method's registered space.

    Parameters
    ----------
    estimator : classifier
    with_group_labels : bool, default=True
        Include the methods that are only themselves with training group
        labels (group balancing); as ``RobustSearchCV('auto')`` does when
        ``fit`` gets ``group_labels``.
    include_estimator : bool, default=True
        Include the unwrapped estimator (the baseline).

    Returns
    -------
    list of estimators
    """
    from ..estimators import get_spec

    out = [clone(estimator)] if include_estimator else []
    for cls in WRAPPERS:
        if with_group_labels or not get_spec(cls.__name__).trains_on_group_labels:
            out.append(cls(clone(estimator)))
    return out
