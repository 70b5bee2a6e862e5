"""Per-class clustering with the number of clusters chosen by silhouette (GEORGE; SpuCo's Cluster)."""

from numbers import Integral

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from threadpoolctl import threadpool_limits

from ._base import BaseGroupInferrer, model_outputs

__all__ = ["ClusterInferrer", "representation"]

_REPRESENTATIONS = ("features", "logits", "probabilities", "gradients")

#: Below this many multiply-adds (rows x columns x clusters) a clustering runs on one thread: on
#: a busy 2-core machine k-means' OpenMP threads made a 1,500 x 200 fit 20x slower (6 s vs 0.3 s),
#: the engine's thread policy for small steps (docs/design.rst, "Threads").
_ONE_THREAD_WORK = 2**26


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def representation(kind, X, y_enc, model=None):
    """The rows' representation that is clustered.

    * ``'features'``: X itself (the inputs of a linear head: the backbone's
      penultimate features, GEORGE's choice);
    * ``'logits'``, ``'probabilities'``: the reference model's outputs
      (SPARE clusters the softmax outputs);
    * ``'gradients'``: the gradient of the reference model's cross-entropy
      with respect to its last linear layer, :math:`(p - e_y) \\otimes [x, 1]`
      (for two classes the one row :math:`(p_1 - y)[x, 1]`, as the logits
      only depend on :math:`w_1 - w_0`).
    """
    if kind == "features":
        return np.asarray(X, dtype=np.float64)
    z = model_outputs(model, X)
    if kind == "logits":
        return z
    p = _softmax(z)
    if kind == "probabilities":
        return p
    residual = p.copy()
    residual[np.arange(y_enc.shape[0]), y_enc] -= 1.0
    Xb = np.column_stack([np.asarray(X, dtype=np.float64), np.ones(X.shape[0])])
    if residual.shape[1] == 2:
        return residual[:, 1:2] * Xb
    return (residual[:, :, None] * Xb[:, None, :]).reshape(X.shape[0], -1)


def cluster_silhouettes(Z, labels, sample, rng):
    """(global mean, mean over clusters of the clusters' mean) silhouette on at most ``sample`` rows."""
    rows = np.arange(Z.shape[0])
    if Z.shape[0] > sample:
        rows = np.sort(rng.choice(Z.shape[0], size=sample, replace=False))
    lab = labels[rows]
    if np.unique(lab).shape[0] < 2 or np.unique(lab).shape[0] >= rows.shape[0]:
        return -1.0, -1.0
    s = silhouette_samples(Z[rows], lab)
    per_cluster = [s[lab == c].mean() for c in np.unique(lab)]
    return float(s.mean()), float(np.mean(per_cluster))


