"""Analyses that watch training: the CVaR worst-alpha set over epochs, and
JTT's dynamic error-set ablation.

Both run on the training engine (:func:`skgroup.engine.train_head`) with an
:class:`~skgroup.engine.EpochCallback`; neither changes an estimator.

* JTT (Liu et al., ICML 2021), Fig. 4: CVaR DRO trains on the worst
  alpha-fraction of losses, a set that it recomputes at every step. Its
  composition by group over training shows whether that set actually holds
  the worst group, or keeps changing to whatever the current model gets
  wrong.
* JTT, Table 6: JTT fixes its error set once, from the identification
  model. The ablation recomputes the error set from the *current* final
  model every K epochs and compares worst-group and average accuracy with
  the static error set.
"""

import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_array

from .._groups import check_group_labels
from ..objectives import CVaR, Objective, cvar_of_losses
from .._samplers import RepeatSampler, UniformSampler
from ..engine import (
    EpochCallback,
    TrainOptions,
    as_tensor,
    resolve_batch_size,
    torch_dtype,
    train_head,
)
from ._error_set import error_set_analysis
from ..utils._tables import make_table, table_columns

__all__ = [
    "worst_alpha_mask",
    "worst_set_composition",
    "cvar_set_composition",
    "jtt_error_set_ablation",
]

_TRAIN_DEFAULTS = {
    "solver": "adamw",
    "l2_reg": 1e-4,
    "learning_rate": 1e-3,
    "batch_size": 128,
    "max_iter": 10,
    "hidden_layer_sizes": (),
    "device": "cpu",
    "dtype": "float32",
    "random_state": 0,
}


