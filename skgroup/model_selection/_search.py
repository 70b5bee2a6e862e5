"""RobustSearchCV: choose the method and its settings, with or without group labels.

No method wins everywhere (Group DRO on CelebA attributes, class balancing or
GradTune elsewhere), and JTT and CVaR swing from best to worse than ERM with
their settings, so the method itself is a hyperparameter. A practitioner
rarely has group labels, even on validation. :class:`RobustSearchCV` searches
every candidate (method, settings) on a validation split or CV folds, selects
by a rule that needs no group labels (or by worst-group accuracy when they
exist), and states how sure the choice is: a bootstrap interval for every
candidate's score and, for each, whether it is distinguishable from the
winner.
"""

import time
import warnings
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._cache import SHARED_FITS
from .._groups import check_group_labels
from ..engine._fit import encode_labels
from ..estimators import BelowMajorityWarning, all_estimators, method_specs, search_space
from ..metrics import EmptyCellWarning, below_majority, paired_bootstrap
from ..metrics._report import _neg_class_diff, check_bootstrap, class_diff_interval
from ..groups import default_inferrer, infer_groups  # the import also registers the inferred-group methods
from .. import meta as _meta  # noqa: F401 - registers the meta-estimators' specs, for their names
from ..utils._signature import fit_takes as _takes
from ..utils._tables import make_table
from ..utils._warnings import warn
from ._validation import requests

__all__ = ["RobustSearchCV", "SELECTION_RULES"]

#: Built-in selection rules: the estimators' ``monitor`` that matches each, how the
#: per-cell accuracies are reduced, and whether validation group labels are needed.
SELECTION_RULES = {
    "worst_group": {"monitor": "worst_group_accuracy", "reduce": "min", "group_labels": True},
    "worst_class": {"monitor": "worst_class_accuracy", "reduce": "min", "group_labels": False},
    "bias_unsupervised": {"monitor": "bias_unsupervised", "reduce": "mean", "group_labels": False},
    "class_diff": {"monitor": "class_diff", "reduce": "class_diff", "group_labels": False},
    "inferred_worst_group": {"monitor": "worst_group_accuracy", "reduce": "min", "group_labels": False},
    "accuracy": {"monitor": "accuracy", "reduce": "mean", "group_labels": False},
}

_RESPONSES = ("predict", "predict_proba", "decision_function")


def _estimator_classes():
    return dict(all_estimators())


def _wrapper_classes():
    return {spec.name: spec.estimator for spec in method_specs(wrappers=True)}


def _with_params(estimator, params):
    """A clone of ``estimator`` with ``params``, their values cloned as ``GridSearchCV`` clones them.

    An estimator-valued entry of a grid (InferredGroupsClassifier's method) is one object shared by
    its candidates, which setting its nested parameters (``estimator__eta``) would change for all.
    """
    return clone(estimator).set_params(**{k: clone(v, safe=False) for k, v in params.items()})


def _trains_on_validation(estimator):
    """Whether the candidate's ``X_val`` is data it trains on (GradTune's held-out rows, DFR's and DPE's
    retraining set), so that scoring it on the same rows would be leakage."""
    return bool(getattr(estimator, "_x_val_is_heldout", False) or getattr(estimator, "_fits_on_validation", False))


def _take_rows(labels, rows):
    """Rows of group labels (1-D ids or a membership matrix; a list or an array)."""
    arr = np.asarray(labels)
    return arr[rows]


def _validation_halves(y_score, g_score, seed):
    """Two halves of the validation rows, stratified by class (and group when known), for cross-fitting."""
    from sklearn.model_selection import KFold, StratifiedKFold

    strata = np.asarray(y_score).astype(str)
    if g_score is not None and np.ndim(g_score) == 1:
        strata = np.char.add(np.char.add(strata, "|"), np.asarray(g_score).astype(str))
    _, counts = np.unique(strata, return_counts=True)
    rows = np.zeros((strata.shape[0], 1))
    if counts.min() >= 2:
        folds = StratifiedKFold(2, shuffle=True, random_state=seed).split(rows, strata)
    else:
        folds = KFold(2, shuffle=True, random_state=seed).split(rows)
    return [(np.sort(fit), np.sort(score)) for fit, score in folds]


def _merge_halves(parts, n_rows):
    """One candidate's output over all validation rows from its two cross-fitted halves."""
    out = {"fit_time": sum(p["fit_time"] for p, _ in parts), "error": next((p["error"] for p, _ in parts
                                                                          if p["error"]), None),
           "entries": {}, "estimator": None, "responses": None, "warnings": [], "messages": []}
    seen = set()
    for part, _ in parts:
        out["entries"].update(part["entries"])
        out["warnings"] = sorted(set(out["warnings"]) | set(part["warnings"]))
        for category, message in part["messages"]:
            if category not in seen:
                seen.add(category)
                out["messages"].append((category, message))
    if out["error"] is None:
        out["responses"] = {}
        for method in parts[0][0]["responses"]:
            first = np.asarray(parts[0][0]["responses"][method])
            merged = np.empty((n_rows,) + first.shape[1:], dtype=first.dtype)
            for part, rows in parts:
                merged[rows] = part["responses"][method]
            out["responses"][method] = merged
    return out