class ClusterInferrer(BaseGroupInferrer):
    """Groups by clustering each class, the number of clusters chosen by silhouette.

    GEORGE (Sohoni, Dunnmon, Angus, Gu & Ré, "No Subclass Left Behind:
    Fine-Grained Robustness in Coarse-Grained Classification Problems",
    NeurIPS 2020) clusters, class by class, the penultimate features of an
    ERM model and picks the number of clusters k of each class by the
    silhouette score; SpuCo's ``Cluster`` (Joshi et al., 2023) does the same
    on any representation (features, a model's outputs) with k-means. For
    every class c, with :math:`Z_c` the representation of its rows:

    .. math:: k_c = \\arg\\max_{2 \\le k \\le K_{max}} s\\big(\\mathrm{cluster}_k(Z_c)\\big),
              \\qquad g_i = (y_i, \\mathrm{cluster}_{k_{y_i}}(z_i)),

    where s is the silhouette score: GEORGE's mean over clusters of each
    cluster's mean silhouette (``silhouette='cluster'``), or SpuCo's mean
    over rows (``silhouette='global'``). An integer ``n_clusters`` skips the
    search.

    What is clustered (``representation``): the features X (GEORGE on a
    frozen backbone), or the reference model's logits, probabilities or
    last-layer loss gradients (see :func:`representation`). Features and
    gradients are standardised per column first (unscaled gradients put a
    few far rows in clusters of their own); outputs are clustered as they
    are. The reference model is ``estimator`` (None:
    LaBonte et al.'s biased ERM, shared per data).

    Differences from the reference code. GEORGE reduces the features with
    UMAP to 2 dimensions before clustering (its CelebA configuration uses no
    reduction, k-means and overclustering; Waterbirds a GMM after a
    "hardness" projection); UMAP is not a dependency here, so ``reduction``
    offers PCA (or none). GEORGE's optional overclustering is not
    implemented. Silhouettes are computed on at most
    ``silhouette_samples`` rows of a class (the exact score is quadratic in
    the rows) and the clusterings are fitted on at most ``max_samples`` rows
    of a class, the others assigned to the nearest cluster; both draws are
    seeded.

    Published numbers: GEORGE's robust (worst-subclass) accuracy 76.2 ± 2.0
    (Waterbirds) and 54.9 ± 1.9 (CelebA) with Group DRO on its clusters
    (Sohoni et al., 2020, Table 2); the recovery of planted groups measured
    here is in ``docs/groups.rst``.

    Parameters
    ----------
    representation : {'features', 'logits', 'probabilities', 'gradients'}, default='features'
    estimator : classifier or None, default=None
        The reference model of the non-feature representations.
    n_clusters : int >= 2 or 'auto', default='auto'
        Clusters per class; 'auto' searches 2 ... ``max_clusters`` by silhouette.
    max_clusters : int >= 2, default=4
        Largest k of the search (capped per class at its rows minus one).
    method : {'kmeans', 'gmm'}, default='kmeans'
    reduction : {'pca'} or None, default=None
        Reduce the (standardised) representation to ``n_components`` first.
    n_components : int, default=2
    silhouette : {'cluster', 'global'}, default='cluster'
        GEORGE's per-cluster mean, or the mean over rows (SpuCo).
    n_init : int, default=3
        Restarts of each clustering (GEORGE's 3).
    max_samples : int, default=20000
        Rows of a class the clustering is fitted on.
    silhouette_samples : int, default=2000
        Rows of a class the silhouette is computed on.
    random_state : int, RandomState or None, default=None

    Attributes
    ----------
    classes_, labels_, n_groups_, n_groups_per_class_, group_names_, group_offsets_, group_counts_ :
        See :class:`BaseGroupInferrer`.
    estimator_ : fitted classifier or None
        The reference model (None for ``representation='features'``).
    clusterers_ : list
        The fitted clustering of each class.
    silhouette_scores_ : list of dict
        For each class, k -> silhouette (the searched values; the chosen k
        alone when ``n_clusters`` is an int).

    Examples
    --------
    >>> from skgroup.datasets import make_spurious_features
    >>> from skgroup.groups import ClusterInferrer
    >>> X, y, g = make_spurious_features(600, random_state=0)
    >>> inferrer = ClusterInferrer(representation="logits", random_state=0).fit(X, y)
    >>> inferrer.n_groups_per_class_.tolist()
    [2, 2]
    """

    _parameter_constraints = {
        "representation": [StrOptions(set(_REPRESENTATIONS))],
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_clusters": [Interval(Integral, 2, None, closed="left"), StrOptions({"auto"})],
        "max_clusters": [Interval(Integral, 2, None, closed="left")],
        "method": [StrOptions({"kmeans", "gmm"})],
        "reduction": [StrOptions({"pca"}), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "silhouette": [StrOptions({"cluster", "global"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [Interval(Integral, 2, None, closed="left")],
        "silhouette_samples": [Interval(Integral, 3, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, representation="features", *, estimator=None, n_clusters="auto", max_clusters=4,
                 method="kmeans", reduction=None, n_components=2, silhouette="cluster", n_init=3,
                 max_samples=20000, silhouette_samples=2000, random_state=None):
        self.representation = representation
        self.estimator = estimator
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.method = method
        self.reduction = reduction
        self.n_components = n_components
        self.silhouette = silhouette
        self.n_init = n_init
        self.max_samples = max_samples
        self.silhouette_samples = silhouette_samples
        self.random_state = random_state

    # -- representation --------------------------------------------------------------
    def _represent(self, X, y_enc, fitting):
        Z = representation(self.representation, X, y_enc, self.estimator_)
        if fitting:
            self.mean_ = Z.mean(axis=0)
            scale = Z.std(axis=0)
            scale[scale == 0] = 1.0
            standardize = self.representation in ("features", "gradients") or self.reduction
            self.scale_ = scale if standardize else np.ones_like(scale)
        Z = (Z - self.mean_) / self.scale_
        if self.reduction == "pca":
            if fitting:
                n = min(self.n_components, Z.shape[1], Z.shape[0])
                self.reducer_ = PCA(n_components=n, random_state=self._seed(3) % (2**31)).fit(Z)
            Z = self.reducer_.transform(Z)
        return Z

    def _clusterer(self, k, seed):
        if self.method == "gmm":
            return GaussianMixture(n_components=k, n_init=self.n_init, random_state=seed)
        return KMeans(n_clusters=k, n_init=self.n_init, random_state=seed)

    def _check_sizes(self, counts):
        name = type(self).__name__
        for c, n_c in enumerate(counts):
            label = _item(self.classes_[c])
            if self.n_clusters == "auto":
                if n_c < 3:
                    raise ValueError(
                        f"n_clusters='auto': class {label!r} has {n_c} row(s), fewer than the 3 a silhouette "
                        f"needs to compare two clusters; {name} cannot split it. Add rows of that class or pass "
                        "an integer n_clusters no larger than its rows."
                    )
            elif n_c < self.n_clusters:
                raise ValueError(
                    f"n_clusters={self.n_clusters}: class {label!r} has only {n_c} row(s), fewer rows than "
                    f"clusters. Lower n_clusters (at most {int(min(counts))}), or use n_clusters='auto'."
                )

    def _fit(self, X, y_enc):
        k_classes = self.classes_.shape[0]
        counts = np.bincount(y_enc, minlength=k_classes)
        self._check_sizes(counts)
        self.estimator_ = None if self.representation == "features" else self._reference(X, y_enc)
        Z = self._represent(X, y_enc, fitting=True)
        rng = np.random.default_rng(self._seed(5))
        within = np.zeros(y_enc.shape[0], dtype=np.int64)
        self.clusterers_, self.silhouette_scores_ = [], []
        for c in range(k_classes):
            rows = np.flatnonzero(y_enc == c)
            Zc = Z[rows]
            if np.all(np.ptp(Zc, axis=0) == 0):
                raise ValueError(
                    f"X: the rows of class {_item(self.classes_[c])!r} are identical in the clustered representation "
                    f"('{self.representation}'), so there is nothing to cluster; use another representation or "
                    "features that vary within the class."
                )
            threads = threadpool_limits(1) if Zc.size * self.max_clusters < _ONE_THREAD_WORK else _no_limit()
            with threads:
                within[rows] = self._cluster_class(Zc, rng)
        self.n_groups_per_class_ = np.array(
            [m.n_clusters if self.method == "kmeans" else m.n_components for m in self.clusterers_], dtype=np.int64)
        return y_enc, within

    def _cluster_class(self, Zc, rng):
        """Fit one class's clustering (k by silhouette unless given) on at most ``max_samples`` of its
        rows; the cluster of each of its rows."""
        fit = np.arange(Zc.shape[0])
        if fit.shape[0] > self.max_samples:
            fit = np.sort(rng.choice(fit.shape[0], size=self.max_samples, replace=False))
        Zfit = Zc[fit]
        seed = int(rng.integers(2**31 - 1))
        ks = [self.n_clusters] if self.n_clusters != "auto" else range(2, min(self.max_clusters, Zfit.shape[0] - 1) + 1)
        best, scores = None, {}
        for k in ks:
            model = self._clusterer(k, seed).fit(Zfit)
            overall, per_cluster = cluster_silhouettes(Zfit, model.predict(Zfit), self.silhouette_samples, rng)
            scores[k] = per_cluster if self.silhouette == "cluster" else overall
            if best is None or scores[k] > best[0]:
                best = (scores[k], model)
        self.clusterers_.append(best[1])
        self.silhouette_scores_.append(scores)
        return best[1].predict(Zc)

    def _predict(self, X, y_enc):
        Z = self._represent(X, y_enc, fitting=False)
        within = np.zeros(y_enc.shape[0], dtype=np.int64)
        for c, model in enumerate(self.clusterers_):
            rows = np.flatnonzero(y_enc == c)
            if rows.size:
                within[rows] = model.predict(Z[rows])
        return y_enc, within


class _no_limit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _item(value):
    return value.item() if hasattr(value, "item") else value
