"""Class balancing around any classifier: subsets, class-balanced draws or weights (LaBonte et al., 2024)."""

import math
from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..estimators import MethodSpec, register_method
from ..estimators._mixture import class_balanced_subset
from ._base import SingleModelMetaClassifier
from ._rows import balanced_draws, quick_estimator

__all__ = ["ClassBalancedMetaClassifier"]


class ClassBalancedMetaClassifier(SingleModelMetaClassifier):
    """Class balancing around any classifier (LaBonte et al., 2024).

    T. LaBonte, J. C. Hill, X. Zhang, V. Muthukumar, A. Kumar, "The Group
    Robustness is in the Details: Revisiting Finetuning under Spurious
    Correlations", NeurIPS 2024: class balancing alone recovers much of the
    worst-group accuracy, and how the classes are balanced matters. With
    classes c of sizes n_c, n_min = min n_c, n_max = max n_c, the base
    estimator is fitted once on:

    * ``'subsetting'``: every class cut to n_min rows, drawn without
      replacement (Idrissi et al. (2022)'s SUBY);
    * ``'upsampling'``: n draws with replacement, each picking a class
      uniformly and then a row in it: one epoch of the paper's class-balanced
      sampler;
    * ``'upweighting'``: all rows, ``sample_weight`` n_max / n_c (the
      paper's loss weights; ``class_weight_``);
    * ``'mixture'`` (the paper's proposal): the classes cut to at most
      ``floor(mixture_ratio * n_min)`` rows, then as many class-balanced
      draws with replacement as the subset has rows.

    Only 'upweighting' needs ``sample_weight``; the others refit on rows
    taken with :func:`sklearn.utils._safe_indexing` (pandas stays pandas),
    so they wrap any classifier. Group labels are not used in training.

    Differences from the paper: it fine-tunes networks with SGD over many
    epochs of the sampler; a batch learner gets one epoch's draws (n rows,
    or the subset's size for 'mixture'), a sample of the same expected
    objective. The mixture cap is ``floor(mixture_ratio * n_min)`` as in
    :class:`~skgroup.MixtureBalancedClassifier`.

    Parameters
    ----------
    estimator : classifier
    balancing : {'subsetting', 'upsampling', 'upweighting', 'mixture'}, default='mixture'
    mixture_ratio : float >= 1, default=2.0
        Largest class ratio (to the smallest class) 'mixture' keeps before
        upsampling; the paper's first ratio on CelebA and Waterbirds.
    random_state : int, RandomState or None, default=None
        Seeds the subsets and draws, and every sub-estimator whose own
        ``random_state`` is None.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimator_ : classifier
        The fitted base estimator.
    sample_indices_ : ndarray of int
        Training rows the estimator was fitted on (sorted, repeats for
        draws with replacement); all rows for 'upweighting'.
    class_counts_ : ndarray of shape (n_classes,)
        Training rows per class.
    class_weight_ : ndarray of shape (n_classes,)
        Weight of each class's rows: n_max / n_c for 'upweighting', ones
        otherwise.
    n_features_in_, feature_names_in_ :
        As the base estimator's.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.meta import ClassBalancedMetaClassifier
    >>> X, y, g = make_spurious_features(600, random_state=0)
    >>> rows = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:50]]
    >>> clf = ClassBalancedMetaClassifier(RandomForestClassifier(n_estimators=20), balancing="subsetting",
    ...                                   random_state=0).fit(X[rows], y[rows])
    >>> np.bincount(y[rows][clf.sample_indices_]).tolist()
    [50, 50]
    """

    _parameter_constraints = {
        **SingleModelMetaClassifier._parameter_constraints,
        "balancing": [StrOptions({"subsetting", "upsampling", "upweighting", "mixture"})],
        "mixture_ratio": [Interval(Real, 1, None, closed="left")],
    }

    def __init__(self, estimator, *, balancing="mixture", mixture_ratio=2.0, random_state=None):
        self.estimator = estimator
        self.balancing = balancing
        self.mixture_ratio = mixture_ratio
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, group_labels=None, **fit_params):
        """Balance the classes as ``balancing`` says and fit the base estimator.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Not used (class balancing needs no group labels).
        **fit_params : dict
            Passed to the estimator's ``fit`` (per-row arrays are subset with
            the rows); with metadata routing on, what it requests.

        Returns
        -------
        self
        """
        if self.balancing == "upweighting":
            self._check_weighted(self.estimator, "balancing='upweighting' weights the classes through sample_weight")
        X, y, y_enc = self._check_fit_data(X, y)
        routed = self._route_fit({"group_labels": group_labels}, fit_params)["estimator"]
        rng = self._rng()
        draws = np.random.default_rng(self._draw_seed(rng))
        seed = self._draw_seed(rng)
        counts = np.bincount(y_enc, minlength=len(self.classes_))
        self.class_counts_ = counts
        self.class_weight_ = np.ones(len(self.classes_))
        n = y_enc.shape[0]
        if self.balancing == "upweighting":
            self.class_weight_ = counts.max() / counts
            self.sample_indices_ = np.arange(n)
            self.estimator_ = self._fit_one(self.estimator, X, y, routed, sample_weight=self.class_weight_[y_enc],
                                            seed=seed)
            return self
        if self.balancing == "subsetting":
            rows = class_balanced_subset(y_enc, counts.min(), draws)
        elif self.balancing == "upsampling":
            rows = balanced_draws(y_enc, n, draws)
        else:
            cap = max(int(math.floor(self.mixture_ratio * counts.min() + 1e-9)), 1)
            kept = class_balanced_subset(y_enc, cap, draws)
            rows = balanced_draws(y_enc, kept.shape[0], draws, subset=kept)
        self.sample_indices_ = rows
        self.estimator_ = self._fit_one(self.estimator, X, y, routed, rows=rows, seed=seed)
        return self


def _class_space(data):
    # the four schemes of LaBonte et al. (2024) with their mixture at its first ratio (2)
    return [{"balancing": ["subsetting", "upsampling", "upweighting"]}, {"balancing": ["mixture"],
                                                                          "mixture_ratio": [2.0]}]


register_method(MethodSpec(
    ClassBalancedMetaClassifier,
    search_space=_class_space,
    fast_params={"estimator": quick_estimator()},
    check_params={"estimator": quick_estimator()},
    wraps_estimator=True,
    finetune=False,
))