def _fit_candidate(estimator, X, y, fit_params, X_score, responses, entries, error_score):
    """Fit one candidate on one split and return what the search scores (runs in a worker).

    ``X_score`` is the rows it predicts: the split's validation rows, or, for a cross-fitted
    candidate, the half of them it did not train on.
    """
    SHARED_FITS.load(entries)
    # a search explores settings that do not suit the data on purpose: what they warn about is
    # recorded per candidate (results_['warnings']) instead of repeated once per candidate
    with SHARED_FITS.recording() as record, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        error = None
        try:
            estimator.fit(X, y, **fit_params)
        except Exception as exc:
            if error_score == "raise":
                raise
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
    names = sorted({w.category.__name__ for w in caught})
    # the first message of each category, to raise again should this candidate be the pick
    messages = {}
    for w in caught:
        messages.setdefault(w.category, str(w.message))
    out = {"fit_time": seconds, "error": error, "entries": dict(record), "estimator": None, "responses": None,
           "warnings": names, "messages": list(messages.items())}
    if error is None:
        out["estimator"] = estimator
        out["responses"] = {}
        for method in responses:
            if hasattr(estimator, method):
                out["responses"][method] = getattr(estimator, method)(X_score)
    return out


class _Replay(ClassifierMixin, BaseEstimator):
    """A fitted classifier replaying stored outputs; ``X`` holds row indices (for custom scorers)."""

    def __init__(self, classes, outputs):
        self.classes = classes
        self.outputs = outputs
        self.classes_ = classes

    def _rows(self, X):
        return np.asarray(X)[:, 0].astype(np.int64)

    def predict(self, X):
        return self.outputs["predict"][self._rows(X)]

    @available_if(lambda self: "predict_proba" in self.outputs)
    def predict_proba(self, X):
        return self.outputs["predict_proba"][self._rows(X)]

    @available_if(lambda self: "decision_function" in self.outputs)
    def decision_function(self, X):
        return self.outputs["decision_function"][self._rows(X)]


def _has_best(self):
    return hasattr(self, "best_estimator_")


