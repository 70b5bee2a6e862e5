"""Full-batch L-BFGS for softmax heads: scipy's L-BFGS-B driving fused gradients.

Two pieces, kept apart so that any engine can use them:

* :func:`minimize_lbfgs` drives ``fun_grad(x) -> (f, g)`` over a float64
  vector with scipy's L-BFGS-B (the driver scikit-learn's
  ``LogisticRegression`` uses) and a per-iteration callback;
* :class:`LinearHeadEvaluator` builds ``fun_grad`` for a linear head on
  CPU features: the two big products in numpy's BLAS, the objective on the
  (n, K) logits only. The engine (:class:`skgroup.engine.Trainer`) uses it
  for linear heads on arrays and autograd through the module otherwise
  (MLP heads, CUDA, loader batches, a stage penalty).

It minimises ``objective(logits, y, idx) + l2_reg / 2 * sum ||W||_F^2``
over the weight matrices (biases unpenalised), the objective of
:func:`skgroup.engine.train_head`.

Why it is built this way (the measurements behind each choice): ``docs/design.rst``,
"Speed: why index slicing, and why L-BFGS".
"""

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..objectives import Objective

__all__ = ["LBFGSResult", "minimize_lbfgs", "LinearHeadEvaluator", "is_linear_head", "product_with_rows"]

# scikit-learn's settings for L-BFGS-B in LogisticRegression: a loose line search
# budget (the default of 20 trial steps can fail near the optimum in float32) and
# an f-decrease stop only at rounding level, so the gradient test decides.
_MAX_LINE_SEARCH = 50
_FTOL = 64 * np.finfo(float).eps


@dataclass
class LBFGSResult:
    """Outcome of :func:`minimize_lbfgs`.

    ``status`` is one of 'converged' (largest gradient entry <= tol),
    'max_iter', 'callback' (the callback asked to stop), 'no_progress' (the
    objective stopped decreasing, or the line search found no acceptable step,
    typically at the rounding floor of float32 products, short of tol),
    'non_finite' (the objective or gradient became NaN/inf at a trial point;
    ``x`` is then the last finite iterate).
    """

    x: np.ndarray
    f: float
    grad_max: float
    n_iter: int
    n_eval: int
    converged: bool
    status: str
    message: str
    loss_history: list = field(default_factory=list)


class _NonFinite(Exception):
    pass


class _Stop(Exception):
    pass


def _call_with_threads(n, fn, *args):
    with _blas_threads(n):
        return fn(*args)


