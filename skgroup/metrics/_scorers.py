"""Scorers that read group labels through scikit-learn's metadata routing.

``GridSearchCV(est, grid, scoring=worst_group_scorer).fit(X, y, group_labels=g)``
must score each validation fold on *that fold's* slice of ``g``. scikit-learn
slices per-sample metadata for a consumer only through metadata routing
(``sklearn.set_config(enable_metadata_routing=True)``), so the scorers here
request ``group_labels`` (or ``y_pred_biased``) for ``score``.

The keyword is ``group_labels`` and never ``groups``: ``GroupKFold`` and
friends consume ``groups``, and sharing the name would silently make each
validation fold one group.

With routing off, scikit-learn calls the scorer with no metadata at all. A
plain exception there would be caught by the search and turned into an
``error_score`` of NaN (with only a warning), and the search would then pick
its "best" parameters among NaNs. So the error raised here,
:class:`MetadataRoutingRequired`, deliberately derives from ``BaseException``
like ``KeyboardInterrupt``: it is a configuration error that must stop the
search, not a failed fit.
"""

import sklearn
from sklearn.metrics import make_scorer
from sklearn.metrics._scorer import _Scorer

from ._metrics import bias_unsupervised_score, class_difference, worst_class_accuracy, worst_group_accuracy

__all__ = [
    "MetadataRoutingRequired",
    "make_group_scorer",
    "worst_group_scorer",
    "worst_class_scorer",
    "bias_unsupervised_scorer",
    "class_diff_scorer",
]


class MetadataRoutingRequired(BaseException):
    """A scorer needs per-sample metadata that it was not given.

    Derives from BaseException so that scikit-learn's searches, which catch
    ``Exception`` from scorers and record NaN, stop instead.
    """


class _MetadataScorer(_Scorer):
    """A ``_Scorer`` that refuses to score without its required metadata."""

    def __init__(self, score_func, sign, kwargs, response_method, required):
        super().__init__(score_func, sign, kwargs, response_method)
        self._required = tuple(required)

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        missing = [k for k in self._required if kwargs.get(k) is None]
        if missing:
            name = missing[0]
            if not sklearn.get_config().get("enable_metadata_routing", False):
                raise MetadataRoutingRequired(
                    f"{self._score_func.__name__} scorer needs `{name}` for each scored "
                    "sample, and scikit-learn only passes per-sample metadata to scorers "
                    "with metadata routing on: call "
                    "`sklearn.set_config(enable_metadata_routing=True)` and pass "
                    f"`{name}=...` to fit (e.g. GridSearchCV(...).fit(X, y, {name}=g))."
                )
            raise MetadataRoutingRequired(
                f"{self._score_func.__name__} scorer was called without `{name}`: pass "
                f"`{name}=...` to the search's or cross_validate's fit (or params=), "
                "one entry per sample of X."
            )
        return super()._score(method_caller, estimator, X, y_true, **kwargs)


def make_group_scorer(
    score_func, *, greater_is_better=True, response_method="predict", requires=("group_labels",), **kwargs
):
    """Make a scorer that requests the per-sample metadata named in ``requires``.

    Like :func:`sklearn.metrics.make_scorer`, plus: the metadata is requested
    for ``score`` by default, and a call without it raises
    :class:`MetadataRoutingRequired` with the fix instead of scoring NaN.

    Examples
    --------
    >>> from skgroup.metrics import make_group_scorer, per_group_accuracy
    >>> def second_worst(y, p, *, group_labels):
    ...     return sorted(per_group_accuracy(y, p, group_labels=group_labels)[1])[1]
    >>> scorer = make_group_scorer(second_worst)
    """
    scorer = _MetadataScorer(
        score_func, 1 if greater_is_better else -1, kwargs, response_method, requires
    )
    # set_*_request refuses to run with routing off; the request itself is
    # harmless then, so set it in a routing-on context.
    with sklearn.config_context(enable_metadata_routing=True):
        return scorer.set_score_request(**{name: True for name in requires})


worst_group_scorer = make_group_scorer(worst_group_accuracy)
worst_group_scorer.__doc__ = "Scorer for :func:`worst_group_accuracy` (requests ``group_labels``)."

#: Scorer for :func:`worst_class_accuracy`; needs no metadata.
worst_class_scorer = make_scorer(worst_class_accuracy)

bias_unsupervised_scorer = make_group_scorer(
    bias_unsupervised_score, requires=("y_pred_biased",)
)

#: Scorer for :func:`~skgroup.metrics.class_difference` (BAM's ClassDiff; lower is better, so the
#: scorer returns its negative, as scikit-learn's loss scorers do); needs no metadata.
class_diff_scorer = make_scorer(class_difference, greater_is_better=False)
