"""LISA (Yao et al., ICML 2022): mixup between selected pairs, of one label across domains or one domain
across labels."""

from numbers import Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from .._samplers import BalancedSampler
from ..engine import HeadExecutor, Stage
from ..objectives import Objective
from ..utils import fill_doc
from ..utils._warnings import warn
from ._base import LOSS_CONSTRAINT, BaseHeadClassifier
from ._mixup import beta_draws, mix_rows, mixed_targets
from ._spec import MethodSpec, register_method, scaled_epochs

__all__ = ["LISAClassifier", "LISATransform", "cut_box", "domains_from_groups", "lisa_partners"]


def domains_from_groups(group_ids, y):
    """The domain (spurious attribute) of every row, read from its group id and its encoded label.

    skgroup's groups are (label, attribute) cells; within one class, its
    groups are the domains. Two readings, in this order:

    1. integer ids numbered as :func:`skgroup.metrics.make_group_labels`
       numbers them, ``group = label * n_attributes + attribute`` (the
       numbering of skgroup's datasets, Group DRO's and SubpopBench's): the
       attribute is ``group - label * n_attributes``, with the smallest
       ``n_attributes`` for which every row's ``group // n_attributes`` is
       its label (exact also when a split lacks some cells);
    2. otherwise (strings, or another numbering such as ``attribute *
       n_classes + label``): a row's domain is the rank of its group among
       the sorted groups of its class, which is the attribute when every
       class holds the same attribute values.

    Returns
    -------
    domains : ndarray of shape (n_samples,), int64
    reading : {'make_group_labels', 'rank within class'}
    """
    ids = np.asarray(group_ids)
    y = np.asarray(y, dtype=np.int64)
    if ids.dtype == object:
        try:
            as_int = ids.astype(np.int64)
            if np.array_equal(as_int, ids):
                ids = as_int
        except (TypeError, ValueError):
            pass
    if ids.dtype.kind in "iu" and ids.size and ids.min() >= 0:
        g = ids.astype(np.int64)
        lo = int(np.max(g // (y + 1))) + 1
        later = y >= 1
        hi = int(np.min(g[later] // y[later])) if later.any() else lo
        if lo <= hi:
            return g - y * lo, "make_group_labels"
    domains = np.zeros(y.shape[0], dtype=np.int64)
    for k in np.unique(y):
        rows = y == k
        _, domains[rows] = np.unique(ids[rows], return_inverse=True)
    return domains, "rank within class"


def lisa_partners(y, domains, intra_label, u):
    """Each row's mixing partner under LISA's selection rule, drawn uniformly among the eligible rows.

    Intra-label LISA pairs a row with a row of the same label and another
    domain; intra-domain LISA with a row of the same domain and another
    label (Yao et al., 2022, Sec. 3.1). ``y`` and ``domains`` (m,) int
    tensors, ``u`` (m,) uniform draws in [0, 1), one a row. Returns
    ``(partner, has_partner)`` (CPU tensors): rows with no eligible row in
    the batch are their own partner.
    """
    y, domains, u = y.cpu().numpy(), domains.cpu().numpy(), u.cpu().numpy()
    m = y.shape[0]
    # the batch's (label, domain) cells and which cells may pair (a few cells: numpy beats torch here)
    key = y * (int(domains.max()) + 1) + domains
    _, first, cell_of = np.unique(key, return_index=True, return_inverse=True)
    cell_of = cell_of.ravel()
    cy, cd = y[first], domains[first]
    same_y, same_d = cy[:, None] == cy[None, :], cd[:, None] == cd[None, :]
    eligible = (same_y & ~same_d) if intra_label else (same_d & ~same_y)
    counts = np.bincount(cell_of, minlength=cy.shape[0])
    order = np.argsort(cell_of, kind="stable")
    start = np.cumsum(counts) - counts
    # row i draws r uniformly in [0, n_i), n_i its eligible rows, and takes the r-th of them in cell order
    per_cell = eligible[cell_of] * counts  # (m, cells)
    cum = per_cell.cumsum(axis=1)
    n = cum[:, -1]
    has = n > 0
    r = np.minimum(np.floor(u * n).astype(np.int64), np.maximum(n - 1, 0))
    cell = np.minimum((cum <= r[:, None]).sum(axis=1), cy.shape[0] - 1)
    rows = np.arange(m)
    before = cum[rows, cell] - per_cell[rows, cell]
    partner = order[np.clip(start[cell] + r - before, 0, m - 1)]
    partner = np.where(has, partner, rows)
    return torch.from_numpy(partner), torch.from_numpy(has)


def cut_box(height, width, lam):
    """The box CutMix pastes (Yun et al., ICCV 2019; the LISA authors' ``rand_bbox``): sides
    ``int(side * sqrt(1 - lam))`` around a uniformly drawn centre (torch's generator), clipped to the
    image. Returns ``(top, bottom, left, right)``."""
    cut = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(top), int(bottom), int(left), int(right)


class LISATransform:
    """LISA's selective mixup of a batch (Yao et al., 2022, Algorithm 1).

    Per batch, intra-label LISA with probability ``p_sel`` (same label,
    another domain), else intra-domain LISA (same domain, another label);
    per row, a partner drawn uniformly among the batch's eligible rows and
    ``lam_i ~ Beta(alpha, alpha)``; row i becomes ``lam_i x_i + (1 - lam_i)
    x_partner`` with the same mixture of the two labels. A row without an
    eligible row in the batch is left as it is (``lam = 1``). ``domains``:
    the domain of every training row (looked up by the batch's row
    indices). ``where='auto'`` as for :class:`MixupTransform`.

    ``mix_method='cutmix'`` (images (N, C, H, W) only): instead of the
    convex combination, one box per batch (``lam ~ Beta(alpha, alpha)``,
    :func:`cut_box`) is pasted from each row's partner, and the labels are
    mixed by the area kept, ``1 - box area / image area``, as the authors'
    ``cut_mix_up`` does.

    ``last_intra_label`` and ``last_mixed`` (rows with a partner) describe
    the last batch.
    """

    where = "auto"

    def __init__(self, domains, alpha, p_sel, mix_method="mixup"):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0; got {alpha}.")
        if not 0 <= p_sel <= 1:
            raise ValueError(f"p_sel must be in [0, 1]; got {p_sel}.")
        if mix_method not in ("mixup", "cutmix"):
            raise ValueError(f"mix_method must be 'mixup' or 'cutmix'; got {mix_method!r}.")
        self.domains = torch.as_tensor(np.asarray(domains, dtype=np.int64))
        self.alpha = float(alpha)
        self.p_sel = float(p_sel)
        self.mix_method = mix_method
        self.last_intra_label = None
        self.last_mixed = None

    def __call__(self, xb, yb, idx):
        m = xb.shape[0]
        if self.mix_method == "cutmix" and xb.ndim != 4:
            raise ValueError(f"mix_method='cutmix' pastes boxes of images (N, C, H, W); these inputs have shape "
                             f"{tuple(xb.shape)} (cached or pooled features): use mix_method='mixup'.")
        # the same draws whatever the strategy: the stream of a run does not depend on its batches' content
        intra_label = bool(torch.rand(()) < self.p_sel)
        u = torch.rand(m, dtype=torch.float64)
        partner, has = lisa_partners(yb.cpu(), self.domains[idx.cpu()], intra_label, u)
        self.last_intra_label, self.last_mixed = intra_label, int(has.sum())
        if self.mix_method == "cutmix":
            top, bottom, left, right = cut_box(xb.shape[2], xb.shape[3], float(beta_draws(self.alpha, 1)))
            mixed = xb.clone()
            rows = torch.nonzero(has).squeeze(1).to(xb.device)
            mixed[rows, :, top:bottom, left:right] = xb[partner.to(xb.device)[rows], :, top:bottom, left:right]
            kept = 1.0 - (bottom - top) * (right - left) / (xb.shape[2] * xb.shape[3])
            lam = torch.where(has, torch.full((m,), kept, dtype=torch.float64), torch.ones(m, dtype=torch.float64))
            return mixed, mixed_targets(yb, partner, lam, xb.dtype)
        lam = beta_draws(self.alpha, m)
        lam = torch.where(has, lam, torch.ones_like(lam))
        return mix_rows(xb, partner, lam), mixed_targets(yb, partner, lam, xb.dtype)

    def __repr__(self):
        return f"LISATransform(alpha={self.alpha!r}, p_sel={self.p_sel!r}, mix_method={self.mix_method!r})"


@fill_doc
class LISAClassifier(BaseHeadClassifier):
    """Softmax head trained with LISA, selective mixup across domains and across labels.

    Yao, Wang, Li, Zhang, Liang, Zou & Finn, "Improving Out-of-Distribution
    Robustness via Selective Augmentation", ICML 2022 (Algorithm 1). For
    each minibatch a strategy is drawn: with probability ``p_sel``
    *intra-label* LISA mixes every row with a row of the same label and
    another domain (the spurious attribute varies while the label stays:
    the model cannot use the attribute), otherwise *intra-domain* LISA
    mixes it with a row of the same domain and another label (the label
    varies within a domain: the model must read the label itself). With
    :math:`\\lambda_i \\sim \\mathrm{Beta}(\\alpha, \\alpha)` per row,

    .. math:: \\tilde x_i = \\lambda_i x_i + (1-\\lambda_i) x_{j(i)}, \\qquad
              \\min_W \\frac{1}{m}\\sum_i \\lambda_i\\,\\ell(W\\tilde x_i, y_i)
              + (1-\\lambda_i)\\,\\ell(W\\tilde x_i, y_{j(i)})
              + \\frac{\\mu}{2}\\lVert W\\rVert^2 ,

    the soft cross-entropy of the authors' code. The partner j(i) is drawn
    uniformly among the batch's rows that satisfy the rule; a row with none
    is trained on as it is.

    **Domains from group labels.** LISA trains on the spurious attribute
    ("domain"); skgroup's group labels are (label, attribute) cells, and the
    groups within a class are its domains. Integer ids numbered as
    :func:`skgroup.metrics.make_group_labels` numbers them (``group = label
    * n_attributes + attribute``, the numbering of skgroup's datasets and of
    Group DRO's and SubpopBench's code) give the attribute exactly;
    otherwise a row's domain is the rank of its group among its class's
    groups (see :func:`~skgroup.estimators._lisa.domains_from_groups`).
    ``domain_reading_`` says which reading was used. Without group labels
    every row is in one domain: intra-label mixing then finds no partner and
    intra-domain mixing mixes rows of different classes.

    On cached features the mixed vectors are the features (the head's
    inputs; SubpopBench and the authors mix the encoder's pooled features
    for text); ``FineTuneClassifier(method=LISAClassifier())`` mixes pixels
    for image backbones and the pooled features for text backbones.

    Defaults and why: ``alpha=2`` and ``p_sel=0.5``, the authors' and
    SubpopBench's; group-balanced batches (``balance_groups=True``), as the
    authors' code draws every batch from each group alike (SubpopBench
    samples uniformly: ``balance_groups=False``); AdamW for 10 epochs at
    batch ``'auto'``, learning rate ``'auto'`` from JTT's reference rate
    1e-2 (on CelebA attributes the validation-selected worst-group accuracy
    barely moves between 1e-3 and 3e-2), weak L2. Measurements and
    differences from the reference code: ``docs/methods/lisa.rst``.

    Parameters
    ----------
    alpha : float, default=2.0
        Parameter of the symmetric Beta distribution of each row's mixing
        weight.
    p_sel : float in [0, 1], default=0.5
        Probability that a batch uses intra-label LISA (else intra-domain).
    balance_groups : bool, default=True
        Draw every epoch's ``n_samples`` rows with replacement so that each
        group is equally likely (each class, without group labels); False
        visits every row once, shuffled.
    mix_method : {'mixup', 'cutmix'}, default='mixup'
        'cutmix' (fine-tuning an image backbone only): paste a box of each
        row's partner into it, one box per batch, and mix the labels by the
        area kept (the authors' ``--cut_mix``, SubpopBench's
        ``LISA_mixup_method``). Features cannot be cut: the head estimators
        and text backbones take 'mixup'.
    {loss}
    {hidden_layer_sizes}
    {l2_reg}
    {solver_minibatch}
    max_iter : int, default=10
        Epochs.
    {batch_size}
    {learning_rate}
    {lr_schedule}
    {early_stopping}
    {validation_fraction}
    {monitor}
    {n_iter_no_change}
    {restore_best}
    {callbacks}
    {device}
    {dtype}
    {random_state}
    {verbose}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    domain_reading_ : {'make_group_labels', 'rank within class', 'none'}
        How the domains were read from the group labels ('none': fitted
        without them).
    n_domains_ : int
        Distinct domains among the training rows.
    coef_ : ndarray of shape (n_classes, n_features)
        Weights of a linear head.
    intercept_ : ndarray of shape (n_classes,)
    coefs_, intercepts_ : lists of ndarray
    learning_rate_ : float
        The learning rate used (with ``learning_rate='auto'``).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
    history_, validation_scores_, best_iteration_ :
        As in :class:`ERMClassifier`.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup import LISAClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = LISAClassifier(max_iter=3, random_state=0).fit(X, y, group_labels=g)
    >>> clf.domain_reading_, clf.n_domains_
    ('make_group_labels', 2)
    """

    # group labels reach fit through metadata routing unless a user opts out
    __metadata_request__fit = {"group_labels": True}

    _reference_learning_rate = 1e-2

    _parameter_constraints = {
        **{k: v for k, v in BaseHeadClassifier._parameter_constraints.items() if k != "tol"},
        **LOSS_CONSTRAINT,
        "solver": [StrOptions({"adamw", "sgd"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "p_sel": [Interval(Real, 0, 1, closed="both")],
        "balance_groups": ["boolean"],
        "mix_method": [StrOptions({"mixup", "cutmix"})],
    }

    def __init__(
        self,
        *,
        alpha=2.0,
        p_sel=0.5,
        balance_groups=True,
        mix_method="mixup",
        loss=None,
        hidden_layer_sizes=(),
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
        self.alpha = alpha
        self.p_sel = p_sel
        self.balance_groups = balance_groups
        self.mix_method = mix_method
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,) or (n_samples, n_groups), default=None
            One (label, attribute) group per sample: 1-D ids, or a boolean
            membership matrix with one group per row. The domains LISA
            mixes across are read from them (see the class docstring).
            ``None``: every row in one domain.
        X_val, y_val, group_labels_val : validation rows, default=None
            For early stopping and checkpoint selection.
        """
        return self._fit(X, y, group_labels=group_labels, X_val=X_val, y_val=y_val,
                         group_labels_val=group_labels_val)

    def _plan(self, ctx):
        if self.mix_method == "cutmix" and isinstance(ctx.executor, HeadExecutor):
            raise ValueError("mix_method='cutmix' pastes boxes of images; cached features cannot be cut: use "
                             "mix_method='mixup' (or FineTuneClassifier with an image backbone).")
        if ctx.groups is None:
            domains, reading, strata = np.zeros(ctx.n_samples, dtype=np.int64), "none", ctx.y
        else:
            if not ctx.groups.disjoint or np.any(ctx.groups.matrix.sum(axis=1) != 1):
                raise ValueError(
                    "group_labels: LISA reads one (label, attribute) group per row, but some rows of the "
                    "membership matrix belong to several groups or to none: pass 1-D group ids."
                )
            strata = ctx.groups.ids()
            names = np.empty(len(ctx.groups.names), dtype=object)
            names[:] = list(ctx.groups.names)
            domains, reading = domains_from_groups(names[strata], ctx.y)
            if reading == "rank within class":
                per_class = {int(k): int(np.unique(domains[ctx.y == k]).shape[0]) for k in np.unique(ctx.y)}
                if len(set(per_class.values())) > 1:
                    warn(
                        "group_labels are not numbered as skgroup.metrics.make_group_labels numbers them "
                        "(group = label * n_attributes + attribute), and the classes hold different numbers "
                        f"of groups ({per_class}): LISA takes a row's domain to be the rank of its group "
                        "within its class, which may match different attributes across classes. Number the "
                        "groups with make_group_labels(y, attribute) to give the domains exactly."
                    )
        self.domain_reading_ = reading
        self.n_domains_ = int(np.unique(domains).shape[0])
        sampler = BalancedSampler(strata) if self.balance_groups else None
        yield Stage("lisa", Objective(self._loss(ctx)), ctx.options, sampler=sampler, seed=ctx.seed(0),
                    batch_transform=LISATransform(domains, self.alpha, self.p_sel, self.mix_method))


def _search_space(data):
    # SubpopBench's ranges (hparams_registry.py): LISA_alpha 10^U(-1, 1) around the authors'
    # default 2, LISA_p_sel U(0, 1) around their 0.5; epochs: the default 10 CelebA epochs at
    # equal steps. (LISA_mixup_method 'cutmix' applies to images only.)
    return {"alpha": [0.5, 2.0, 10.0], "p_sel": [0.25, 0.5, 0.75], "max_iter": [scaled_epochs(10, data)]}


register_method(MethodSpec(
    LISAClassifier,
    search_space=_search_space,
    fast_params={"max_iter": 3, "batch_size": 64},
    benchmark_grid={"alpha": [0.5, 2.0, 10.0], "p_sel": [0.0, 0.25, 0.5, 0.75, 1.0], "l2_reg": [1e-4, 1e-2]},
    quick_grid={"p_sel": [0.5, 1.0]},
    trains_on_group_labels=True,
))
