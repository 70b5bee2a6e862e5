"""Diversified Prototypical Ensembles (To et al., ICML 2025): an ensemble of prototype classifiers,
each trained on its own balanced subset, pushed apart by an inter-prototype similarity penalty."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from .._groups import check_group_labels
from ..engine._fit import encode_labels, resolve_seed
from ..utils import fill_doc
from ._spec import MethodSpec, register_method

__all__ = ["DPEClassifier", "balanced_subset", "diversity_schedule", "standardize_rows"]


def standardize_rows(X):
    """Each row minus its mean over the features, divided by its standard deviation (DPE's ``norm_emb``)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=1, keepdims=True)
    std = X.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return (X - mean) / std


def balanced_subset(strata, rng):
    """Rows of a subset with every stratum (group or class) downsampled to the smallest one's size."""
    strata = np.asarray(strata)
    values, counts = np.unique(strata, return_counts=True)
    size = counts.min()
    keep = [rng.choice(np.flatnonzero(strata == v), size=size, replace=False) for v in values]
    return np.concatenate(keep)


def diversity_schedule(strength, n_members, decay):
    """Weight of the similarity penalty of each member (1-based), as the reference code's
    ``cov_reg_scheduler_inv``: ``strength`` for members 1 and 2, then ``strength / (1 + decay (m - 2))``."""
    return [strength if m <= 2 else strength / (1 + decay * (m - 2)) for m in range(1, n_members + 1)]


def _unit(a):
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


class _no_limit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _member_step(Z, y, P, s, tau, wd, previous, lam):
    """The objective of one member on a batch and its gradients with respect to P and s.

    Z: unit rows (B, d); P: prototypes (K, d); s: distance scale; previous: the earlier members'
    prototypes (K, m, d) or None. With u = P / |P|, c = Z u^T, D = sqrt(2 - 2c) (the distance of
    unit vectors) and logits L = -tau |s| D:

    * cross-entropy: dl/dL = (softmax(L) - onehot(y)) / B = G; dl/dc = G tau |s| / D = H;
      dl/dP_k = (H_k^T Z - (H_k . c_k) u_k) / |P_k|; dl/ds = -tau sign(s) sum(G D);
    * norm penalty wd mean_k |P_k|^2: 2 wd P / K;
    * similarity penalty lam |S|, S = mean_k sum_j <P_k, Q_kj> / ((d - 1)(m + 1)):
      lam sign(S) sum_j Q_kj / ((d - 1)(m + 1) K).
    """
    B = Z.shape[0]
    K, d = P.shape
    norms = np.maximum(np.linalg.norm(P, axis=1), 1e-12)
    U = P / norms[:, None]
    c = Z @ U.T
    D = np.sqrt(np.maximum(2.0 - 2.0 * c, 1e-24))
    L = -tau * abs(s) * D
    L_max = L.max(axis=1, keepdims=True)
    E = np.exp(L - L_max)
    Zsum = E.sum(axis=1, keepdims=True)
    rows = np.arange(B)
    ce = float(np.mean(np.log(Zsum[:, 0]) + L_max[:, 0] - L[rows, y]))
    G = E / Zsum
    G[rows, y] -= 1.0
    G /= B
    H = G * (tau * abs(s)) / D
    g_P = ((H.T @ Z) - (H * c).sum(axis=0)[:, None] * U) / norms[:, None]
    g_s = float(-tau * np.sign(s) * np.sum(G * D))
    loss = ce + wd * float(np.mean((P * P).sum(axis=1)))
    g_P = g_P + 2.0 * wd * P / K
    if previous is not None and lam > 0:
        m = previous.shape[1]
        denom = max(d - 1, 1) * (m + 1)
        S = float(np.mean((P[:, None, :] * previous).sum(axis=2).sum(axis=1) / denom))
        loss += lam * abs(S)
        g_P = g_P + lam * np.sign(S) * previous.sum(axis=1) / (denom * K)
    return loss, g_P, g_s


@fill_doc
class DPEClassifier(ClassifierMixin, BaseEstimator):
    """Diversified Prototypical Ensemble: prototype classifiers on balanced subsets, kept diverse.

    To, Wilson, Nguyen, Harmanani, Cooper, Fooladgar, Abolmaesumi, Mousavi &
    Krishnan, "Diverse Prototypical Ensembles Improve Robustness to
    Subpopulation Shift", ICML 2025 (code: github.com/minhto2802/DPE). A
    last-layer method on the features of a trained backbone: the linear head
    is replaced by an ensemble of M prototype classifiers. Member m has one
    prototype :math:`p^m_c` per class and a distance scale :math:`s_m`
    (IsoMax+, Macêdo & Ludermir): with :math:`\\bar h` the unit-normalised
    feature row and :math:`\\bar p` the unit prototype,

    .. math:: z^m_c(h) = -|s_m|\\,\\lVert \\bar h - \\bar p^m_c \\rVert_2 ,
              \\qquad \\hat P(c \\mid h) = \\frac1M \\sum_m \\mathrm{softmax}(z^m(h))_c .

    Member m is trained on its own balanced subset of the training rows
    (every group, or without group labels every class, downsampled to the
    smallest one's size; a fresh draw per member) by SGD on

    .. math:: \\mathcal{L}_m = \\mathrm{CE}(\\tau z^m, y)
              + \\lambda_{wd}\\, \\tfrac1K \\textstyle\\sum_c \\lVert p^m_c \\rVert^2
              + \\lambda_m \\Big| \\tfrac1K \\textstyle\\sum_c \\tfrac{1}{m}
                \\sum_{j<m} \\frac{\\langle p^m_c, p^j_c\\rangle}{d - 1} \\Big| ,

    the IsoMax+ loss with entropic scale :math:`\\tau`, a penalty on the
    prototypes' norms, and the inter-prototype similarity penalty that
    pushes each new member's prototypes away from those of the members
    before it (:math:`\\lambda_m`: :func:`diversity_schedule`). Features are
    first standardised row by row (:func:`standardize_rows`, the reference
    code's ``norm_emb``).

    Where the training rows come from: the paper trains the ensemble on the
    validation split of a backbone trained by ERM (as DFR does), so ``X_val,
    y_val`` (with ``group_labels_val``, if any) are the training rows when
    given, and X only fixes the classes and columns; otherwise the ensemble
    is trained on X. Without group labels the subsets are class-balanced:
    the paper's setting without any attribute annotation (CelebA 84.6,
    MultiNLI 70.9, Waterbirds 94.1 worst-group accuracy, against 90.3 / 75.3
    / 94.1 with group-balanced subsets of annotated validation data; the
    repository's README). Inferred groups work too:
    ``InferredGroupsClassifier(estimator=DPEClassifier(), inferrer=...)``.
    After fine-tuning, the features are ``FineTuneClassifier.transform(X)``.

    Defaults and why: 15 members, 20 epochs each, SGD with momentum 0.9 at
    learning rate 1e-3, batch 256, :math:`\\tau = 30`, :math:`\\lambda = 5
    \\cdot 10^4` decaying by 0.05, :math:`\\lambda_{wd} = 10`: the reference
    code's defaults (``src/dpe/core.py``, ``Args``).

    The training is plain SGD with the gradients written out in numpy
    (tests/test_dpe.py checks them against autograd through the reference
    code's operations). Differences from the reference code: it keeps each member's epoch with
    the best validation worst-group accuracy, on validation rows that are
    also its training rows and with their group labels (even in the setting
    "without annotations"); here each member keeps its last epoch, so that
    no group label and no row is used twice. Batches keep their last,
    smaller batch when a subset is not a multiple of the batch size (the
    reference drops it, which leaves no batch at all on small subsets).

    Parameters
    ----------
    n_members : int, default=15
        Ensemble members (the reference's ``num_stages``).
    max_iter : int, default=20
        Epochs of each member.
    learning_rate : float, default=1e-3
    momentum : float, default=0.9
    batch_size : int, default=256
    entropic_scale : float, default=30.0
        :math:`\\tau`.
    diversity : float, default=5e4
        :math:`\\lambda` (the reference's ``cov_reg``); 0 trains independent members.
    diversity_decay : float, default=0.05
        The schedule's decay (the reference's ``alpha``).
    prototype_decay : float, default=10.0
        :math:`\\lambda_{wd}` (the reference's ``wd_weight``).
    standardize : bool, default=True
        Standardise each feature row first (the reference's ``norm_emb``,
        meant for a backbone's activations). Features whose common offset
        carries the label (Gaussian blocks shifted by the label) lose it:
        turn it off there (``RobustSearchCV`` searches both).
    {random_state}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    prototypes_ : ndarray of shape (n_members, n_classes, n_features)
    distance_scales_ : ndarray of shape (n_members,)
    subset_sizes_ : ndarray of shape (n_members,)
        Rows of each member's balanced subset.
    balanced_on_ : {'groups', 'classes'}
        What the subsets balance.
    loss_curves_ : list of list of float
        Mean training loss of every epoch of every member.
    n_features_in_ : int

    Examples
    --------
    >>> from skgroup.estimators import DPEClassifier
    >>> from skgroup.datasets import make_spurious_features
    >>> X, y, g = make_spurious_features(1000, random_state=0)
    >>> clf = DPEClassifier(n_members=3, max_iter=5, random_state=0).fit(X, y)
    >>> clf.prototypes_.shape
    (3, 2, 200)
    """

    # with group labels the subsets are group-balanced; routing sends them unless a user opts out
    __metadata_request__fit = {"group_labels": True, "X_val": True, "y_val": True, "group_labels_val": True}

    # X_val is the data it trains on (the paper's protocol, as DFR's): a search cannot select on it
    _fits_on_validation = True

    _parameter_constraints = {
        "n_members": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "entropic_scale": [Interval(Real, 0, None, closed="neither")],
        "diversity": [Interval(Real, 0, None, closed="left")],
        "diversity_decay": [Interval(Real, 0, None, closed="left")],
        "prototype_decay": [Interval(Real, 0, None, closed="left")],
        "standardize": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_members=15, max_iter=20, learning_rate=1e-3, momentum=0.9, batch_size=256,
                 entropic_scale=30.0, diversity=5e4, diversity_decay=0.05, prototype_decay=10.0,
                 standardize=True, random_state=None):
        self.n_members = n_members
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.entropic_scale = entropic_scale
        self.diversity = diversity
        self.diversity_decay = diversity_decay
        self.prototype_decay = prototype_decay
        self.standardize = standardize
        self.random_state = random_state

    def _features(self, X):
        Z = standardize_rows(X) if self.standardize else np.asarray(X, dtype=np.float64)
        return _unit(Z)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, group_labels=None, *, X_val=None, y_val=None, group_labels_val=None):
        """Train the ensemble on the rows of ``X`` (or on ``X_val`` when given, the paper's protocol).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group_labels : array-like of shape (n_samples,), default=None
            Group ids of X's rows: group-balanced subsets when the ensemble
            trains on X. None: class-balanced subsets.
        X_val, y_val : validation rows, default=None
            The rows the ensemble trains on (X then only fixes the classes
            and columns).
        group_labels_val : array-like, default=None
            Group ids of the ``X_val`` rows (group-balanced subsets).
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=True)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(f"y holds one class only ({self.classes_[0]!r}); DPEClassifier needs two or more.")
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val (the rows DPE trains on), or neither.")
        if group_labels_val is not None and X_val is None:
            raise ValueError("group_labels_val was given without X_val and y_val: pass all three.")
        groups, name = group_labels, "group_labels"
        if X_val is not None:
            X = validate_data(self, X_val, dtype=X.dtype, reset=False)
            y_enc = encode_labels(self.classes_, y_val, "y_val")
            if y_enc.shape[0] != X.shape[0]:
                raise ValueError(f"X_val has {X.shape[0]} rows but y_val has {y_enc.shape[0]}.")
            groups, name = group_labels_val, "group_labels_val"
        present = np.unique(y_enc)
        if present.shape[0] < self.classes_.shape[0]:
            missing = self.classes_[np.setdiff1d(np.arange(self.classes_.shape[0]), present)].tolist()
            raise ValueError(f"The rows DPE trains on hold no sample of class(es) {missing}; pass rows of every class.")
        strata = y_enc
        self.balanced_on_ = "classes"
        if groups is not None:
            membership = check_group_labels(groups, X.shape[0], name=name)
            if not membership.disjoint or np.any(membership.matrix.sum(axis=1) != 1):
                raise ValueError(f"DPE balances disjoint groups: every row of {name} must be in exactly one group; "
                                 "pass 1-D group ids.")
            # groups are crossed with the classes so that every subset holds every class
            strata = membership.ids() * self.classes_.shape[0] + y_enc
            self.balanced_on_ = "groups"
        self._train(self._features(X), y_enc, strata)
        return self

    def _train(self, Z, y, strata):
        """SGD with momentum (PyTorch's update: ``b = mu b + g; p -= lr b``) on each member's objective,
        with the gradients written out (see :func:`_member_step`): the steps are tiny matrix products,
        where autograd's overhead was most of the time (5 ms a step against well under 1 ms)."""
        seed = resolve_seed(self.random_state)
        rng = np.random.default_rng(seed)
        K, d = self.classes_.shape[0], Z.shape[1]
        weights = diversity_schedule(self.diversity, self.n_members, self.diversity_decay)
        prototypes, scales, sizes, curves = [], [], [], []
        with threadpool_limits(1) if self.batch_size * K * d < 2**22 else _no_limit():
            for m in range(self.n_members):
                rows = balanced_subset(strata, rng)
                P = 0.01 * rng.standard_normal((K, d))
                s = 1.0
                buf_P, buf_s = None, None
                previous = np.stack(prototypes, axis=1) if prototypes else None  # (K, m, d)
                curve = []
                for _ in range(self.max_iter):
                    order = rows[rng.permutation(rows.shape[0])]
                    total = 0.0
                    for start in range(0, order.shape[0], self.batch_size):
                        idx = order[start:start + self.batch_size]
                        loss, g_P, g_s = _member_step(Z[idx], y[idx], P, s, self.entropic_scale,
                                                      self.prototype_decay, previous, weights[m])
                        buf_P = g_P if buf_P is None else self.momentum * buf_P + g_P
                        buf_s = g_s if buf_s is None else self.momentum * buf_s + g_s
                        P = P - self.learning_rate * buf_P
                        s = s - self.learning_rate * buf_s
                        total += loss * idx.shape[0]
                    curve.append(total / order.shape[0])
                prototypes.append(P)
                scales.append(abs(s))
                sizes.append(rows.shape[0])
                curves.append(curve)
        self.prototypes_ = np.stack(prototypes)
        self.distance_scales_ = np.asarray(scales)
        self.subset_sizes_ = np.asarray(sizes)
        self.loss_curves_ = curves
        self.n_iter_ = self.max_iter

    def _member_logits(self, X):
        check_is_fitted(self, "prototypes_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        Z = self._features(X)
        P = _unit(self.prototypes_)  # (M, K, d)
        # ||a - b||^2 = 2 - 2 a.b for unit vectors
        sq = np.maximum(2.0 - 2.0 * np.einsum("nd,mkd->mnk", Z, P), 0.0)
        return -self.distance_scales_[:, None, None] * np.sqrt(sq)

    def predict_proba(self, X):
        """The members' softmax probabilities, averaged (columns in the order of ``classes_``)."""
        z = self._member_logits(X)
        z = z - z.max(axis=2, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=2, keepdims=True)
        return p.mean(axis=0)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X):
        """Log of the averaged probabilities; for two classes, that of ``classes_[1]`` minus ``classes_[0]``."""
        logp = np.log(np.maximum(self.predict_proba(X), 1e-300))
        return logp[:, 1] - logp[:, 0] if logp.shape[1] == 2 else logp

    def predict(self, X):
        check_is_fitted(self, "prototypes_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        return tags


def _search_space(data):
    # The reference's defaults (15 members, 20 epochs, cov_reg 5e4), with and without its row
    # standardisation: on features whose common offset carries the label (the synthetic
    # benchmark's Gaussian blocks) subtracting each row's mean removes it (test worst-group
    # accuracy 0.49 with it, 0.80 without, group-balanced subsets; docs/groups.rst).
    return {"standardize": [True, False]}


register_method(MethodSpec(
    DPEClassifier,
    search_space=_search_space,
    fast_params={"n_members": 3, "max_iter": 5},
    # scikit-learn's checks fit 2-feature blobs of 30 rows: one minibatch an epoch, row
    # standardisation of two features leaves only their sign, and prototypes of norm ~0.014 (the
    # reference's N(0, 0.01) start in 2-d) make the first steps overshoot (tests/test_common.py)
    check_params={"n_members": 2, "max_iter": 100, "learning_rate": 1e-3, "entropic_scale": 5.0,
                  "standardize": False, "prototype_decay": 0.0},
    # it trains on the validation split in benchmarks/compare.py (as DFR): one configuration there
    benchmark_grid={"diversity": [5e4]},
    quick_grid={"n_members": [3], "max_iter": [5]},
    finetune=False,  # a prototype ensemble on features, not a head the engine trains
))
