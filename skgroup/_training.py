"""The one training loop every skgroup estimator plugs into.

An estimator chooses three things and calls :func:`train_head`:

* an objective (``skgroup._objectives``): how a batch's per-sample losses
  become the scalar to minimise;
* a sampler (``skgroup._samplers``): which rows an epoch visits, how often;
* an optimizer mode: ``'lbfgs'`` (full batch, for smooth objectives; each
  iteration sees every row once, so it ignores the sampler) or ``'adamw'`` /
  ``'sgd'`` (minibatches of the sampler's epoch, ``max_iter`` epochs, at a
  constant learning rate or annealed to zero by a per-step cosine,
  ``lr_schedule='cosine'``).

The objective minimised is ``objective(batch) + l2_reg / 2 * sum ||W||_F^2``
over the weight matrices (biases are not penalised): an L2 penalty in the
loss, which is what SGD's coupled ``weight_decay`` does in the papers'
reference code. For a linear softmax head with K outputs and mean
cross-entropy this is multinomial logistic regression with
``C = 1 / (l2_reg * n)`` for K > 2; for K = 2 the two rows share the
penalty and it equals scikit-learn's binary ``LogisticRegression`` with
``C = 2 / (l2_reg * n)``.

Memory: a float array of the training dtype is wrapped, not copied
(``torch.from_numpy``), read-only memory maps included; only minibatches are
copied (to the device).
"""

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

__all__ = ["TrainOptions", "TrainResult", "make_head", "train_head", "as_tensor"]


@dataclass
class TrainOptions:
    """Optimizer settings shared by every estimator (see the estimators' docs)."""

    solver: str = "lbfgs"
    hidden_layer_sizes: tuple = ()
    l2_reg: float = 1e-4
    max_iter: int = 100
    batch_size: object = "auto"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    tol: float = 1e-5
    device: str = "cpu"
    dtype: str = "float32"
    verbose: int = 0


@dataclass
class TrainResult:
    module: torch.nn.Module
    n_iter: int
    converged: bool
    loss_history: list = field(default_factory=list)


def resolve_batch_size(batch_size, n_samples):
    """``batch_size='auto'`` is ``min(1024, max(32, n_samples // 100))``.

    Epoch-based schedules need enough steps an epoch: about 100 where the data
    allows (32 rows or more a batch), and no batch above 1024. A minibatch
    loop on frozen features is overhead-bound at small batches
    (METHOD-NOTES: 0.35-0.45 ms a step at 128), so CelebA's 162,770 training
    rows get batch 1024.
    """
    if batch_size == "auto":
        return int(min(1024, max(32, n_samples // 100)))
    return int(batch_size)


def torch_dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def as_tensor(X, dtype):
    """Wrap X without a copy when its dtype is already ``dtype`` (memmaps too)."""
    np_dtype = np.dtype(str(dtype).replace("torch.", ""))
    if isinstance(X, np.ndarray) and X.dtype == np_dtype and X.flags.c_contiguous:
        with warnings.catch_warnings():
            # read-only memmaps: torch warns that writes would be undefined; we never write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(X)
    return torch.as_tensor(np.ascontiguousarray(X, dtype=np_dtype))


def make_head(n_features, n_classes, hidden_layer_sizes, dtype, generator):
    """Linear head, or an MLP with ReLU hidden layers.

    Weights are drawn from ``generator`` (never the global torch RNG); a
    linear head starts at zero, which makes full-batch L-BFGS fits exactly
    reproducible and is harmless for a convex objective.
    """
    sizes = [n_features, *hidden_layer_sizes, n_classes]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out, dtype=dtype)
        if len(sizes) == 2:
            torch.nn.init.zeros_(lin.weight)
        else:
            bound = 1.0 / math.sqrt(fan_in)
            torch.nn.init.uniform_(lin.weight, -bound, bound, generator=generator)
        torch.nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _l2(module):
    return sum((m.weight**2).sum() for m in module if isinstance(m, torch.nn.Linear))


def _progress(total, verbose, desc):
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, leave=False)


def train_head(
    X,
    y,
    n_classes,
    *,
    objective,
    options,
    sampler=None,
    seed=0,
    init=None,
    epoch_callback=None,
):
    """Fit a head on features X (numpy, any float dtype) and encoded labels y.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,), ints in [0, n_classes)
    objective : skgroup._objectives.Objective
    options : TrainOptions
    sampler : sampler or None
        Required by the minibatch solvers; ``None`` means every row once per
        epoch, shuffled. L-BFGS takes no sampler (weights go in the
        objective instead).
    seed : int
        Seeds the head's initialisation and the epochs' draws.
    init : torch.nn.Module, default=None
        Start from a copy of these weights (fine-tuning) instead of afresh.
    epoch_callback : callable(epoch, module), default=None
        Called after every minibatch epoch (analysis tools hook in here).

    Returns
    -------
    TrainResult
    """
    opts = options
    dtype = torch_dtype(opts.dtype)
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'.")
    generator = torch.Generator().manual_seed(int(seed))
    if init is not None:
        module = _copy_module(init, dtype)
    else:
        module = make_head(X.shape[1], n_classes, tuple(opts.hidden_layer_sizes), dtype, generator)
    module = module.to(device)
    objective.to(device, dtype)
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64)).to(device)

    if opts.solver == "lbfgs":
        if objective.online:
            raise ValueError(
                f"{type(objective).__name__} updates its state at every step and needs a "
                "minibatch solver: use solver='adamw' or 'sgd'."
            )
        if sampler is not None:
            raise ValueError(
                "solver='lbfgs' sees every row once per iteration and cannot follow a "
                "sampler: express the sampling as sample weights, or use solver='adamw'."
            )
        width = next(m.out_features for m in module if isinstance(m, torch.nn.Linear))
        with _threads_for_step(X.shape[0] * X.shape[1] * width, device):
            return _fit_lbfgs(X, y_t, module, objective, opts, dtype, device)
    return _fit_minibatch(
        X, y_t, module, objective, opts, dtype, device, sampler, seed, epoch_callback
    )