def minimize_lbfgs(fun_grad, x0, *, max_iter, tol, callback=None, history_size=20):
    """Minimise a smooth function with L-BFGS (scipy's L-BFGS-B, no bounds).

    Parameters
    ----------
    fun_grad : callable(x) -> (float, ndarray)
        Objective and gradient at a float64 vector ``x`` (the gradient may
        be any float dtype; it is used as float64).
    x0 : ndarray
        Start (copied, never written).
    max_iter : int
        Most L-BFGS iterations (an iteration is one accepted step; its line
        search may evaluate ``fun_grad`` several times, usually once).
    tol : float
        Stop when the largest absolute gradient entry is ``<= tol``
        (scipy's ``gtol``, scikit-learn's ``tol`` for ``lbfgs``). The run also
        ends, with ``converged=False``, when the objective no longer
        decreases relative to its size by more than 64 machine epsilons or the
        line search fails (status 'no_progress').
    callback : callable(n_iter, x, f) -> bool, optional
        Called after every iteration with its 1-based number, the iterate
        (a copy) and its objective; returning True stops the run (status
        'callback', ``x`` that iterate). Validation-based early stopping
        hooks in here.
    history_size : int, default=20
        Correction pairs kept (scipy's ``maxcor``). scikit-learn uses 10; 20
        (as the ``torch.optim.LBFGS`` setup this replaces) took 36 iterations
        instead of 48 on CelebA attributes, the same elsewhere.

    Returns
    -------
    LBFGSResult
        ``loss_history`` holds f at ``x0`` then after every iteration;
        ``n_eval`` counts calls of ``fun_grad``.
    """
    from scipy.optimize import minimize

    x0 = np.array(x0, dtype=np.float64, copy=True).ravel()
    history = []
    n_eval = 0
    n_iter = 0
    last = {}  # the latest finite evaluation: the accepted iterate when an iteration ends
    iterate = {}  # the latest accepted iterate (x, f)

    def fg(x):
        nonlocal n_eval
        n_eval += 1
        f, g = fun_grad(x)
        f = float(f)
        g = np.asarray(g, dtype=np.float64).ravel()
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            raise _NonFinite
        if not history:
            history.append(f)
            iterate.update(x=x.copy(), f=f)
        last.update(x=x.copy(), f=f, g=g)
        return f, g

    def scipy_callback(intermediate_result):
        # scipy >= 1.11 passes an OptimizeResult (x, fun); older versions the iterate alone
        nonlocal n_iter
        n_iter += 1
        x = np.array(getattr(intermediate_result, "x", intermediate_result), dtype=np.float64, copy=True)
        f = getattr(intermediate_result, "fun", None)
        f = float(f) if f is not None else _value_at(x)
        history.append(f)
        iterate.update(x=x, f=f)
        if callback is not None and _call_with_threads(caller_threads, callback, n_iter, x, f):
            raise _Stop

    def _value_at(x):
        return last["f"] if np.array_equal(last.get("x"), x) else float(fun_grad(x)[0])

    def grad_max_at(x):
        g = last["g"] if np.array_equal(last.get("x"), x) else np.asarray(fun_grad(x)[1], dtype=np.float64)
        return float(np.max(np.abs(g), initial=0.0))

    options = {
        "maxiter": int(max_iter),
        "maxfun": max(15000, _MAX_LINE_SEARCH * int(max_iter) + 1),
        "maxls": _MAX_LINE_SEARCH,
        "maxcor": int(history_size),
        "gtol": float(tol),
        "ftol": _FTOL,
    }
    # L-BFGS-B's own BLAS work is on vectors of the parameters' size: on a busy 2-core
    # machine its threads made a 3,000 x 200 fit 5-15x slower, so it runs on one, and
    # fun_grad gets back the setting of the caller (which may be a joblib worker's limit)
    caller_threads = _blas_threads_now()

    def result(x, f, status, message):
        grad_max = grad_max_at(x)
        converged = grad_max <= tol
        return LBFGSResult(
            x=x, f=f, grad_max=grad_max, n_iter=n_iter, n_eval=n_eval, converged=converged,
            status="converged" if converged and status != "non_finite" else status, message=message,
            loss_history=history,
        )

    try:
        with _blas_threads(1):
            res = minimize(lambda x: _call_with_threads(caller_threads, fg, x), x0, jac=True, method="L-BFGS-B",
                           callback=scipy_callback, options=options)
    except _Stop:
        return result(iterate["x"], iterate["f"], "callback", "The callback asked to stop.")
    except _NonFinite:
        if not iterate:
            raise FloatingPointError("The objective or its gradient is NaN/inf at the start point.") from None
        return result(iterate["x"], iterate["f"], "non_finite",
                      "The objective or its gradient became NaN/inf at a trial step; stopped at the last "
                      "finite iterate.")
    message = res.message if isinstance(res.message, str) else res.message.decode()
    x = np.asarray(res.x, dtype=np.float64)
    n_iter = int(res.nit)
    status = "max_iter" if n_iter >= max_iter else "no_progress"
    return result(x, float(res.fun), status, message)


# ---------------------------------------------------------------------------
# evaluators


# Below this many multiply-adds a product (or a training step), one thread: on a busy 2-core
# machine a 2-thread gemv on 3,000 x 200 floats waited ~14 ms for its second thread (a fit
# took 5.3 s against 0.13 s on one thread), and torch's second thread made Group DRO epochs
# 30x and L-BFGS 3x slower. The engine's thread policy (threads_for_step) reads it too.
_ONE_THREAD_WORK = 1 << 24

_blas = {}


def _blas_controller():
    if "controller" not in _blas:
        try:
            from threadpoolctl import ThreadpoolController

            _blas["controller"] = ThreadpoolController()  # ~20 ms to build: once a process
        except Exception:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _blas["controller"] = None
    return _blas["controller"]


