"""Spectral imbalance of group feature covariances (LaBonte et al., 2023, Sec. 5).

LaBonte, Hill, Zhang, Muthukumar & Kumar ("The Group Robustness is in the
Details: Revisiting Finetuning under Spurious Correlations", NeurIPS 2023)
compare, for each group g, the covariance of its features (Eq. 2)

.. math:: \\Sigma_g = \\mathbb{E}\\left[(x - \\mu_g)(x - \\mu_g)^\\top \\mid x \\in g\\right]

and find that, *once conditioned on the class*, the minority group's
covariance has the larger spectral norm. Their intra-class spectral norm
ratio is

.. math:: \\rho(y) = \\lambda_1(\\Sigma_{g_{\\min}(y)}) \\,/\\, \\lambda_1(\\Sigma_{g_{\\maj}(y)})

with g_min(y) / g_maj(y) the smallest / largest group among the samples of
class y. rho(y) > 1 means the minority group of class y is spread more
along its top direction than the majority group.

Implementation: one pass over X in row chunks (a memory-mapped X is never
read whole) accumulates each group's mean and centred scatter matrix with
the pairwise update of Chan, Golub & LeVeque (exact, no cancellation from
``E[xx^T] - mu mu^T``); the top eigenvalues then come from ``scipy.linalg.eigh``.
For wide features (d > 4096 by default) a d x d matrix per group is too big,
and ``solver='randomized'`` runs block subspace iteration on the implicit
covariance instead (a few passes over X, memory O(d * k) per group).
Covariances are normalised by the group size n_g (the expectation of
Eq. 2), not n_g - 1.
"""

import warnings
from numbers import Integral

import numpy as np
import scipy.linalg
from sklearn.utils import check_random_state

from .._groups import check_group_labels
from ..utils._tables import make_table, table_columns

__all__ = ["group_spectra", "spectral_imbalance", "intra_class_spectral_ratio"]

_AUTO_MAX_DIM = 4096


def _check_X(X):
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {tuple(shape)}.")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"X is empty (shape {tuple(shape)}).")
    return X


def _chunks(X, chunk_size):
    for start in range(0, X.shape[0], chunk_size):
        block = np.asarray(X[start : start + chunk_size], dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError(
                f"X holds NaN or infinite values (in rows {start}-{start + block.shape[0] - 1})."
            )
        yield start, block


def _cells(n, group_labels, y):
    """Boolean cell matrix: one column per group, or per (class, group) with y."""
    membership = check_group_labels(group_labels, n)
    if y is None:
        return membership.matrix, [(None, g) for g in membership.names]
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), one label per row of X; got {y.shape}.")
    classes, y_idx = np.unique(y, return_inverse=True)
    cols, keys = [], []
    for c, cls in enumerate(classes):
        in_class = y_idx.ravel() == c
        for j, g in enumerate(membership.names):
            col = in_class & membership.matrix[:, j]
            if col.any():
                cols.append(col)
                keys.append((cls.item() if hasattr(cls, "item") else cls, g))
    return np.column_stack(cols), keys


def _exact_spectra(X, cells, k, chunk_size):
    d = X.shape[1]
    n_cells = cells.shape[1]
    counts = np.zeros(n_cells, dtype=np.int64)
    means = np.zeros((n_cells, d))
    scatter = [None] * n_cells
    syrk = scipy.linalg.blas.dsyrk
    for start, block in _chunks(X, chunk_size):
        cb = cells[start : start + block.shape[0]]
        for c in range(n_cells):
            rows = cb[:, c]
            nb = int(rows.sum())
            if nb == 0:
                continue
            xb = block[rows]
            mb = xb.mean(axis=0)
            xb -= mb
            # upper triangle of xb^T xb: half the flops of a full product
            m2b = syrk(1.0, xb.T, trans=0, lower=0)  # xb.T is Fortran-ordered: no copy
            na = counts[c]
            if na == 0:
                scatter[c], means[c] = m2b, mb
            else:
                delta = mb - means[c]
                tot = na + nb
                scatter[c] += m2b
                scatter[c] += np.outer(delta, delta) * (na * nb / tot)
                means[c] += delta * (nb / tot)
            counts[c] += nb
    eig = np.full((n_cells, k), np.nan)
    for c in range(n_cells):
        if counts[c] == 0:
            continue
        cov = np.triu(scatter[c]) / counts[c]
        cov = cov + np.triu(cov, 1).T
        vals = scipy.linalg.eigh(cov, eigvals_only=True, subset_by_index=[d - k, d - 1])
        eig[c] = vals[::-1]
        scatter[c] = None
    return counts, eig