class RobustSearchCV(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Search methods and their settings on validation data, with or without group labels.

    Every candidate configuration (an estimator with one setting of its
    grid) is fitted on the training rows and scored on the validation rows
    (``X_val, y_val`` passed to :meth:`fit`) or on cross-validation folds;
    the best by ``selection`` becomes ``best_estimator_``, fitted on the
    training rows only (never on training + validation rows, which would
    leak the validation data the choice was made on). ``results_`` holds
    every candidate's score with a bootstrap interval, its fit time and
    whether it is distinguishable from the winner.

    Parameters
    ----------
    candidates : 'auto' or list, default='auto'
        'auto': every skgroup estimator with the library's search space for
        it (:func:`~skgroup.model_selection.search_space`, scaled to the
        size of the training data); DFR and group balancing only when
        ``fit`` gets training ``group_labels`` (without them they would be
        class-balanced methods under another name), and in every case
        :class:`~skgroup.groups.InferredGroupsClassifier` (Group DRO, group
        reweighting and DFR on groups inferred from the training rows, the
        inference fitted once for all of them) and
        :class:`~skgroup.DPEClassifier` (class-balanced subsets). A list holds any of: ``(estimator,
        param_grid)`` pairs (``param_grid`` a dict or list of dicts, as
        ``GridSearchCV`` takes), estimators (searched over the registered
        space of their class on top of their own parameters, or used as
        they are when none is registered), and estimator class names
        (``'JTTClassifier'``: the registered space). The meta-estimators of
        :mod:`skgroup.meta` are never in 'auto' (they need a classifier to
        wrap): pass them as estimators, ``GroupDROMetaClassifier(clf)``
        (searched over the method's registered knobs), or all of them
        around one classifier with
        :func:`skgroup.meta.wrapped_candidates` (``clf`` itself included).
    include_erm : bool, default=True
        Add :class:`~skgroup.ERMClassifier` over its search space when the
        candidates hold no ERM: the reference a robust method must beat, so
        that a search never returns a method that does worse than ERM on the
        validation score without ERM having been tried. ``False`` searches
        the listed candidates only (e.g. to tune one method for a benchmark).
    selection : str or callable, default='inferred_worst_group'
        How candidates are compared on the validation rows:

        * ``'inferred_worst_group'`` (the default): EVaLS-style (Ghaznavi et
          al., 2024), no group labels: worst accuracy over groups that
          ``group_inferrer`` (fitted on the training rows) infers on the
          validation rows. On the benchmark suite (8 datasets, 3 seeds) its
          picks beat ``'worst_class'``'s in mean test worst-group accuracy
          by 0.10-0.15 on the three CelebA cuts and fall at most 0.04 short
          elsewhere (``docs/benchmarks.rst``). Where the default inferrer
          cannot group the training rows (its silhouette needs 3 rows in
          every class), the search warns and selects by ``'worst_class'``; a
          ``group_inferrer`` passed explicitly raises its own error instead;
        * ``'worst_class'``: worst-class accuracy, no group labels
          (LaBonte et al., 2023);
        * ``'bias_unsupervised'``: LaBonte et al.'s eq. 1, no group labels:
          the search fits its own biased ERM model (no class balancing) on
          the training rows, and its predictions define the cells;
        * ``'class_diff'``: BAM's ClassDiff (Li et al., 2024; SubpopBench's
          ``ValClassDiff``), no group labels: the mean absolute difference of
          the classes' validation recalls over all pairs, smaller is better
          (the score is its negative);
        * ``'accuracy'``: no group labels (Kulkarni et al.'s "No-GP");
        * ``'worst_group'``: worst-group accuracy, needs
          ``group_labels_val`` (or ``group_labels`` with CV folds);
        * any other scikit-learn scorer name or scorer callable; one that
          requests ``group_labels`` or ``y_pred_biased`` gets them.
    group_inferrer : group inferrer or None, default=None
        The :mod:`skgroup.groups` inferrer of ``selection='inferred_worst_group'``
        (fitted on each split's training rows, predicting the groups of its
        validation rows); None: :func:`skgroup.groups.default_inferrer`, the
        one ``InferredGroupsClassifier`` uses, so that its candidates share
        the fit (EVaLS infers environments with EIIL, which recovers planted
        groups worse here: ``docs/groups.rst``).
    cv : int, CV splitter, iterable or None, default=None
        Used when ``fit`` gets no ``X_val``: None means 5 stratified folds.
        Each row must be tested at most once (scores are computed on the
        pooled out-of-fold predictions). For a splitter that needs
        ``groups`` (``GroupKFold``), pass ``list(splitter.split(X, y,
        ids))``. With folds, candidates train without early stopping and
        the winner is refitted on all rows.
    early_stopping : bool, default=True
        Give every candidate that takes validation data the validation
        split (``X_val``) to select its epoch, monitoring the score that
        matches ``selection`` (the papers' checkpoint selection).

        Methods whose ``X_val`` is data they train on (GradTune's held-out
        rows, DFR's and DPE's retraining set) are cross-fitted instead,
        whatever ``early_stopping``: one copy trains with each half of the
        validation rows (stratified by class, and by group when the rule has
        group labels) and predicts the other half, so every validation row
        is scored by a model that never saw it; the pick is then refitted
        with all of them, as its paper trains it. Its score is that of a
        model given half the validation rows, slightly pessimistic.
    confidence_level : float in (0, 1), default=0.95
        Of the intervals in ``results_`` and ``best_score_ci_``: percentile
        intervals of the paired bootstrap; for ``'class_diff'``, whose
        resampled absolute differences sit above a near-zero estimate, the
        pairs' signed differences' intervals mapped through the absolute
        value (:func:`skgroup.metrics.class_diff_interval`).
    n_bootstrap : int, default=1000
        Bootstrap replicates of the validation rows (at least 5 beyond each
        bound of the interval: 200 at ``confidence_level=0.95``, 1,000 at
        0.99), resampled within the
        cells of the rule (groups, classes, (class, biased prediction)
        cells) and shared by all candidates (a paired bootstrap).
    n_jobs : int or None, default=None
        Candidates fitted in parallel by joblib (any backend, e.g. dask).
    error_score : 'raise' or float, default=nan
        Score of a candidate whose fit fails (its error is kept in
        ``results_``); 'raise' stops the search.
    random_state : int, RandomState or None, default=None
        Seeds the bootstrap and, through one integer, every candidate whose
        own ``random_state`` is None (so that candidates sharing work, e.g.
        JTT's identification model, share it).
    verbose : int, default=0

    Attributes
    ----------
    best_estimator_ : estimator
        The winner, fitted on the training rows.
    best_params_ : dict
        Its grid parameters; ``best_estimator_name_`` its class name.
    best_index_ : int
        Its row in ``results_``.
    best_score_ : float
        Its validation score; ``best_score_ci_`` the bootstrap interval.
    n_indistinguishable_ : int
        How many other candidates (that fitted) the paired bootstrap cannot
        tell from the winner: the size of the coin toss the pick was.
    selection_ : str
        The rule used (or the scorer's repr).
    results_ : pandas.DataFrame or dict of arrays
        One row per candidate configuration: ``estimator``, ``params``,
        ``score``, ``ci_low``, ``ci_high`` (bootstrap interval of the
        score), ``diff_ci_low``, ``diff_ci_high`` (paired-bootstrap
        interval of the winner's score minus this one), ``distinguishable``
        (that interval lies above 0: the winner is better beyond the
        bootstrap's doubt), ``rank``, ``accuracy`` (validation accuracy),
        ``below_majority`` (worse than always answering the majority class,
        :func:`skgroup.metrics.below_majority`: never the pick while another
        candidate is not), ``fit_time`` (seconds, summed over folds),
        ``error`` and ``warnings`` (the categories of the warnings the
        candidate's fits raised, e.g. ``BelowERMWarning``: recorded here;
        the pick's own are raised again after the search).
    best_below_majority_ : bool
        Whether the pick is below the majority class (then every candidate
        is, and a :class:`~skgroup.estimators.BelowMajorityWarning` says so).
    shared_fits_ : dict
        Sub-models fitted during the search, by kind (each distinct one
        once, see :mod:`skgroup._cache`).
    n_splits_ : int
    search_time_ : float
        Wall time of the search, seconds.
    classes_ : ndarray
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_benchmark
    >>> from skgroup.model_selection import RobustSearchCV
    >>> from skgroup import ERMClassifier, JTTClassifier
    >>> data = make_spurious_benchmark(600, 300, 300, random_state=0)
    >>> search = RobustSearchCV(
    ...     [(ERMClassifier(), {"l2_reg": [1e-4, 1e-1]}), (JTTClassifier(), {"lambda_up": [5, 20]})],
    ...     selection="worst_class", random_state=0,
    ... ).fit(data.train.X, data.train.y, X_val=data.val.X, y_val=data.val.y)
    >>> len(search.results_["score"])
    4
    """

    _parameter_constraints = {
        "candidates": [StrOptions({"auto"}), list, tuple],
        "selection": [str, callable],
        "include_erm": ["boolean"],
        "group_inferrer": [HasMethods(["fit", "predict"]), None],
        "cv": ["cv_object", None],
        "early_stopping": ["boolean"],
        "confidence_level": [Interval(Real, 0, 1, closed="neither")],
        "n_bootstrap": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "error_score": [StrOptions({"raise"}), Real],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    __metadata_request__fit = {"X_val": True, "y_val": True, "group_labels_val": True, "group_labels": False}

    def __init__(
        self,
        candidates="auto",
        selection="inferred_worst_group",
        *,
        include_erm=True,
        group_inferrer=None,
        cv=None,
        early_stopping=True,
        confidence_level=0.95,
        n_bootstrap=1000,
        n_jobs=None,
        error_score=np.nan,
        random_state=None,
        verbose=0,
    ):
        self.candidates = candidates
        self.selection = selection
        self.include_erm = include_erm
        self.group_inferrer = group_inferrer
        self.cv = cv
        self.early_stopping = early_stopping
        self.confidence_level = confidence_level
        self.n_bootstrap = n_bootstrap
        self.n_jobs = n_jobs
        self.error_score = error_score
        self.random_state = random_state
        self.verbose = verbose

    # -- configuration -------------------------------------------------------
    def _rule(self):
        """(rule name or None, scorer or None)."""
        if isinstance(self.selection, str) and self.selection in SELECTION_RULES:
            return self.selection, None
        try:
            scorer = check_scoring(None, scoring=self.selection)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"selection={self.selection!r} is neither a rule ({sorted(SELECTION_RULES)}) nor a "
                f"scikit-learn scorer: {exc}"
            ) from exc
        return None, scorer

    def _configs(self, n_samples, n_features, n_classes, with_group_labels=True):
        """Candidate configurations: a list of (class name, unfitted estimator, grid params)."""
        classes = _estimator_classes()
        wrappers = _wrapper_classes()
        if isinstance(self.candidates, str):  # 'auto': the heads (a meta-estimator needs a classifier to wrap)
            items = [spec.name for spec in method_specs(with_group_labels=with_group_labels)]
        else:
            items = list(self.candidates)
        if not items:
            raise ValueError("candidates is empty: pass 'auto' or a list of (estimator, param_grid) pairs.")
        configs = []
        for item in items:
            if isinstance(item, str):
                if item in wrappers:
                    raise ValueError(
                        f"candidates names {item!r}, a meta-estimator that wraps a classifier: pass "
                        f"{item}(estimator) (searched over its registered space), or every method around one "
                        "classifier with skgroup.meta.wrapped_candidates(estimator)."
                    )
                if item not in classes:
                    raise ValueError(f"candidates names {item!r}, which is not a skgroup estimator; "
                                     f"choose from {sorted(classes)} or pass an estimator.")
                estimator, grid = classes[item](), search_space(item, n_samples, n_features, n_classes)
            elif isinstance(item, (tuple, list)) and len(item) == 2 and hasattr(item[0], "fit"):
                estimator, grid = item
            elif hasattr(item, "fit"):
                name = type(item).__name__
                estimator = item
                registered = name in classes or name in wrappers
                grid = search_space(name, n_samples, n_features, n_classes) if registered else {}
            else:
                raise ValueError(
                    "Each entry of candidates must be an (estimator, param_grid) pair, an estimator or a "
                    f"skgroup estimator's class name; got {item!r}."
                )
            for params in ParameterGrid(grid if grid else {}):
                configs.append((type(estimator).__name__, estimator, params))
        if self.include_erm and not any(isinstance(est, classes["ERMClassifier"]) for _, est, _ in configs):
            grid = search_space("ERMClassifier", n_samples, n_features, n_classes)
            configs += [("ERMClassifier", classes["ERMClassifier"](), params) for params in ParameterGrid(grid)]
        return configs

    def _prepare(self, estimator, params, seed, monitor, validated):
        est = _with_params(estimator, params)
        own = est.get_params(deep=False)
        if "random_state" in own and own["random_state"] is None and "random_state" not in params:
            est.set_params(random_state=seed)
        if (validated and monitor is not None and own.get("monitor") == "auto" and "monitor" not in params
                and monitor in getattr(est, "_supported_monitors", (monitor,))):
            est.set_params(monitor=monitor)
        return est

    def _val_fit_params(self, est, split, rows, needs_groups, rule):
        """``X_val`` and its labels, restricted to ``rows``, for a candidate that trains on them."""
        fit_params = {"X_val": split["X_score"][rows], "y_val": split["y_score"][rows]}
        if _takes(est, "group_labels_val"):
            if needs_groups and split["g_score"] is not None:
                fit_params["group_labels_val"] = _take_rows(split["g_score"], rows)
            elif rule == "inferred_worst_group" and split.get("g_inferred") is not None:
                fit_params["group_labels_val"] = _take_rows(split["g_inferred"], rows)
        return fit_params

    def _validates(self, estimator):
        """Whether the candidate gets the validation split for its epoch selection."""
        # X_val of GradTune and DFR is data they train on: scoring on it would be leakage
        if (not self.early_stopping or getattr(estimator, "_x_val_is_heldout", False)
                or getattr(estimator, "_fits_on_validation", False)):
            return False
        if not _takes(estimator, "X_val"):
            return False
        return estimator.get_params(deep=False).get("early_stopping", "auto") is not False

    # -- fit -------------------------------------------------------------------
    def fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None):
        """Fit every candidate, score it on the validation rows, keep the best.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows (with ``cv``: all rows, split into folds).
        y : array-like of shape (n_samples,)
        group_labels : array-like, default=None
            Training group labels: reach the candidates that train on them
            (Group DRO; without them it uses the classes as groups), and
            with CV folds score ``selection='worst_group'``. Not needed.
        X_val, y_val : array-like, default=None
            The validation split (the field's protocol; no CV then).
        group_labels_val : array-like, default=None
            Needed by ``selection='worst_group'`` only; the label-free rules
            never look at them.
        """
        self._validate_params()
        check_bootstrap(self.n_bootstrap, self.confidence_level)
        start = time.perf_counter()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.shape[0] < 2:
            raise ValueError(f"y holds one class only ({self.classes_[0]!r}); a classifier needs two.")
        rule, scorer = self._rule()
        self.selection_ = rule if rule is not None else repr(self.selection)
        meta_wanted = set()
        if scorer is not None:
            meta_wanted = requests(scorer, "score", ["group_labels", "y_pred_biased", "sample_weight"])
            if "sample_weight" in meta_wanted:
                raise ValueError("selection requests sample_weight, which RobustSearchCV does not route; "
                                 "use a scorer without it.")
        needs_groups = (rule is not None and SELECTION_RULES[rule]["group_labels"]) or "group_labels" in meta_wanted
        needs_biased = rule == "bias_unsupervised" or "y_pred_biased" in meta_wanted
        splits = self._splits(X, y, group_labels, X_val, y_val, group_labels_val, needs_groups)
        self.n_splits_ = len(splits)

        rng = check_random_state(self.random_state)
        seed = int(self.random_state) if isinstance(self.random_state, Integral) else int(rng.randint(2**31 - 1))
        n_fit = splits[0]["train_size"]
        configs = self._configs(n_fit, X.shape[1], self.classes_.shape[0], group_labels is not None)

        # the biased model of the bias-unsupervised rule is shared with every candidate that
        # monitors it: fitted here once per split, then shipped to the workers
        with SHARED_FITS.recording() as parent_entries:
            for split in splits:
                if needs_biased:
                    from ..estimators._base import biased_erm

                    y_enc = np.unique(split["y"], return_inverse=True)[1]
                    split["biased"] = biased_erm(split["X"], y_enc).predict(split["X_score"])
            if rule == "inferred_worst_group":
                # the groups of the validation rows, inferred from the training rows' fit (EVaLS): the
                # rule's cells and the candidates' monitor; shared with candidates wrapping this inferrer
                inferrer = self.group_inferrer if self.group_inferrer is not None else default_inferrer()
                try:
                    for split in splits:
                        _, _, split["g_inferred"] = infer_groups(inferrer, split["X"], split["y"], split["X_score"],
                                                                 split["y_score"], random_state=seed)
                except ValueError as exc:
                    # the default rule with the default inferrer must not make a search on small data
                    # fail: without inferred groups, the worst group the rule can see is the worst
                    # class. An inferrer the user chose fails as it would alone.
                    if self.group_inferrer is not None:
                        raise
                    for split in splits:
                        split.pop("g_inferred", None)
                    rule = self.selection_ = "worst_class"
                    warn(f"selection='inferred_worst_group': the groups could not be inferred on the training "
                         f"rows ({exc}); the search selects by 'worst_class' instead. Pass more rows, a "
                         f"group_inferrer that suits them, or selection='worst_class'.", UserWarning)
        monitor = SELECTION_RULES[rule]["monitor"] if rule is not None else None
        responses = ("predict",) if scorer is None else _RESPONSES

        tasks = []
        halves = None
        for ci, (name, estimator, params) in enumerate(configs):
            for si, split in enumerate(splits):
                candidate = _with_params(estimator, params)
                if split["validation"] and _trains_on_validation(candidate) and _takes(candidate, "X_val"):
                    # its X_val is training data: cross-fitted on the two halves of the validation rows,
                    # each half predicted by the copy that did not see it
                    if halves is None:
                        halves = _validation_halves(split["y_score"], split["g_score"], seed)
                    for part, (fit_rows, score_rows) in enumerate(halves):
                        est = self._prepare(estimator, params, seed, monitor, False)
                        fit_params = self._val_fit_params(est, split, fit_rows, needs_groups, rule)
                        if split["g"] is not None and "group_labels" in requests(est, "fit", ["group_labels"]):
                            fit_params["group_labels"] = split["g"]
                        tasks.append({"ci": ci, "si": si, "est": est, "fit_params": fit_params, "key": None,
                                      "part": part, "score_rows": score_rows})
                    continue
                validated = split["validation"] and self._validates(candidate)
                est = self._prepare(estimator, params, seed, monitor, validated)
                fit_params = {}
                if split["g"] is not None and "group_labels" in requests(est, "fit", ["group_labels"]):
                    fit_params["group_labels"] = split["g"]
                if validated:
                    fit_params.update(X_val=split["X_score"], y_val=split["y_score"])
                    if needs_groups:
                        fit_params["group_labels_val"] = split["g_score"]
                    elif rule == "inferred_worst_group" and _takes(est, "group_labels_val"):
                        fit_params["group_labels_val"] = split["g_inferred"]
                signature = getattr(est, "_shared_fit_signature", lambda: None)()
                key = None if signature is None else (name, signature, si)
                tasks.append({"ci": ci, "si": si, "est": est, "fit_params": fit_params, "key": key})

        # phase 1: one candidate per distinct shared sub-model (JTT's identification model,
        # GradTune's base model) and split; phase 2: the rest, with those sub-models shipped
        seen, first, rest = set(), [], []
        for task in tasks:
            if task["key"] is not None and task["key"] not in seen:
                seen.add(task["key"])
                first.append(task)
            else:
                rest.append(task)
        entries = dict(parent_entries)
        outputs = {}
        for phase, batch in (("shared work", first), ("candidates", rest)):
            if not batch:
                continue
            if self.verbose:
                print(f"[RobustSearchCV] {phase}: fitting {len(batch)} candidate-split pairs")
            results = Parallel(n_jobs=self.n_jobs, verbose=max(0, self.verbose - 1))(
                delayed(_fit_candidate)(t["est"], splits[t["si"]]["X"], splits[t["si"]]["y"], t["fit_params"],
                                        splits[t["si"]]["X_score"] if "score_rows" not in t
                                        else splits[t["si"]]["X_score"][t["score_rows"]],
                                        responses, entries, self.error_score)
                for t in batch
            )
            for task, result in zip(batch, results):
                if "score_rows" in task:
                    outputs.setdefault(("parts", task["ci"], task["si"]), []).append((result, task["score_rows"]))
                else:
                    outputs[(task["ci"], task["si"])] = result
                entries.update(result["entries"])
        for key in [k for k in outputs if k[0] == "parts"]:
            _, ci, si = key
            outputs[(ci, si)] = _merge_halves(outputs.pop(key), splits[si]["X_score"].shape[0])
        shared = {}
        for key in entries:
            shared[key[0]] = shared.get(key[0], 0) + 1
        self.shared_fits_ = shared

        self._score(configs, splits, outputs, rule, scorer, rng, y)
        self._refit(configs, splits, outputs, X, y, group_labels, (seed, monitor, needs_groups, rule))
        self.search_time_ = time.perf_counter() - start
        self._warn_about_the_pick(outputs)
        return self

    def _warn_about_the_pick(self, outputs):
        """Raise the winner's own warnings (the others' stay in ``results_['warnings']``), and say when every
        candidate does worse than always answering the majority class."""
        seen = set()
        for si in range(self.n_splits_):
            for category, message in outputs[(self.best_index_, si)].get("messages", []):
                if category not in seen:
                    seen.add(category)
                    warn(f"The pick {self.best_estimator_name_}{self.best_params_}: {message}", category)
        if self.best_below_majority_:
            warn(
                "Every candidate does worse on the validation rows than always answering the majority class "
                f"(accuracy below the majority rate and balanced accuracy at chance); the pick "
                f"{self.best_estimator_name_}{self.best_params_} is the best of them by selection="
                f"{self.selection_!r}. Search other settings (wider grids, more epochs) or check the data.",
                BelowMajorityWarning,
            )

    def _splits(self, X, y, group_labels, X_val, y_val, group_labels_val, needs_groups):
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val (validation features and labels), or neither.")
        if X_val is not None:
            if self.cv is not None:
                raise ValueError(
                    "Both cv and X_val were given, two validation schemes: pass X_val, y_val for the "
                    "validation-split protocol, or cv (and no X_val) for cross-validation."
                )
            X_val = validate_data(self, X_val, dtype=X.dtype, reset=False)
            # the training classes, in their dtype: a prediction '10' must not be cut to y_val's '1'
            y_val = self.classes_[encode_labels(self.classes_, y_val, "y_val")]
            if y_val.shape[0] != X_val.shape[0]:
                raise ValueError(f"X_val has {X_val.shape[0]} rows but y_val has {y_val.shape[0]}.")
            if needs_groups and group_labels_val is None:
                raise ValueError(
                    f"selection={self.selection!r} needs group labels of the validation rows: pass "
                    "group_labels_val=..., or select without them: selection='worst_class', "
                    "'bias_unsupervised' or 'accuracy'."
                )
            g_val = None
            if group_labels_val is not None and needs_groups:
                check_group_labels(group_labels_val, X_val.shape[0], name="group_labels_val")
                g_val = group_labels_val
            return [{"X": X, "y": y, "g": group_labels, "X_score": X_val, "y_score": y_val, "g_score": g_val,
                     "test": None, "validation": True, "train_size": X.shape[0]}]
        if group_labels_val is not None:
            raise ValueError("group_labels_val was given without X_val and y_val: pass all three.")
        if needs_groups and group_labels is None:
            raise ValueError(
                f"selection={self.selection!r} with CV folds needs group_labels for the rows of X: pass "
                "group_labels=..., or select without them: selection='worst_class', 'bias_unsupervised' "
                "or 'accuracy'."
            )
        if group_labels is not None:
            check_group_labels(group_labels, X.shape[0])
        cv = check_cv(5 if self.cv is None else self.cv, y, classifier=True)
        folds = list(cv.split(X, y))
        tested = np.concatenate([test for _, test in folds])
        if np.unique(tested).shape[0] != tested.shape[0]:
            raise ValueError(
                "cv tests some rows more than once (e.g. ShuffleSplit); RobustSearchCV scores the pooled "
                "out-of-fold predictions and needs each row tested at most once: use KFold, "
                "StratifiedKFold or GroupKFold."
            )
        g = None if group_labels is None else np.asarray(group_labels)
        out = []
        for train, test in folds:
            out.append({"X": X[train], "y": y[train], "g": None if g is None else g[train],
                        "X_score": X[test], "y_score": y[test], "g_score": None if g is None else g[test],
                        "test": test, "validation": False, "train_size": train.shape[0]})
        return out

    # -- scoring ---------------------------------------------------------------
    def _score(self, configs, splits, outputs, rule, scorer, rng, y):
        n_cfg = len(configs)
        ok = np.array([all(outputs[(ci, si)]["error"] is None for si in range(len(splits))) for ci in range(n_cfg)])
        if not ok.any():
            first = next(o["error"] for o in outputs.values() if o["error"])
            raise ValueError(f"Every candidate failed to fit; the first error: {first}")
        y_score = np.concatenate([s["y_score"] for s in splits])
        # compared as positions in classes_: no array of y's dtype that would cut or convert a prediction
        y_codes = encode_labels(self.classes_, y_score, "y_val")
        correct = np.zeros((n_cfg, y_score.shape[0]), dtype=bool)
        pred_codes = np.zeros((n_cfg, y_score.shape[0]), dtype=np.int64)
        for ci in np.flatnonzero(ok):
            pred = np.concatenate([outputs[(ci, si)]["responses"]["predict"] for si in range(len(splits))])
            pred_codes[ci] = encode_labels(self.classes_, pred, f"the predictions of {configs[ci][0]}")
            correct[ci] = pred_codes[ci] == y_codes
        alpha = (1 - self.confidence_level) / 2 * 100
        score = np.full(n_cfg, np.nan)
        reps = np.full((self.n_bootstrap, n_cfg), np.nan)
        bootstrap_seed = int(rng.randint(2**31 - 1))
        class_diff = rule is not None and SELECTION_RULES[rule]["reduce"] == "class_diff"
        if class_diff:  # the class accuracies themselves: ClassDiff's interval comes from their differences
            cell_point, cell_reps = paired_bootstrap(correct[ok], self._cells(rule, splits, y_score), reduce="none",
                                                     n_bootstrap=self.n_bootstrap, random_state=bootstrap_seed)
            score[ok], reps[:, ok] = _neg_class_diff(cell_point, axis=1), _neg_class_diff(cell_reps, axis=2)
        elif rule is not None:
            cells = self._cells(rule, splits, y_score)
            reduce = SELECTION_RULES[rule]["reduce"]
            score[ok], reps[:, ok] = paired_bootstrap(correct[ok], cells, reduce=reduce,
                                                      n_bootstrap=self.n_bootstrap, random_state=bootstrap_seed)
        else:
            score[ok], reps[:, ok] = self._scorer_bootstrap(scorer, configs, splits, outputs, ok, y_score,
                                                            bootstrap_seed)
        # a candidate worse than always answering the majority class is never the pick while another is not
        below = np.zeros(n_cfg, dtype=bool)
        for ci in np.flatnonzero(ok):
            below[ci] = below_majority(y_codes, pred_codes[ci])[0]
        eligible = ok & ~below if (ok & ~below).any() else ok
        best = int(np.nanargmax(np.where(eligible, score, -np.inf)))
        ci_low, ci_high = np.full(n_cfg, np.nan), np.full(n_cfg, np.nan)
        if class_diff:
            ci_low[ok], ci_high[ok] = class_diff_interval(cell_point, cell_reps, self.confidence_level)
        else:
            ci_low[ok], ci_high[ok] = np.percentile(reps[:, ok], [alpha, 100 - alpha], axis=0)
        diff = reps[:, [best]] - reps
        d_low, d_high = np.full(n_cfg, np.nan), np.full(n_cfg, np.nan)
        d_low[ok], d_high[ok] = np.percentile(diff[:, ok], [alpha, 100 - alpha], axis=0)
        # eligible candidates first, each part by score: rank 1 is the pick
        order = np.lexsort((-np.where(ok, score, -np.inf), ~eligible))
        rank = np.empty(n_cfg, dtype=np.int64)
        rank[order] = np.arange(1, n_cfg + 1)

        distinguishable = np.where(ok, d_low > 0, False)
        self.results_ = make_table({
            "estimator": [name for name, _, _ in configs],
            "params": [params for _, _, params in configs],
            "score": score,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "diff_ci_low": d_low,
            "diff_ci_high": d_high,
            "distinguishable": distinguishable,
            "rank": rank,
            "accuracy": np.where(ok, correct.mean(axis=1), np.nan),
            "below_majority": below,
            "fit_time": [sum(outputs[(ci, si)]["fit_time"] for si in range(len(splits))) for ci in range(n_cfg)],
            "error": ["; ".join(str(outputs[(ci, si)]["error"]) for si in range(len(splits))
                            if outputs[(ci, si)]["error"]) for ci in range(n_cfg)],
            "warnings": [", ".join(sorted({w for si in range(len(splits)) for w in outputs[(ci, si)]["warnings"]}))
                         for ci in range(n_cfg)],
        })
        self.best_index_ = best
        self.n_indistinguishable_ = int(np.sum(ok & ~distinguishable)) - 1  # the winner is not told from itself
        self.best_score_ = float(score[best])
        self.best_score_ci_ = (float(ci_low[best]), float(ci_high[best]))
        self.best_params_ = dict(configs[best][2])
        self.best_estimator_name_ = configs[best][0]
        self.best_below_majority_ = bool(below[best])

    def _cells(self, rule, splits, y_score):
        if rule == "worst_group":
            g = np.concatenate([np.asarray(s["g_score"]) for s in splits])
            membership = check_group_labels(g, g.shape[0], name="group_labels_val")
            return membership.ids() if membership.disjoint else membership.matrix
        if rule in ("worst_class", "class_diff"):
            return y_score
        if rule == "inferred_worst_group":
            return np.concatenate([np.asarray(s["g_inferred"]) for s in splits])
        if rule == "accuracy":
            return np.zeros(y_score.shape[0], dtype=np.int64)
        _, t = np.unique(y_score, return_inverse=True)
        b = np.concatenate([s["biased"] for s in splits])
        k = max(int(t.max()), int(b.max())) + 1
        cells = t * k + b
        empty = sorted(set(range(k * k)) - set(np.unique(cells).tolist()))
        if empty:
            names = [(self.classes_[c // k].item() if c // k < len(self.classes_) else c // k,
                      self.classes_[c % k].item() if c % k < len(self.classes_) else c % k) for c in empty]
            warnings.warn(
                f"selection='bias_unsupervised': the (class, biased prediction) cells {names} have no "
                "validation rows and are left out of the score (LaBonte et al.'s eq. 1 over the other "
                "cells). Use more validation rows, or selection='worst_class'.",
                EmptyCellWarning, stacklevel=3,
            )
        return cells

    def _scorer_bootstrap(self, scorer, configs, splits, outputs, ok, y_score, seed):
        """A scorer's value on the pooled validation rows, and its iid row bootstrap."""
        meta = {}
        wanted = requests(scorer, "score", ["group_labels", "y_pred_biased"])
        if "group_labels" in wanted:
            meta["group_labels"] = np.concatenate([np.asarray(s["g_score"]) for s in splits])
        if "y_pred_biased" in wanted:
            meta["y_pred_biased"] = np.concatenate([s["biased"] for s in splits])
        n = y_score.shape[0]
        rows = np.arange(n)[:, None]
        rng = check_random_state(seed)
        draws = [rng.randint(0, n, size=n) for _ in range(self.n_bootstrap)]
        point = np.empty(int(ok.sum()))
        reps = np.empty((self.n_bootstrap, int(ok.sum())))
        import sklearn

        with sklearn.config_context(enable_metadata_routing=True):
            for j, ci in enumerate(np.flatnonzero(ok)):
                outs = {}
                for method in _RESPONSES:
                    parts = [outputs[(ci, si)]["responses"].get(method) for si in range(len(splits))]
                    if all(p is not None for p in parts):
                        outs[method] = np.concatenate(parts)
                replay = _Replay(self.classes_, outs)
                point[j] = scorer(replay, rows, y_score, **meta)
                for b, idx in enumerate(draws):
                    reps[b, j] = scorer(replay, rows[idx], y_score[idx], **{k: v[idx] for k, v in meta.items()})
        return point, reps

    # -- the winner --------------------------------------------------------------
    def _refit(self, configs, splits, outputs, X, y, group_labels, context):
        best = self.best_index_
        if splits[0]["validation"] and outputs[(best, 0)]["estimator"] is not None:
            # the candidate was fitted on the training rows with the validation split for its
            # epoch: exactly the refit, so it is kept instead of fitted again
            self.best_estimator_ = outputs[(best, 0)]["estimator"]
            self.refit_time_ = 0.0
            return
        if splits[0]["validation"]:
            # cross-fitted (its X_val is data it trains on): the pick trains on every validation row
            split = splits[0]
            seed, monitor, needs_groups, rule = context
            name, estimator, params = configs[best]
            est = self._prepare(estimator, params, seed, monitor, False)
            fit_params = self._val_fit_params(est, split, np.arange(split["X_score"].shape[0]), needs_groups, rule)
            if split["g"] is not None and "group_labels" in requests(est, "fit", ["group_labels"]):
                fit_params["group_labels"] = split["g"]
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its warnings are the pick's, raised from the halves
                self.best_estimator_ = est.fit(split["X"], split["y"], **fit_params)
            self.refit_time_ = time.perf_counter() - start
            return
        name, estimator, params = configs[best]
        est = _with_params(estimator, params)
        proto = outputs[(best, 0)]["estimator"]
        if "random_state" in est.get_params(deep=False):
            est.set_params(random_state=proto.get_params(deep=False)["random_state"])
        fit_params = {}
        if group_labels is not None and "group_labels" in requests(est, "fit", ["group_labels"]):
            fit_params["group_labels"] = group_labels
        start = time.perf_counter()
        self.best_estimator_ = est.fit(X, y, **fit_params)
        self.refit_time_ = time.perf_counter() - start

    # -- prediction ------------------------------------------------------------
    def _check_X(self, X):
        check_is_fitted(self, "best_estimator_")
        return validate_data(self, X, dtype=[np.float32, np.float64], reset=False)

    def predict(self, X):
        """Predictions of ``best_estimator_``."""
        X = self._check_X(X)
        return self.best_estimator_.predict(X)

    @available_if(lambda self: not _has_best(self) or hasattr(self.best_estimator_, "predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of ``best_estimator_``."""
        X = self._check_X(X)
        return self.best_estimator_.predict_proba(X)

    @available_if(lambda self: not _has_best(self) or hasattr(self.best_estimator_, "decision_function"))
    def decision_function(self, X):
        """Decision function of ``best_estimator_``."""
        X = self._check_X(X)
        return self.best_estimator_.decision_function(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        return tags