def _copy_module(init, dtype):
    return copy.deepcopy(init).to(dtype)


def _row_getter(X, dtype_name):
    """Rows of a batch as a tensor, without ever copying all of X."""
    np_dtype = np.dtype(dtype_name)
    if isinstance(X, np.ndarray) and X.dtype == np_dtype and X.flags.c_contiguous:
        X_t = as_tensor(X, np_dtype)
        return lambda b: X_t.index_select(0, b)
    return lambda b: torch.from_numpy(np.ascontiguousarray(X[b.numpy()], dtype=np_dtype))


def _fit_lbfgs(X, y_t, module, objective, opts, dtype, device):
    # scipy's L-BFGS-B over fused gradients (skgroup._lbfgs): for a linear head on the CPU
    # the two products with X run in numpy's BLAS and autograd sees only the logits
    from ._lbfgs import make_evaluator, minimize_lbfgs

    evaluator = make_evaluator(module, X, y_t, objective, opts.l2_reg, device=device, dtype=dtype)
    bar = _progress(opts.max_iter, opts.verbose, "L-BFGS iterations")

    def progress(n_iter, x, f):
        bar.update(1)
        bar.set_postfix(loss=f"{f:.5f}")

    result = minimize_lbfgs(
        evaluator.fun_grad, evaluator.pack_module(module), max_iter=opts.max_iter, tol=opts.tol,
        callback=progress if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    evaluator.unpack_module(result.x, module)
    if result.status == "non_finite":
        raise FloatingPointError(
            "The training loss became NaN/inf; scale the features (StandardScaler) "
            "or raise l2_reg."
        )
    if result.status == "max_iter":
        warnings.warn(
            f"L-BFGS reached max_iter={opts.max_iter} before the gradient fell under "
            f"tol={opts.tol}; raise max_iter (or scale the features) to converge.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return TrainResult(module.cpu(), result.n_iter, result.converged, result.loss_history)


# A step on frozen features is a few small matmuls: below this many
# multiply-adds a step (minibatch, or full batch for L-BFGS), intra-op threads
# cost more than they give, and on a busy 2-core machine torch's second thread
# made Group DRO epochs 30x and ERM's L-BFGS 3x slower.
_ONE_THREAD_WORK = 1 << 24


@contextlib.contextmanager
def _threads_for_step(work, device):
    if device.type != "cpu" or work >= _ONE_THREAD_WORK or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_minibatch(X, y_t, module, objective, opts, dtype, device, sampler, seed, callback):
    bs = resolve_batch_size(opts.batch_size, X.shape[0])
    width = next(m.out_features for m in module if isinstance(m, torch.nn.Linear))
    with _threads_for_step(bs * X.shape[1] * width, device):
        return _minibatch_loop(X, y_t, module, objective, opts, dtype, device, sampler, seed, callback, bs)


def _minibatch_loop(X, y_t, module, objective, opts, dtype, device, sampler, seed, callback, bs):
    from ._samplers import UniformSampler

    if sampler is None:
        sampler = UniformSampler(X.shape[0])
    rng = np.random.default_rng(int(seed))
    rows = _row_getter(X, opts.dtype)  # X stays on the host; batches move to the device
    params = list(module.parameters())
    if opts.solver == "adamw":
        optimizer = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=0.0)
    elif opts.solver == "sgd":
        optimizer = torch.optim.SGD(params, lr=opts.learning_rate, momentum=0.9)
    else:
        raise ValueError(f"solver must be 'lbfgs', 'adamw' or 'sgd'; got {opts.solver!r}.")
    if opts.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {opts.lr_schedule!r}.")
    bar = _progress(opts.max_iter, opts.verbose, "epochs")
    history = []
    step, total_steps = 0, None
    for epoch in range(opts.max_iter):
        order = torch.from_numpy(sampler.epoch(rng))
        if total_steps is None:  # samplers give epochs of a fixed length
            total_steps = opts.max_iter * math.ceil(order.shape[0] / bs)
        total, n_batches = 0.0, 0
        for start in range(0, order.shape[0], bs):
            if opts.lr_schedule == "cosine":
                lr = 0.5 * opts.learning_rate * (1 + math.cos(math.pi * step / total_steps))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            step += 1
            b = order[start : start + bs]
            xb = rows(b).to(device, non_blocking=True)
            b_dev = b.to(device)
            loss = objective(module(xb), y_t[b_dev], b_dev)
            if opts.l2_reg:
                loss = loss + 0.5 * opts.l2_reg * _l2(module)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            n_batches += 1
        objective.end_epoch()
        history.append(total / max(n_batches, 1))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(
                f"The training loss became NaN/inf in epoch {epoch + 1}; lower "
                "learning_rate, scale the features (StandardScaler) or raise l2_reg."
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.5f}")
        if callback is not None:
            callback(epoch, module)
    if bar is not None:
        bar.close()
    return TrainResult(module.cpu(), opts.max_iter, True, history)