def _randomized_spectra(X, cells, k, chunk_size, n_oversamples, n_iter, random_state):
    d = X.shape[1]
    n_cells = cells.shape[1]
    counts = np.zeros(n_cells, dtype=np.int64)
    sums = np.zeros((n_cells, d))
    for start, block in _chunks(X, chunk_size):
        cb = cells[start : start + block.shape[0]]
        counts += cb.sum(axis=0)
        sums += cb.T.astype(np.float64) @ block
    means = sums / np.maximum(counts, 1)[:, None]
    width = min(k + n_oversamples, d)
    rng = check_random_state(random_state)
    Q = [np.linalg.qr(rng.standard_normal((d, width)))[0] for _ in range(n_cells)]

    def apply_cov():
        # Y_c = sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T Q_c for every cell in one
        # pass, without copying group rows: with Z = (X Q_c - 1 mu_c^T Q_c) masked
        # to the cell's rows, Y_c = X^T Z - mu_c (1^T Z).
        Q_all = np.hstack(Q)
        shift = np.concatenate([means[c] @ Q[c] for c in range(n_cells)])
        Y_all = np.zeros((d, n_cells * width))
        col_sums = np.zeros(n_cells * width)
        for start, block in _chunks(X, chunk_size):
            cb = cells[start : start + block.shape[0]]
            Z = block @ Q_all - shift
            Z *= np.repeat(cb, width, axis=1)
            Y_all += block.T @ Z
            col_sums += Z.sum(axis=0)
        Y_all -= np.repeat(means.T, width, axis=1) * col_sums
        return [Y_all[:, c * width : (c + 1) * width] for c in range(n_cells)]

    for _ in range(n_iter):
        Y = apply_cov()
        Q = [np.linalg.qr(y)[0] for y in Y]
    Y = apply_cov()
    eig = np.full((n_cells, k), np.nan)
    for c in range(n_cells):
        if counts[c] == 0:
            continue
        B = Q[c].T @ Y[c] / counts[c]
        vals = np.linalg.eigvalsh((B + B.T) / 2)[::-1]
        eig[c] = vals[:k]
    return counts, eig


def group_spectra(
    X,
    group_labels,
    *,
    y=None,
    n_components=10,
    solver="auto",
    chunk_size=8192,
    n_oversamples=30,
    n_iter=8,
    random_state=0,
):
    """Top eigenvalues of each group's feature covariance (LaBonte et al., Eq. 2).

    Parameters
    ----------
    X : array-like or memory map of shape (n_samples, n_features)
        Read in chunks of ``chunk_size`` rows (float64 arithmetic).
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
    y : array-like of shape (n_samples,), default=None
        If given, one covariance per (class, group) cell that holds samples
        (the class-conditional view of LaBonte et al.).
    n_components : int, default=10
        Eigenvalues kept per group (at most n_features).
    solver : {'auto', 'exact', 'randomized'}, default='auto'
        'exact': d x d covariance per group, ``eigh`` for the top
        ``n_components``. 'randomized': block subspace iteration with
        Rayleigh-Ritz (``n_iter`` + 2 passes over X, memory O(d (k + p)) per
        group). Its eigenvalues are lower bounds of the exact ones; they are
        close when the spectrum decays (pretrained embeddings), and can fall a
        few percent short on a flat spectrum (raise ``n_iter`` /
        ``n_oversamples``). 'auto': 'exact' up to 4096 features (a d x d
        float64 matrix per group: 134 MB at d = 4096), else 'randomized'.
    chunk_size : int, default=8192
    n_oversamples, n_iter : int, default=30, 8
        Only for 'randomized'.
    random_state : int or None, default=0
        Only for 'randomized'.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per (group, rank): ``class`` (only with y), ``group``,
        ``n_samples``, ``rank`` (1 = largest), ``eigenvalue``.
    """
    X = _check_X(X)
    n, d = X.shape
    if not isinstance(n_components, Integral) or n_components < 1:
        raise ValueError(f"n_components must be a positive int; got {n_components!r}.")
    if solver not in ("auto", "exact", "randomized"):
        raise ValueError(f"solver must be 'auto', 'exact' or 'randomized'; got {solver!r}.")
    if not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
    k = int(min(n_components, d))
    cells, keys = _cells(n, group_labels, y)
    if solver == "auto":
        solver = "exact" if d <= _AUTO_MAX_DIM else "randomized"
    if solver == "exact":
        counts, eig = _exact_spectra(X, cells, k, int(chunk_size))
    else:
        counts, eig = _randomized_spectra(
            X, cells, k, int(chunk_size), int(n_oversamples), int(n_iter), random_state
        )
    eig = np.where(eig < 0, 0.0, eig)  # round-off of a PSD matrix
    empty = [key[1] for key, c in zip(keys, counts) if c == 0]
    if empty:
        warnings.warn(f"Groups {empty} have no samples and are left out.", UserWarning, stacklevel=2)
    tiny = [key[1] for key, c in zip(keys, counts) if c == 1]
    if tiny:
        warnings.warn(
            f"Groups {tiny} have a single sample: their covariance is 0.", UserWarning, stacklevel=2
        )
    cols = {"class": [], "group": [], "n_samples": [], "rank": [], "eigenvalue": []}
    for (cls, g), c, vals in zip(keys, counts, eig):
        if c == 0:
            continue
        for r, v in enumerate(vals, start=1):
            cols["class"].append(cls)
            cols["group"].append(g)
            cols["n_samples"].append(int(c))
            cols["rank"].append(r)
            cols["eigenvalue"].append(float(v))
    if y is None:
        del cols["class"]
    return make_table(cols)


