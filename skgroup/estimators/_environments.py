"""Environments from group labels, and the plan shared by the invariance methods (IRM, V-REx, CORAL, MMD).

Invariance penalties compare *environments*: sets of rows that hold every
class but differ in how the spurious attribute goes with the label. In
SubpopBench (``subpopbench/learning/algorithms.py``: ``IRM``,
``AbstractMMD``, through ``Algorithm.return_attributes(a)``) the
environments are the values of the spurious attribute ``a``, not the
(label, attribute) groups ``y * n_attributes + a`` that Group DRO uses; in
DomainBed they are the training domains. skgroup's ``group_labels`` are the
(label, attribute) groups (numbered by :func:`skgroup.metrics.make_group_labels`),
so ``environments='attribute'`` reads the attribute back from them, and
``environments='groups'`` takes each group as an environment (pass domains,
attribute values or inferred environments as ``group_labels``).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from .._cache import SHARED_FITS, canonical, fingerprint
from .._groups import check_group_labels
from .._samplers import FixedLengthSampler
from ..engine import HeadExecutor, Stage, resolve_batch_size
from ..utils._warnings import warn
from ._base import LOSS_CONSTRAINT, BaseHeadClassifier

__all__ = ["SingleEnvironmentWarning", "environment_ids"]


class SingleEnvironmentWarning(UserWarning):
    """The training rows form one environment (or environments of one class each): the penalty cannot compare
    environments that share the classes, and the method is close to ERM."""


def environment_ids(groups, y, classes, mode, *, name="group_labels"):
    """One environment id per training row, and each environment's name.

    Parameters
    ----------
    groups : GroupMembership or None
        The training rows' groups; None: each class is a group (as Group DRO
        does without group labels), hence one environment under 'attribute'.
    y : ndarray of int
        Encoded labels of the training rows.
    classes : ndarray
        The classes (for names).
    mode : {'attribute', 'groups'}
        'attribute': the groups are (class, attribute) cells and the
        environment of a row is its attribute: the rank of its group among
        its class's groups (group ids in sorted order, membership columns in
        their order). With :func:`~skgroup.metrics.make_group_labels`'
        numbering and every cell present that is the attribute's rank.
        'groups': each group is an environment.

    Returns
    -------
    ids : ndarray of int64, shape (n_rows,)
    names : tuple
        'attribute': for each environment, the tuple of the group names it
        joins; 'groups': the group names.
    """
    if groups is None:
        if mode == "attribute":
            return np.zeros(y.shape[0], dtype=np.int64), (tuple(classes),)
        groups = check_group_labels(y, y.shape[0])
        return groups.ids().astype(np.int64), tuple(classes[list(groups.names)])
    per_row = groups.matrix.sum(axis=1)
    if np.any(per_row != 1):
        raise ValueError(
            f"{name}: environments must be disjoint, but some rows belong to "
            f"{'several groups' if per_row.max() > 1 else 'no group'}; pass one group id per row (1-D)."
        )
    gid = groups.ids()
    present = np.flatnonzero(groups.counts > 0)
    if mode == "groups":
        _, ids = np.unique(gid, return_inverse=True)
        return ids.astype(np.int64), tuple(groups.names[g] for g in present)
    # 'attribute': every group must hold a single class
    by_class = {}
    for g in present:
        labels = np.unique(y[gid == g])
        if labels.size > 1:
            raise ValueError(
                f"environments='attribute' reads {name} as (class, attribute) cells, but group "
                f"{groups.names[g]!r} holds the classes {list(classes[labels])}. If {name} are environments "
                "already (domains, attribute values, inferred environments), pass environments='groups'."
            )
        by_class.setdefault(int(labels[0]), []).append(g)
    sizes = {c: len(v) for c, v in by_class.items()}
    if len(set(sizes.values())) > 1 or len(by_class) < len(np.unique(y)):
        shown = {classes[c]: [groups.names[g] for g in v] for c, v in sorted(by_class.items())}
        raise ValueError(
            f"environments='attribute' reads a row's attribute as the rank of its group among its class's "
            f"groups, but the classes hold different numbers of groups in the training rows ({shown}): a "
            f"(class, attribute) cell is missing. Pass the attribute values themselves as {name} with "
            "environments='groups'."
        )
    rank = np.empty(groups.n_groups, dtype=np.int64)
    n_env = next(iter(sizes.values()))
    members = [[] for _ in range(n_env)]
    for c in sorted(by_class):
        for r, g in enumerate(by_class[c]):  # present is sorted: the class's groups in column order
            rank[g] = r
            members[r].append(groups.names[g])
    return rank[gid], tuple(tuple(m) for m in members)


#: Parameters the four invariance estimators share (beside the heads').
ENVIRONMENT_CONSTRAINTS = {
    **{k: v for k, v in BaseHeadClassifier._parameter_constraints.items() if k != "tol"},
    **LOSS_CONSTRAINT,
    "solver": [StrOptions({"adamw", "sgd"})],
    "penalty_weight": [Interval(Real, 0, None, closed="left")],
    "environments": [StrOptions({"attribute", "groups"})],
}

ANNEAL_CONSTRAINT = {"penalty_anneal_iters": [Interval(Integral, 0, None, closed="left")]}


class EnvironmentPenaltyClassifier(BaseHeadClassifier):
    """Base class: a head trained on a reduction of the loss plus ``penalty_weight`` times a penalty that compares
    environments; with ``penalty_anneal_iters``, first that many optimizer steps at weight 1, then a fresh
    optimizer at the full weight.

    A subclass sets ``_stage_name``, ``_capture_features`` (the penalty reads the
    penultimate features) and ``_single_class_ok`` (environments of one class each
    still mean something to the penalty), and writes ``_objective(ctx, environments,
    weight)``.
    """

    # group labels reach fit through metadata routing unless a user opts out
    __metadata_request__fit = {"group_labels": True}

    _stage_name = "train"
    _capture_features = False
    _single_class_ok = False
    _reference_learning_rate = 1e-2

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,), default=None
            One group id per row (or a boolean membership matrix of disjoint
            groups); the environments are read from them (``environments``).
            ``None`` treats each class as a group, which makes the training
            rows one environment (SubpopBench's setting without attributes),
            with a :class:`SingleEnvironmentWarning`.
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and checkpoint selection.
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _objective(self, ctx, environments, weight):  # pragma: no cover - abstract
        raise NotImplementedError

    def _environments(self, ctx):
        ids, names = environment_ids(ctx.groups, ctx.y, self.classes_, self.environments)
        self.environment_names_ = names
        n_env = len(names)
        method = type(self).__name__
        if n_env == 1:
            why = ("without group_labels, each class is a group and" if ctx.groups is None
                   else "in the training rows")
            warn(
                f"{method}: {why} the environments ({self.environments!r}) are a single one, so the penalty "
                "compares nothing (IRM penalises that one environment's gradient; V-REx, CORAL and MMD are 0). "
                "Pass group_labels (enable metadata routing in a search to route them).",
                SingleEnvironmentWarning,
            )
        elif not self._single_class_ok:
            single = all(np.unique(ctx.y[ids == e]).size == 1 for e in range(n_env))
            if single:
                warn(
                    f"{method}: every environment holds one class, so the penalty compares the classes with "
                    "each other (aligning them, or penalising their confidence) instead of environments that "
                    "share the classes. Group labels of (class, attribute) cells need environments='attribute'.",
                    SingleEnvironmentWarning,
                )
        return ids

    def _plan(self, ctx):
        if self._capture_features and isinstance(ctx.executor, HeadExecutor) and not ctx.executor.hidden_layer_sizes:
            raise ValueError(
                f"{type(self).__name__} aligns the penultimate features across environments; a linear head's "
                "penultimate features are X itself, which training cannot move, so the penalty would be a "
                "constant: use an MLP head (hidden_layer_sizes=(k,)), or fine-tune a backbone with it "
                "(FineTuneClassifier(method=...))."
            )
        environments = self._environments(ctx)
        anneal = int(getattr(self, "penalty_anneal_iters", 0))
        init = "fresh"
        if anneal > 0:
            opts = ctx.options
            rows_per_step = resolve_batch_size(opts.batch_size, ctx.n_samples) * max(int(opts.accumulate), 1)
            anneal_options = opts.replace(max_iter=1, lr_schedule="constant")
            # the anneal stage does not depend on penalty_weight: a search over it trains it once
            key = None
            if self._reuses_shared_fits() and isinstance(ctx.executor, HeadExecutor):  # not while fine-tuning
                key = SHARED_FITS.key(f"{type(self).__name__}_anneal", ctx.executor.fingerprint(),
                                      ctx.executor.hidden_layer_sizes, canonical(anneal_options), ctx.seed(0),
                                      anneal, fingerprint(environments), canonical(self.loss))
            cached = SHARED_FITS.get(key)
            if cached is not None:
                init = ctx.executor.restore(cached)
            else:
                # DomainBed: weight 1 for the first anneal steps, then the full weight and a new Adam
                # ("it doesn't like the sharp jump in gradient magnitudes"): a second stage starts
                # from the first one's weights with a fresh optimizer
                init = yield Stage("anneal", self._objective(ctx, environments, 1.0), anneal_options,
                                   sampler=FixedLengthSampler(ctx.n_samples, anneal * rows_per_step),
                                   validate=False, seed=ctx.seed(0), capture_features=self._capture_features)
                if key is not None:
                    SHARED_FITS.put(key, ctx.executor.snapshot(init))
        yield Stage(self._stage_name, self._objective(ctx, environments, self.penalty_weight), ctx.options,
                    init=init, seed=ctx.seed(1), capture_features=self._capture_features)

    def _shared_fit_signature(self):
        """The settings the anneal stage depends on besides the data (None without an anneal stage).

        Candidates of a search that agree on it share one anneal stage
        (:class:`~skgroup.model_selection.RobustSearchCV` fits one of them
        first and ships the stage to the others' workers).
        """
        if not getattr(self, "penalty_anneal_iters", 0):
            return None
        settings = dict(
            hidden_layer_sizes=self.hidden_layer_sizes, l2_reg=self.l2_reg, solver=self.solver,
            batch_size=self.batch_size, learning_rate=self.learning_rate, device=self.device, dtype=self.dtype,
            penalty_anneal_iters=self.penalty_anneal_iters, environments=self.environments, loss=self.loss,
        )
        return canonical((type(self).__name__, settings, self.random_state, self.early_stopping,
                          self.validation_fraction, self.monitor))


class FeatureAlignmentClassifier(EnvironmentPenaltyClassifier):
    """Base class of CORAL and MMD: an MLP head whose penultimate features are aligned across
    environments by a penalty, with the parameters, defaults and search space the two share
    (DomainBed's and SubpopBench's ``AbstractMMD``, of which they are the two kernels). A subclass
    sets ``_stage_name`` and writes ``_objective``.
    """

    _parameter_constraints = dict(ENVIRONMENT_CONSTRAINTS)
    _capture_features = True

    def __init__(
        self,
        *,
        penalty_weight=1.0,
        environments="attribute",
        loss=None,
        hidden_layer_sizes=(256,),
        l2_reg=1e-4,
        solver="adamw",
        max_iter=10,
        batch_size="auto",
        learning_rate="auto",
        lr_schedule="constant",
        early_stopping="auto",
        validation_fraction=0.1,
        monitor="auto",
        n_iter_no_change=10,
        restore_best=True,
        callbacks=None,
        device="cpu",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.penalty_weight = penalty_weight
        self.environments = environments
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.l2_reg = l2_reg
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.n_iter_no_change = n_iter_no_change
        self.restore_best = restore_best
        self.callbacks = callbacks
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose


def alignment_search_space(data):
    """CORAL's and MMD's grid: DomainBed's and SubpopBench's hparams_registry.py draw mmd_gamma ~ 10^U(-1, 1)
    (default 1) for both; the range's ends and its default."""
    return {"penalty_weight": [0.1, 1.0, 10.0]}
