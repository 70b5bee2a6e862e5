"""Group balancing around any classifier: group weights, balanced draws or subsets (Idrissi et al., 2022)."""

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions

from ..estimators import MethodSpec, register_method
from ..estimators._mixture import class_balanced_subset
from ._base import SingleModelMetaClassifier
from ._rows import balanced_draws, balanced_weights, quick_estimator

__all__ = ["GroupBalancedMetaClassifier"]


class GroupBalancedMetaClassifier(SingleModelMetaClassifier):
    """Group balancing around any classifier (Idrissi et al., 2022; SubpopBench).

    B. Y. Idrissi, M. Arjovsky, M. Pezeshki, D. Lopez-Paz, "Simple data
    balancing achieves competitive worst-group-accuracy", CLeaR 2022: with
    training group labels, re-weighting or sub-sampling the groups to equal
    size rivals Group DRO. With groups g of sizes n_g (G groups, n rows),
    the base estimator is fitted once on:

    * ``'reweight'``: all rows, ``sample_weight`` proportional to
      :math:`1 / n_g` (Idrissi et al.'s RWG; every group weighs n / G);
    * ``'sqrt_reweight'``: proportional to :math:`1 / \\sqrt{n_g}`
      (SubpopBench's SqrtReWeight, between ERM and 'reweight');
    * ``'resample'``: n draws with replacement, a group uniformly and then a
      row in it (one epoch of Group DRO's ``--reweight_groups`` sampler);
    * ``'subsample'``: every group cut to the smallest group's size, without
      replacement (Idrissi et al.'s SUBG).

    The weights are scaled to sum to n (the weighted data has the size of
    the data), so a base estimator's regularisation keeps its meaning.
    'resample' and 'subsample' refit on rows and wrap any classifier.

    Group labels are routed to ``fit`` by default (metadata routing requests
    ``group_labels``); without them each class is a group (class balancing).
    Groups must be disjoint (1-D ids, or a membership matrix with one group
    per row).

    Parameters
    ----------
    estimator : classifier
    balancing : {'reweight', 'sqrt_reweight', 'resample', 'subsample'}, default='reweight'
    random_state : int, RandomState or None, default=None
        Seeds the draws and every sub-estimator whose own ``random_state``
        is None.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimator_ : classifier
        The fitted base estimator.
    group_names_ : tuple
        The groups (sorted ids, membership columns, or the classes).
    group_counts_ : ndarray of shape (n_groups,)
        Training rows per group.
    sample_weight_ : ndarray of shape (n_samples,) or None
        The weights of 'reweight' and 'sqrt_reweight'.
    sample_indices_ : ndarray of int
        Rows the estimator was fitted on (all rows for the weightings).
    n_features_in_, feature_names_in_ :
        As the base estimator's.

    Examples
    --------
    >>> from sklearn.ensemble import HistGradientBoostingClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.meta import GroupBalancedMetaClassifier
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = GroupBalancedMetaClassifier(HistGradientBoostingClassifier(max_iter=20),
    ...                                   random_state=0).fit(X, y, group_labels=g)
    >>> clf.group_counts_.sum()
    np.int64(1000)
    """

    __metadata_request__fit = {"group_labels": True}

    _parameter_constraints = {
        **SingleModelMetaClassifier._parameter_constraints,
        "balancing": [StrOptions({"reweight", "sqrt_reweight", "resample", "subsample"})],
    }

    def __init__(self, estimator, *, balancing="reweight", random_state=None):
        self.estimator = estimator
        self.balancing = balancing
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, group_labels=None, **fit_params):
        """Balance the groups as ``balancing`` says and fit the base estimator.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,) or (n_samples, n_groups), default=None
            One group id per row, or a boolean membership matrix with one
            group per row. None: the classes are the groups.
        **fit_params : dict
            Passed to the estimator's ``fit``; with metadata routing on, what
            it requests.

        Returns
        -------
        self
        """
        weighted = self.balancing in ("reweight", "sqrt_reweight")
        if weighted:
            self._check_weighted(self.estimator, f"balancing={self.balancing!r} weights the groups through "
                                                 "sample_weight")
        X, y, y_enc = self._check_fit_data(X, y)
        routed = self._route_fit({"group_labels": group_labels}, fit_params)["estimator"]
        membership = self._membership(group_labels, y_enc)
        per_row = membership.matrix.sum(axis=1)
        if np.any(per_row != 1):
            raise ValueError(
                f"balancing={self.balancing!r} balances disjoint groups, but some rows of group_labels belong to "
                f"{'several groups' if per_row.max() > 1 else 'no group'}: pass 1-D group ids."
            )
        present = membership.counts > 0
        ids = np.cumsum(present)[membership.ids()] - 1  # groups of a membership matrix may be empty
        self.group_names_ = tuple(np.asarray(membership.names, dtype=object)[present].tolist())
        self.group_counts_ = membership.counts[present]
        rng = self._rng()
        draws = np.random.default_rng(self._draw_seed(rng))
        seed = self._draw_seed(rng)
        n = y_enc.shape[0]
        self.sample_weight_ = None
        if weighted:
            self.sample_weight_ = balanced_weights(ids, 1.0 if self.balancing == "reweight" else 0.5)
            self.sample_indices_ = np.arange(n)
            self.estimator_ = self._fit_one(self.estimator, X, y, routed, sample_weight=self.sample_weight_,
                                            seed=seed)
            return self
        if self.balancing == "resample":
            rows = balanced_draws(ids, n, draws)
        else:
            rows = class_balanced_subset(ids, self.group_counts_.min(), draws)
        self.sample_indices_ = rows
        self.estimator_ = self._fit_one(self.estimator, X, y, routed, rows=rows, seed=seed)
        return self


def _group_space(data):
    # Idrissi et al. (2022)'s group reweighting and subsampling, SubpopBench's square-root
    # reweighting and Group DRO's balanced resampling
    return {"balancing": ["reweight", "sqrt_reweight", "resample", "subsample"]}


register_method(MethodSpec(
    GroupBalancedMetaClassifier,
    search_space=_group_space,
    fast_params={"estimator": quick_estimator()},
    check_params={"estimator": quick_estimator()},
    trains_on_group_labels=True,
    wraps_estimator=True,
    finetune=False,
))