def _blas_libs():
    """threadpoolctl's controllers of the BLAS libraries loaded (at the first call), kept for the process."""
    if "libs" not in _blas:
        controller = _blas_controller()
        _blas["libs"] = [] if controller is None else list(controller.select(user_api="blas").lib_controllers)
    return _blas["libs"]


def _blas_threads_now():
    return max((lib.num_threads for lib in _blas_libs()), default=None)


@contextlib.contextmanager
def _blas_threads(n):
    """BLAS (numpy's and scipy's) on ``n`` threads inside the block (None: unchanged).

    Set on the libraries' controllers directly, and not at all when they already run
    ``n`` threads: an L-BFGS fit enters this dozens of times, and threadpoolctl's
    ``limit`` (which re-reads every library's state) cost more than a small evaluation.
    """
    libs = _blas_libs()
    if n is None or not libs:
        yield
        return
    n = int(n)
    before = [lib.num_threads for lib in libs]
    if all(b == n for b in before):
        yield
        return
    for lib in libs:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, b in zip(libs, before):
            lib.set_num_threads(b)


@contextlib.contextmanager
def _torch_threads(n):
    """torch's intra-op pool at ``n`` threads inside the block, restored after."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows_view(X, dtype):
    """X as a C-ordered ndarray of ``dtype``: the same memory (memmaps too) when it already is."""
    dtype = np.dtype(dtype)
    if isinstance(X, np.ndarray) and X.dtype == dtype and X.flags.c_contiguous:
        return X
    return np.ascontiguousarray(X, dtype=dtype)


# Up to this many output columns a product runs as one matrix-vector product per
# column: OpenBLAS's sgemm with few columns runs far below the memory bandwidth of its
# sgemv (100,000 x 2,048: 87 ms for X @ W.T with 2 columns, 19 ms a gemv; 100,000 x 768,
# both products: gemv loops 0.4-0.9x the gemm time for 2-6 columns, 1.4x for 9).
_GEMV_MAX_COLUMNS = 6


def product_with_rows(X, V):
    """``X @ V.T`` (rows x r) in X's dtype, as r matrix-vector products when V has few rows.

    V is (r, n_features) in X's dtype. The result is a transposed view of an
    (r, rows) array when the products are matrix-vector ones.
    """
    r = V.shape[0]
    if r > _GEMV_MAX_COLUMNS or X.ndim != 2:
        return X @ V.T
    V = np.ascontiguousarray(V, dtype=X.dtype)
    out = np.empty((r, X.shape[0]), dtype=X.dtype)
    for k in range(r):
        np.matmul(X, V[k], out=out[k])
    return out.T

# One pass in row blocks of any separable objective only pays where reading X twice costs
# disk reads: a memory map that the page cache cannot hold. In RAM the second product
# of a block still in cache was not much faster (100,000 x 2,048, one thread: bare
# products 0.08-0.09 s a pass in 4 MB blocks against 0.10 s for two whole passes), and the
# per-block objective calls cost more than that (1M x 2,048: 2-32 MB blocks 1.1-1.4x two
# whole passes on one thread, 4-30x on two threads of a busy machine). Two classes under a
# linear reduction need a few calls a block only (_one_pass_binary): that pays on one thread.
_BLOCK_BYTES = 256 << 20


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


# The one-pass evaluation of two classes (LinearHeadEvaluator._one_pass_binary) reads X in
# blocks of at least this many bytes and rows: the block's backward product then finds it in
# the cache. One thread, 50,000 rows, both bare products: d = 384 two whole passes 9.4 ms, blocks
# of 0.8-1.5 MB 7.2 ms, 12 MB 8.6 ms; d = 2,048 32 ms against 26-27 ms in blocks of 4-8 MB. The
# floor of 1,024 rows keeps the per-block calls (a few microseconds each) a small share.
_FUSED_BLOCK_BYTES = 3 << 19
_FUSED_BLOCK_ROWS = 1024


# Rows over which the means and scales are taken (an evenly strided subset beyond): they
# only condition the problem. At 100,000 x 2,048 their 50,000 rows of 2^16 cost 5-10% of a
# fit of 8 iterations, 2^14 rows a third of an evaluation; 2^12 to 2^14 rows gave the same
# evaluation counts within the path-to-path spread (50,000 x 384 off-centre features, five
# draws: 39 and 40 evaluations on average for 2^14 and 2^12 rows).
_MEAN_ROWS = 1 << 13
# Standard errors within which a column's subset mean counts as zero (see LinearHeadEvaluator)
_MEAN_NOISE_SDS = 3.0


class LinearHeadEvaluator:
    """``fun_grad`` of a linear softmax head over CPU features, without autograd through X.

    Minimises ``objective(X @ W.T + b, y, idx) + l2_reg / 2 * ||W||_F^2``.
    The logits come from numpy's BLAS in the features' dtype (float32 products
    at full memory bandwidth), the objective and ``dL/dlogits`` from the
    (n, K) logits in float64 (accurate sums over n for the line search), and
    ``grad_W = dL/dlogits.T @ X`` from BLAS again. For an
    :class:`skgroup.objectives.Objective` of cross-entropy and any reduction
    (mean, weighted, CVaR) without penalties, the per-row losses and their
    gradients are computed without autograd, and only a reduction that is
    not linear (CVaR; see ``Reduction.row_weights``) goes through torch
    autograd; any other objective (another loss, penalties) is
    differentiated by autograd on the (n, K) logits. X is never copied when it is a C-ordered array of ``dtype`` (a
    read-only ``np.memmap`` included): products read it in place.

    The parameter vector is ``x = [(W * s).ravel() (K x d, row-major), b + W @ mu]``
    with ``mu`` the features' column means and ``s`` their standard
    deviations (``sqrt(var + 4 l2_reg)``, the square root of the Hessian's
    diagonal at zero weights up to a constant): the same objective and
    optimum in the coordinates of standardised features, a diagonal
    preconditioner for L-BFGS. Embedding features are often far from centred
    (non-negative activations), which couples the intercepts with the
    weights, and their columns differ in scale (iteration counts against
    ``LogisticRegression``: ``docs/design.rst``). Neither ``X - mu`` nor ``X / s`` is formed: the products use X, a rank-one
    correction and a rescaled W. Convert with :meth:`pack` / :meth:`unpack`
    (or :meth:`pack_module` / :meth:`unpack_module`). The gradient test of
    :func:`minimize_lbfgs` applies to this vector: the largest entry of
    ``dL/dW / s`` (the gradient for standardised features, independent of the
    features' units) and of ``dL/db``.

    Two properties of the objective make it cheaper; each is read from the
    objective's attribute of that name unless given:

    * ``softmax_only``: the objective sees the logits only through softmax
      (adding a constant to a row of logits changes nothing). Then only
      ``W[1:] - W[0]`` is multiplied with X: K - 1 products each way, one
      matrix-vector product for two classes.
    * ``separable``: the objective over all rows equals the size-weighted
      mean of its values over any split of the rows (a mean or weighted mean
      of per-row losses). Then X can be read once per evaluation, in row
      blocks, each block's backward product following its forward one
      (``block_bytes``); otherwise (CVaR's top-alpha mean) the forward product
      covers all rows before the objective sees them, and X is read twice.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : array-like of int of shape (n_samples,), classes in [0, n_classes)
    n_classes : int
    objective : callable(logits, y, idx) -> scalar tensor
        ``idx`` are the row indices of ``logits`` in X (per-row weights are
        looked up by them). Per-row state must live on the CPU.
    l2_reg : float
    dtype : numpy dtype, default=None
        Dtype of the products; None keeps X's float dtype. X is copied (once)
        only when it is not a C-ordered array of this dtype.
    center : bool, default=True
        Optimise the intercept of centred features (see above).
    scale : bool, default=True
        Optimise the weights of standardised features (see above).
    block_bytes : int, None or 'auto', default='auto'
        Row-block size of the one-pass mode for separable objectives; None
        reads X whole, twice. 'auto': blocks of 256 MiB for a ``np.memmap``
        larger than half the physical memory, else None.
    separable, softmax_only : bool or None
        Override the objective's attributes (None reads them; absent means False).
    idx : array-like of int, default=None
        The row indices the objective knows X's rows by (per-row weights are
        looked up by them), when X holds a subset of a stage's rows; None:
        ``arange(n_samples)``.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        The centring vector ``mu``: the column means, weighted by the
        objective's ``sample_weight`` when it has one, over every row up to
        8,192 rows and over an evenly strided subset of about as many beyond
        (float64; zeros with ``center=False``).
    scale_ : ndarray of shape (n_features,)
        The scales ``s``, from the same rows (ones with ``scale=False``).
    n_eval : int
        Evaluations so far.
    n_passes : float
        Reads of X so far (one or two per evaluation, a fraction for the means).
    """

    def __init__(self, X, y, n_classes, objective, l2_reg, *, dtype=None, center=True, scale=True,
                 block_bytes="auto", separable=None, softmax_only=None, idx=None):
        if dtype is None:
            dtype = X.dtype if getattr(X, "dtype", np.dtype("O")).kind == "f" else np.float64
        self.X = _rows_view(X, dtype)
        self.n, self.d = self.X.shape
        self.n_classes = int(n_classes)
        self.y = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y, dtype=np.int64))
        self.y = self.y.to("cpu", torch.int64)
        self.idx = torch.arange(self.n) if idx is None else torch.as_tensor(np.asarray(idx, dtype=np.int64))
        if self.idx.shape[0] != self.n:
            raise ValueError(f"idx has {self.idx.shape[0]} entries for {self.n} rows of X.")
        self.objective = objective
        self.l2_reg = float(l2_reg)
        self.separable = bool(getattr(objective, "separable", False) if separable is None else separable)
        # cross-entropy per row, then any reduction: the losses in numpy, autograd through the reduction
        self._per_row_cross_entropy = (
            isinstance(objective, Objective) and type(objective).__call__ is Objective.__call__
            and objective.per_row_cross_entropy
        )
        self._plain_reduce = self._per_row_cross_entropy and type(objective).reduce is Objective.reduce
        self.y_np = self.y.numpy()
        self._is_one = (self.y_np == 1).astype(np.float64)
        self.softmax_only = bool(getattr(objective, "softmax_only", False) if softmax_only is None else softmax_only)
        if block_bytes == "auto":
            ram = _physical_memory()
            big_map = isinstance(X, np.memmap) and ram is not None and self.X.nbytes > ram // 2
            block_bytes = _BLOCK_BYTES if big_map else None
        row_bytes = self.d * self.X.dtype.itemsize
        self.block_rows = self.n if block_bytes is None else max(1, int(block_bytes) // max(row_bytes, 1))
        self._fused_rows = max(_FUSED_BLOCK_ROWS, _FUSED_BLOCK_BYTES // max(row_bytes, 1))
        # a linear reduction's weights of every row, once: each evaluation then needs no autograd graph
        # (a tenth of a millisecond an evaluation) and no gather of per-row weights
        self._row_weights = (objective.reduction.row_weights(self.idx, self.n) if self._plain_reduce and self.n
                             else None)
        # two classes, cross-entropy, a mean or weighted mean: the one-pass evaluation applies
        self._binary_linear = self._row_weights is not None and self.softmax_only and self.n_classes == 2
        self.n_eval = 0
        self.n_passes = 0
        self._last = None  # (x, logits U over every row) of the latest evaluation that read X whole
        self.mean_ = np.zeros(self.d)
        self.scale_ = np.ones(self.d)
        if (center or scale) and self.n:
            # Any mu gives the same optimum, so beyond _MEAN_ROWS rows an evenly strided subset
            # (a view: BLAS reads it in place) estimates it at a fraction of a pass. The
            # objective's sample weights (if any) weight the mean, so that on smaller data
            # integer weights and repeated rows share the L-BFGS path exactly.
            step = -(-self.n // _MEAN_ROWS)
            weights = getattr(getattr(objective, "reduction", None), "sample_weight", None)
            if weights is not None and np.ndim(weights) == 1 and idx is not None:
                weights = np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=np.float64)[self.idx.numpy()]
            if weights is not None and tuple(np.shape(weights)) == (self.n,):
                weights = np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=np.float64)[::step]
            else:
                weights = np.ones(-(-self.n // step))
            total = weights.sum()
            weights = (weights / total if total > 0 else np.full(weights.shape, 1.0 / weights.size))
            rows = self.X[::step]
            weights = weights.astype(self.X.dtype)
            # the sums and the sums of squares in one read of the rows: a block's squares are taken
            # while it is in the cache (at d = 2,048 three reads of the rows had cost a third of an
            # evaluation)
            block = max(1, (2 << 20) // max(self.d * self.X.dtype.itemsize, 1))
            sums, sq = np.zeros(self.d), np.zeros(self.d)
            # huge finite features overflow the squares: the objective then reports the divergence
            with _blas_threads(1 if rows.shape[0] * self.d < _ONE_THREAD_WORK else None), \
                    np.errstate(over="ignore", invalid="ignore"):
                for start in range(0, rows.shape[0], block):
                    part, w_part = rows[start:start + block], weights[start:start + block]
                    sums += w_part @ part
                    if scale or step > 1:
                        sq += w_part @ (part * part)
                self.mean_ = sums
                if step > 1:
                    # a column whose subset mean is within noise of zero keeps mean 0: centring it by the
                    # estimate would offset it by the estimate's error, larger than its whole-data mean
                    # (centred 50,000 x 384 Gaussian features: 9 iterations against 8 uncentred, five draws)
                    m_eff = 1.0 / float(np.sum(weights.astype(np.float64) ** 2))
                    noise = np.sqrt(np.maximum(sq - sums**2, 0.0) / m_eff)
                    self.mean_ = np.where(np.abs(sums) > _MEAN_NOISE_SDS * noise, sums, 0.0)
                if scale:
                    # the diagonal of the Hessian at zero weights, up to a constant factor
                    self.scale_ = np.sqrt(np.maximum(sq - self.mean_**2, 0.0) + 4 * self.l2_reg)
                    self.scale_[self.scale_ == 0] = 1.0  # constant features without a penalty
            if not center:
                self.mean_ = np.zeros(self.d)
            self.n_passes += 1 / step

    @property
    def n_params(self):
        return self.n_classes * (self.d + 1)

    # -- parameter vector --------------------------------------------------
    def pack(self, W, b):
        """Flat float64 vector of weights (K, d) and biases (K,)."""
        W = np.asarray(W, dtype=np.float64).reshape(self.n_classes, self.d)
        b = np.asarray(b, dtype=np.float64).ravel()
        return np.concatenate([(W * self.scale_).ravel(), b + W @ self.mean_])

    def unpack(self, x):
        """Weights (K, d) (a view of x) and biases (K,) of a flat vector."""
        x = np.asarray(x, dtype=np.float64)
        k = self.n_classes * self.d
        W = x[:k].reshape(self.n_classes, self.d) / self.scale_
        return W, x[k:] - W @ self.mean_

    def pack_module(self, module):
        lin = _single_linear(module)
        return self.pack(lin.weight.detach().cpu().double().numpy(), lin.bias.detach().cpu().double().numpy())

    def unpack_module(self, x, module):
        lin = _single_linear(module)
        W, b = self.unpack(x)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
            lin.bias.copy_(torch.from_numpy(b))
        return module

    # -- products ------------------------------------------------------------
    def _forward(self, Xb, V):
        """Xb @ V.T (rows x r) in X's dtype."""
        return product_with_rows(Xb, V)

    def _logits(self, Xb, V, c, zero):
        """float64 logits Xb @ V.T + c (relative to class 0's when softmax_only)."""
        if zero:
            return np.broadcast_to(c, (Xb.shape[0], V.shape[0])).copy()
        out = np.empty((Xb.shape[0], V.shape[0]))
        return np.add(self._forward(Xb, V), c, out=out)  # the conversion to float64 in the same pass

    def _backward(self, dU, Xb):
        """dU.T @ Xb (r x d) as float64; dU of shape (rows, r)."""
        r = dU.shape[1]
        dU = np.ascontiguousarray(dU.T, dtype=Xb.dtype)  # rows of dU.T: contiguous vectors for gemv
        if r > _GEMV_MAX_COLUMNS:
            return (dU @ Xb).astype(np.float64)
        return np.stack([dU[k] @ Xb for k in range(r)]).astype(np.float64)

    def _objective_grad(self, U, rows):
        """Objective and its gradient w.r.t. U (float64, shape (m, r)) on ``rows``."""
        if self._per_row_cross_entropy:
            return self._reduced_cross_entropy_grad(U, rows)
        U_t = torch.from_numpy(U).requires_grad_(True)
        if self.softmax_only:
            logits = torch.cat([torch.zeros((U.shape[0], 1), dtype=U_t.dtype), U_t], dim=1)
        else:
            logits = U_t
        loss = self.objective(logits, self.y[rows], self.idx[rows])
        (grad,) = torch.autograd.grad(loss, U_t)
        return float(loss.detach()), grad.numpy()

    def _reduced_cross_entropy_grad(self, U, rows):
        """The objective's cross-entropy per row and its derivative by hand, autograd through its reduction only.

        torch's cross_entropy under autograd on (n, 2) float64 logits took ~100 ns a row
        forward and backward, five times the products' work at d = 38. The losses and
        softmax probabilities here come from torch's vectorised elementwise kernels without
        autograd (~14 ns a row for two classes, against ~36 ns for the same formulas as
        numpy ufuncs, whose exp and log1p are not vectorised for float64 on AVX2).
        """
        y = self.y[rows]
        Z = torch.from_numpy(U)
        if self.softmax_only and U.shape[1] == 1:  # two classes: logits (0, u)
            u, is_one = Z[:, 0], torch.from_numpy(self._is_one[rows])
            # log(1 + e^u) - u [y = 1], by the stable formula; d/du = sigmoid(u) - [y = 1]
            losses = F.binary_cross_entropy_with_logits(u, is_one, reduction="none")
            dlogit = torch.sigmoid(u).sub_(is_one)[:, None]
        else:
            if self.softmax_only:
                Z = torch.cat([torch.zeros((Z.shape[0], 1), dtype=Z.dtype), Z], dim=1)
            log_p = torch.log_softmax(Z, dim=1)
            losses = log_p.gather(1, y[:, None])[:, 0].neg_()
            P = log_p.exp_()  # softmax; minus the one-hot labels: d loss / d logits
            P.scatter_add_(1, y[:, None], torch.full((P.shape[0], 1), -1.0, dtype=P.dtype))
            dlogit = P[:, 1:] if self.softmax_only else P
        if self._row_weights is not None:  # a mean or weighted mean: no autograd
            weight = self._row_weights[rows]
            if losses.shape[0] != self.n:  # a block's own mean, which fun_grad weighs by its share of the rows
                weight = weight * (self.n / losses.shape[0])
            value = weight @ losses
        else:
            losses.requires_grad_(True)
            value = self.objective.reduce(losses, self.idx[rows])
            (weight,) = torch.autograd.grad(value, losses)
        return float(value.detach()), (dlogit * weight[:, None]).numpy()

    def predictions_at(self, x):
        """Encoded class predictions of every row at the flat vector ``x`` from the logits of the latest
        evaluation, when it was at ``x`` and read X whole (else None): L-BFGS ends at its last evaluated
        point, so a fit's predictions on its training rows cost no further pass over X."""
        if self._last is None or not np.array_equal(self._last[0], x):
            return None
        U = self._last[1]
        if not self.softmax_only:
            return U.argmax(axis=1)
        if U.shape[1] == 1:  # logits (0, u): as argmax, ties to class 0
            return (U[:, 0] > 0).astype(np.intp)
        return np.where(U.max(axis=1) > 0, U.argmax(axis=1) + 1, 0)

    def _one_pass_binary(self, v, c):
        """Objective and gradient for two classes under a linear reduction of cross-entropies, reading X once.

        Each row's derivative ``w_i (sigmoid(u_i) - [y_i = 1])`` depends on that row alone, so a block's
        backward product follows its forward one while the block is in the cache; the losses, which
        the gradient does not need, are taken over all rows after the pass. ``v``: ``W[1] - W[0]`` (d,)
        in X's dtype; ``c``: the logit offset. Returns (f, logits U (n, 1), dL/dv (1, d), dL/dc (1,)).
        """
        n, X, w, is_one = self.n, self.X, self._row_weights.numpy(), self._is_one
        U = np.empty(n)
        g = np.zeros(self.d)
        gc = 0.0
        for start in range(0, n, self._fused_rows):
            rows = slice(start, min(start + self._fused_rows, n))
            Xb, u = X[rows], U[rows]
            np.add(Xb @ v, c, out=u)
            r = torch.sigmoid(torch.from_numpy(u)).numpy()  # torch's kernel: a third of scipy's expit's time
            r -= is_one[rows]
            r *= w[rows]
            gc += r.sum()
            g += r.astype(X.dtype) @ Xb
        losses = F.binary_cross_entropy_with_logits(torch.from_numpy(U), torch.from_numpy(is_one), reduction="none")
        return float(torch.from_numpy(w) @ losses), U[:, None], g[None], np.array([gc])

    # -- objective -------------------------------------------------------------
    def fun_grad(self, x):
        """Objective and gradient at the flat float64 vector ``x``."""
        self.n_eval += 1
        x = np.asarray(x, dtype=np.float64)
        k = self.n_classes * self.d
        W, beta = x[:k].reshape(self.n_classes, self.d) / self.scale_, x[k:]
        if self.softmax_only:  # logits relative to class 0's
            V, c = W[1:] - W[0], beta[1:] - beta[0]
        else:
            V, c = W, beta
        c = c - V @ self.mean_  # logits = X @ V.T + c, the centring as a shift
        V = np.ascontiguousarray(V, dtype=self.X.dtype)
        n = self.n
        # the logits' work is n x K elementwise: torch's second thread would only
        # contend with BLAS's threads for the cores
        small = n * self.d * V.shape[0] < _ONE_THREAD_WORK
        zero = not V.any()  # the usual start: its logits need no pass over X
        with _torch_threads(1), _blas_threads(1 if small else None):
            if (self._binary_linear and not zero and n > self._fused_rows and self.block_rows >= n
                    and (small or _blas_threads_now() == 1)):
                # on one thread a pass is bound by one core's memory bandwidth: one read of X instead of
                # two. Several threads read whole passes faster than they share small blocks' products
                f, U, gV, gc = self._one_pass_binary(V[0], c[0])
                self._last = (x.copy(), U)
                self.n_passes += 1
            elif self.separable and self.block_rows < n:
                self._last = None
                f, gV, gc = 0.0, np.zeros(V.shape), np.zeros(V.shape[0])
                for start in range(0, n, self.block_rows):
                    rows = slice(start, min(start + self.block_rows, n))
                    Xb = self.X[rows]
                    U = self._logits(Xb, V, c, zero)
                    val, dU = self._objective_grad(U, rows)
                    share = Xb.shape[0] / n  # the objective is a mean over the block
                    f += share * val
                    dU *= share
                    gV += self._backward(dU, Xb)
                    gc += dU.sum(axis=0)
                self.n_passes += 1
            else:
                U = self._logits(self.X, V, c, zero)
                self._last = (x.copy(), U)
                f, dU = self._objective_grad(U, slice(None))
                gV = self._backward(dU, self.X)
                gc = dU.sum(axis=0)
                self.n_passes += 1 if zero else 2
        gV -= np.outer(gc, self.mean_)
        if self.softmax_only:
            gW = np.empty_like(W)
            gW[1:], gW[0] = gV, -gV.sum(axis=0)
            gb = np.concatenate([[-gc.sum()], gc])
        else:
            gW, gb = gV, gc
        if self.l2_reg:
            f += 0.5 * self.l2_reg * float(np.vdot(W, W))
            gW = gW + self.l2_reg * W
        return f, np.concatenate([(gW / self.scale_).ravel(), gb])


def _single_linear(module):
    if isinstance(module, torch.nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    others = [m for m in module.children() if not isinstance(m, torch.nn.Linear)] if len(linears) == 1 else []
    if len(linears) != 1 or others:
        raise ValueError("LinearHeadEvaluator needs a head with exactly one torch.nn.Linear layer.")
    return linears[0]


def is_linear_head(module):
    """Whether ``module`` is one ``torch.nn.Linear`` layer (alone or in a Sequential)."""
    try:
        _single_linear(module)
    except ValueError:
        return False
    return True