def intra_class_spectral_ratio(spectra):
    """rho(y) from a class-conditional :func:`group_spectra` table (with ``y``).

    For each class y: the minority / majority group is the smallest / largest
    group among the samples of class y, and
    ``rho = lambda_1(minority) / lambda_1(majority)``. rho is NaN (with a
    warning) when a class holds a single group, when all its groups have the
    same size, or when the majority's lambda_1 is 0.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per class: ``class``, ``minority_group``, ``majority_group``,
        ``n_minority``, ``n_majority``, ``lambda1_minority``,
        ``lambda1_majority``, ``rho``.
    """
    cols = table_columns(
        spectra, ("class", "group", "n_samples", "rank", "eigenvalue"), name="spectra"
    )
    top = cols["rank"] == 1
    cls_col, grp, cnt, lam = (cols[k][top] for k in ("class", "group", "n_samples", "eigenvalue"))
    out = {k: [] for k in ("class", "minority_group", "majority_group", "n_minority",
                           "n_majority", "lambda1_minority", "lambda1_majority", "rho")}
    for cls in np.unique(cls_col):
        sel = np.flatnonzero(cls_col == cls)
        sizes = cnt[sel]
        i_min, i_max = sel[np.argmin(sizes)], sel[np.argmax(sizes)]
        rho = np.nan
        if sel.size < 2:
            warnings.warn(
                f"Class {cls!r} holds a single group: rho is undefined (NaN).", UserWarning, stacklevel=2
            )
        elif sizes.min() == sizes.max():
            warnings.warn(
                f"The groups of class {cls!r} all have {sizes.min()} samples: no minority "
                "group, rho is undefined (NaN).",
                UserWarning,
                stacklevel=2,
            )
        elif lam[i_max] <= 0:
            warnings.warn(
                f"The majority group of class {cls!r} has a zero covariance: rho is NaN.",
                UserWarning,
                stacklevel=2,
            )
        else:
            rho = float(lam[i_min] / lam[i_max])
        for key, val in zip(out, (cls, grp[i_min], grp[i_max], int(cnt[i_min]), int(cnt[i_max]),
                                  float(lam[i_min]), float(lam[i_max]), rho)):
            out[key].append(val)
    return make_table(out)


def spectral_imbalance(X, y, *, group_labels, n_components=10, return_spectra=False, **kwargs):
    """Intra-class spectral norm ratio rho(y) of LaBonte et al. (2023, Sec. 5).

    Computes the class-conditional group spectra (:func:`group_spectra`
    with ``y``; further keyword arguments go there) and, per class,
    rho(y) = lambda_1(minority group in y) / lambda_1(majority group in y)
    (:func:`intra_class_spectral_ratio`).

    Returns
    -------
    rho : DataFrame or dict of columns
        One row per class (see :func:`intra_class_spectral_ratio`).
    spectra : DataFrame or dict of columns
        Only with ``return_spectra=True``: the (class, group, rank) eigenvalues.
    """
    spectra = group_spectra(X, group_labels, y=y, n_components=n_components, **kwargs)
    rho = intra_class_spectral_ratio(spectra)
    return (rho, spectra) if return_spectra else rho