def worst_alpha_mask(losses, alpha):
    """Rows in the support of CVaR_alpha: the ceil(alpha * n) largest losses.

    These are the rows with a positive weight in
    :func:`skgroup.objectives.cvar_of_losses` (the top floor(alpha n) fully,
    the next one fractionally). Ties are broken by row order.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty 1-D array; got shape {losses.shape}.")
    if not isinstance(alpha, Real) or not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha!r}.")
    n = losses.shape[0]
    m = min(n, max(1, math.ceil(alpha * n - 1e-9)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-losses, kind="stable")[:m]] = True
    return mask


def worst_set_composition(losses, group_labels, *, alpha):
    """Group composition of the worst alpha-fraction of ``losses``.

    The same columns as :func:`error_set_analysis` with the worst-alpha set
    as the error set: ``precision`` is the fraction of the set from each
    group.
    """
    return error_set_analysis(worst_alpha_mask(losses, alpha), group_labels)


def _settings(estimator, overrides, extra_defaults, n_samples):
    settings = {**_TRAIN_DEFAULTS, **extra_defaults}
    if estimator is not None:
        params = estimator.get_params(deep=False)
        settings.update({k: params[k] for k in settings if k in params})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["batch_size"] = resolve_batch_size(settings["batch_size"], n_samples)
    if settings["solver"] not in ("adamw", "sgd"):
        raise ValueError(
            f"This analysis follows training epoch by epoch and needs a minibatch solver; "
            f"got solver={settings['solver']!r}: use solver='adamw' or 'sgd'."
        )
    rs = settings["random_state"]
    if not isinstance(rs, Integral):
        raise ValueError(f"random_state must be an int here (for a reproducible analysis); got {rs!r}.")
    for key in ("max_iter", "batch_size"):
        if not isinstance(settings[key], Integral) or settings[key] < 1:
            raise ValueError(f"{key} must be a positive int; got {settings[key]!r}.")
    settings["hidden_layer_sizes"] = tuple(int(h) for h in np.atleast_1d(settings["hidden_layer_sizes"]))
    options = TrainOptions(
        solver=settings["solver"],
        l2_reg=float(settings["l2_reg"]),
        max_iter=int(settings["max_iter"]),
        batch_size=int(settings["batch_size"]),
        learning_rate=float(settings["learning_rate"]),
        device=settings["device"],
        dtype=settings["dtype"],
    )
    return settings, options


def _check_xy(X, y, dtype):
    X = check_array(X, dtype=[np.float32, np.float64], input_name="X")
    if X.dtype != np.dtype(dtype):
        X = X.astype(dtype)
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), one label per row of X; got {y.shape}.")
    classes, y_enc = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError("y holds a single class: there is nothing to classify.")
    return X, classes, y_enc.ravel()


@torch.no_grad()
def _forward(module, X, options, chunk=65536):
    """Logits of all rows, in chunks, on the training device; returns numpy."""
    dtype = torch_dtype(options.dtype)
    device = torch.device(options.device)
    out = []
    for start in range(0, X.shape[0], chunk):
        xb = as_tensor(X[start : start + chunk], dtype).to(device)
        out.append(module(xb).double().cpu())
    return torch.cat(out).numpy()


def _losses(logits, y_enc):
    return F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_enc), reduction="none").numpy()


def cvar_set_composition(
    X,
    y,
    *,
    group_labels,
    alpha=None,
    estimator=None,
    set_alpha=None,
    solver=None,
    l2_reg=None,
    learning_rate=None,
    batch_size=None,
    max_iter=None,
    hidden_layer_sizes=None,
    random_state=None,
    return_sets=False,
):
    """Group composition of CVaR DRO's worst-alpha set after each training epoch (JTT, Fig. 4).

    Trains a CVaR DRO head (objective: the mean of the worst alpha-fraction
    of each minibatch's losses, :class:`skgroup.objectives.CVaR`) with
    a minibatch solver. After every epoch it computes the loss of every
    training row and takes the rows in the top ``set_alpha`` fraction over
    the whole training set (:func:`worst_alpha_mask`); the table gives that
    set's composition by group.

    Parameters
    ----------
    X, y : training data.
    group_labels : array-like of shape (n_samples,) or (n_samples, n_groups)
        Only used for the composition, never in training.
    alpha : float in (0, 1], default=None
        CVaR level of training. None: ``estimator.alpha`` if the estimator
        has one, else 0.1.
    estimator : skgroup head classifier, default=None
        Unfitted estimator (e.g. a CVaRClassifier) whose parameters
        (``alpha``, ``solver``, ``l2_reg``, ``learning_rate``, ``batch_size``,
        ``max_iter``, ``hidden_layer_sizes``, ``device``, ``dtype``,
        ``random_state``) set the training; it is not fitted or modified.
        ``batch_size='auto'`` is resolved as the estimators do.
    set_alpha : float, default=None
        Fraction defining the analysed set; default ``alpha``.
    solver, l2_reg, learning_rate, batch_size, max_iter, hidden_layer_sizes, random_state
        Override the estimator's (or the defaults: 'adamw', 1e-4, 1e-3, 128,
        10 epochs, linear head, seed 0). Epoch-wise analysis needs 'adamw'
        or 'sgd'.
    return_sets : bool, default=False
        Also return the boolean matrix (n_epochs, n_samples) of the sets.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per (epoch, group): ``epoch`` (1-based), the columns of
        :func:`error_set_analysis` (``precision`` is the group's fraction of
        the set), ``mean_loss`` and ``cvar_loss`` (full training set, at
        ``set_alpha``) of the epoch's model.
    sets : ndarray of bool, shape (n_epochs, n_samples)
        Only with ``return_sets=True``.
    """
    overrides = dict(
        solver=solver, l2_reg=l2_reg, learning_rate=learning_rate, batch_size=batch_size,
        max_iter=max_iter, hidden_layer_sizes=hidden_layer_sizes, random_state=random_state,
        alpha=alpha,
    )
    settings, options = _settings(estimator, overrides, {"alpha": 0.1}, np.shape(X)[0])
    train_alpha = settings["alpha"]
    set_alpha = train_alpha if set_alpha is None else set_alpha
    X, classes, y_enc = _check_xy(X, y, options.dtype)
    check_group_labels(group_labels, X.shape[0])
    objective = Objective(reduction=CVaR(float(train_alpha)))
    if not 0 < set_alpha <= 1:
        raise ValueError(f"set_alpha must be in (0, 1]; got {set_alpha!r}.")
    records, sets = [], []

    def callback(epoch, module):
        losses = _losses(_forward(module, X, options), y_enc)
        mask = worst_alpha_mask(losses, set_alpha)
        sets.append(mask)
        cols = table_columns(error_set_analysis(mask, group_labels))
        cvar = float(cvar_of_losses(torch.from_numpy(losses), set_alpha))
        n_rows = len(cols["group"])
        cols = {
            "epoch": np.full(n_rows, epoch + 1),
            **cols,
            "mean_loss": np.full(n_rows, float(losses.mean())),
            "cvar_loss": np.full(n_rows, cvar),
        }
        records.append(cols)

    train_head(
        X, y_enc, classes.shape[0], objective, options, hidden_layer_sizes=settings["hidden_layer_sizes"],
        sampler=UniformSampler(X.shape[0]), seed=int(settings["random_state"]),
        callbacks=[EpochCallback(callback)],
    )
    table = make_table({k: np.concatenate([r[k] for r in records]) for k in records[0]})
    return (table, np.stack(sets)) if return_sets else table


def _eval_data(eval_set):
    if hasattr(eval_set, "X") and hasattr(eval_set, "y"):
        return eval_set.X, eval_set.y, eval_set.group_labels
    if isinstance(eval_set, dict):
        return eval_set["X"], eval_set["y"], eval_set["group_labels"]
    if isinstance(eval_set, (tuple, list)) and len(eval_set) == 3:
        return tuple(eval_set)
    raise ValueError(
        "eval_set must be (X, y, group_labels) or a Bunch with X, y and group_labels "
        "(e.g. load_celeba_attributes().val)."
    )


def jtt_error_set_ablation(
    X,
    y,
    *,
    eval_set,
    update_every=(None, 1, 2),
    lambda_up=10,
    identification_epochs=2,
    error_set=None,
    max_iter=2,
    solver="adamw",
    l2_reg=1e-4,
    learning_rate=1e-2,
    batch_size="auto",
    hidden_layer_sizes=(),
    random_state=0,
):
    """JTT with a static error set against one recomputed every K epochs (JTT, Table 6).

    Stage 1 (shared by all variants): an ERM identification model trained
    ``identification_epochs`` epochs; its misclassified training rows are
    the error set E (or pass ``error_set``, e.g. a fitted JTTClassifier's
    ``error_set_``). Stage 2: a new head trained ``max_iter`` epochs on the
    data with the rows of E repeated ``lambda_up`` times
    (:class:`~skgroup._samplers.RepeatSampler`). For ``update_every=K`` the
    error set is replaced, after every K-th epoch, by the rows the *current*
    stage-2 model misclassifies (the first K epochs use the identification
    model's set); ``None`` (or 0) is JTT's static error set. All variants
    share the stage-2 seed, so they coincide until the first update.

    Defaults: T = 2 identification epochs and lambda_up = 10, JTTClassifier's
    defaults (see ``docs/methods/jtt.rst``). The
    stage-2 training defaults are :class:`~skgroup.JTTClassifier`'s
    (AdamW, ``learning_rate=1e-2``, ``max_iter=2`` epochs,
    ``batch_size='auto'``, ``l2_reg=1e-4``, linear head), so the static
    variant is what the estimator trains. With 2 epochs only ``K=1``
    updates the set (a K at least ``max_iter`` reproduces the static run);
    pass a larger ``max_iter`` to compare longer schedules.

    Parameters
    ----------
    X, y : training data.
    eval_set : (X, y, group_labels) or Bunch with those fields
        Where accuracy and worst-group accuracy are measured (validation or test).
    update_every : iterable of int or None, default=(None, 1, 2)
    lambda_up : int, default=10
    identification_epochs : int, default=2
    error_set : bool mask or row indices, default=None
    max_iter, solver, l2_reg, learning_rate, batch_size, hidden_layer_sizes, random_state
        Training settings of both stages (``max_iter``: stage-2 epochs;
        ``batch_size='auto'`` is resolved as the estimators do). The
        learning rate is constant: the error-set update changes the epoch
        length, which a per-step cosine schedule cannot follow.

    Returns
    -------
    table : DataFrame or dict of columns
        One row per variant: ``variant``, ``update_every`` (0 = static),
        ``n_updates``, ``initial_error_set_size``, ``final_error_set_size``,
        ``accuracy``, ``worst_group_accuracy``, ``worst_group``.
    """
    from ..metrics import per_group_accuracy
    from ._error_set import subset_mask

    if not isinstance(lambda_up, Integral) or lambda_up < 1:
        raise ValueError(f"lambda_up must be an int >= 1 (rows are repeated); got {lambda_up!r}.")
    if not isinstance(identification_epochs, Integral) or identification_epochs < 1:
        raise ValueError(f"identification_epochs must be a positive int; got {identification_epochs!r}.")
    variants = []
    for k in update_every:
        if k is None or k == 0:
            variants.append(0)
        elif isinstance(k, Integral) and k > 0:
            variants.append(int(k))
        else:
            raise ValueError(f"update_every entries must be None, 0 or positive ints; got {k!r}.")
    settings, options = _settings(
        None,
        dict(solver=solver, l2_reg=l2_reg, learning_rate=learning_rate, batch_size=batch_size,
             max_iter=max_iter, hidden_layer_sizes=hidden_layer_sizes, random_state=random_state),
        {},
        np.shape(X)[0],
    )
    X, classes, y_enc = _check_xy(X, y, options.dtype)
    Xe, ye, ge = _eval_data(eval_set)
    Xe = check_array(Xe, dtype=[np.float32, np.float64], input_name="eval_set X")
    if Xe.shape[1] != X.shape[1]:
        raise ValueError(f"eval_set X has {Xe.shape[1]} features; X has {X.shape[1]}.")
    ye = np.asarray(ye)
    check_group_labels(ge, Xe.shape[0], name="eval_set group_labels")
    seed = int(settings["random_state"])
    # The callback below swaps the sampler's indices, which changes the number of steps per epoch; the cosine
    # schedule of skgroup.engine assumes fixed-length epochs, so the learning rate must stay constant here.
    assert options.lr_schedule == "constant", "jtt_error_set_ablation needs a constant learning rate"

    if error_set is None:
        id_result = train_head(
            X, y_enc, classes.shape[0], Objective(), options.replace(max_iter=int(identification_epochs)),
            hidden_layer_sizes=settings["hidden_layer_sizes"], sampler=UniformSampler(X.shape[0]), seed=seed,
        )
        initial = _forward(id_result.module, X, options).argmax(axis=1) != y_enc
    else:
        initial = subset_mask(error_set, X.shape[0], against="X")

    out = {k: [] for k in ("variant", "update_every", "n_updates", "initial_error_set_size",
                           "final_error_set_size", "accuracy", "worst_group_accuracy", "worst_group")}
    for K in variants:
        current = initial.copy()
        sampler = RepeatSampler(1 + (lambda_up - 1) * current.astype(np.int64))
        n_updates = 0

        def callback(epoch, module, K=K, sampler=sampler):
            nonlocal current, n_updates
            if K and (epoch + 1) % K == 0 and epoch + 1 < options.max_iter:
                current = _forward(module, X, options).argmax(axis=1) != y_enc
                # changes the epoch length: valid only with lr_schedule='constant' (asserted above)
                sampler.indices = RepeatSampler(1 + (lambda_up - 1) * current.astype(np.int64)).indices
                n_updates += 1

        result = train_head(
            X, y_enc, classes.shape[0], Objective(), options, hidden_layer_sizes=settings["hidden_layer_sizes"],
            sampler=sampler, seed=seed + 1, callbacks=[EpochCallback(callback)],
        )
        pred = classes[_forward(result.module, Xe, options).argmax(axis=1)]
        names, accs, _ = per_group_accuracy(ye, pred, group_labels=ge)
        worst = int(np.argmin(accs))
        for key, val in zip(out, ("static" if K == 0 else f"every {K} epochs", K, n_updates,
                                  int(initial.sum()), int(current.sum()),
                                  float(np.mean(pred == ye)), float(accs[worst]), names[worst])):
            out[key].append(val)
    return make_table(out)
