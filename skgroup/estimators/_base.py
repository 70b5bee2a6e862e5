"""What every skgroup head estimator shares: validation of the inputs, the
validation split and early stopping, running the method's plan on the
engine, and prediction from the learned weights.

A subclass writes its method once, as ``_plan(ctx)`` (a generator of
:class:`~skgroup.engine.Stage`), and a ``fit`` whose signature says which
metadata it takes. The learned weights are kept as numpy arrays
(``coefs_``, ``intercepts_``, and ``coef_`` / ``intercept_`` for a linear
head), so prediction needs no torch, a fitted estimator pickles small, and
a model trained on a GPU predicts anywhere.
"""

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._groups import check_group_labels
from .._cache import SHARED_FITS, canonical, fingerprint
from ..engine import (
    FitContext,
    HeadExecutor,
    TrainOptions,
    make_head,
    run_plan,
    torch_dtype,
)
from ..metrics._metrics import below_majority_codes
from ..objectives import make_loss
from ..engine._fit import encode_labels, fit_classes, resolve_seed, split_fit_data, store_fit_result
from ..engine._callbacks import MONITORS, Callback
from ..engine._lbfgs import product_with_rows
from ..utils._warnings import warn
from ._spec import searched_parameters

__all__ = ["BaseHeadClassifier", "BelowERMWarning", "BelowMajorityWarning", "biased_erm", "auto_learning_rate"]


class BelowERMWarning(UserWarning):
    """A fit's own validation split shows it below ERM's accuracy, with no gain in the score it monitors."""


class BelowMajorityWarning(UserWarning):
    """A fitted model does worse than always answering the majority class (see
    :func:`skgroup.metrics.below_majority`), or no better: within 0.01 of the
    majority rate on average and of chance in balanced accuracy (a model that
    answers the majority class almost everywhere), on its training rows or,
    with validation data, on the validation rows."""

#: LaBonte et al.'s biased model: ERM without class balancing, the library's weak default L2.
BIASED_ERM_PARAMS = {"l2_reg": 1e-4, "random_state": 0}


def biased_erm(X, y, *, dtype="float32"):
    """The ERM model (no class balancing) whose predictions stand in for the spurious attribute.

    LaBonte et al. (2023) score models without group labels on the cells
    (true class, prediction of this model). It depends on the training rows
    only, so it is fitted once per distinct ``(X, y)`` and shared (see
    :mod:`skgroup._cache`) by every estimator that monitors
    ``'bias_unsupervised'`` and by :class:`~skgroup.model_selection.RobustSearchCV`.
    Full-batch L-BFGS from a zero head: the model does not depend on a seed.
    """
    from ._erm import ERMClassifier

    key = SHARED_FITS.key("biased_erm", fingerprint(X, y), dtype, canonical(BIASED_ERM_PARAMS))
    return SHARED_FITS.get_or_fit(key, lambda: ERMClassifier(**BIASED_ERM_PARAMS, dtype=dtype).fit(X, y))

#: The ``loss`` parameter of the methods whose objective reduces a per-row loss.
LOSS_CONSTRAINT = {"loss": [str, HasMethods(["bind", "__call__"]), None]}

_HEAD_CONSTRAINTS = {
    "hidden_layer_sizes": ["array-like"],
    "l2_reg": [Interval(Real, 0, None, closed="left")],
    "solver": [StrOptions({"lbfgs", "adamw", "sgd"})],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
    "lr_schedule": [StrOptions({"constant", "cosine", "linear"})],
    "tol": [Interval(Real, 0, None, closed="left")],
    "early_stopping": ["boolean", StrOptions({"auto"})],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "monitor": [StrOptions({"auto", *MONITORS})],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
    "restore_best": ["boolean"],
    "callbacks": [list, None],
    "device": [str],
    "dtype": [StrOptions({"float32", "float64"})],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}

#: TrainOptions fields an estimator's parameters of the same name set.
_OPTION_PARAMS = ("solver", "max_iter", "batch_size", "learning_rate", "lr_schedule", "l2_reg", "tol",
                  "dtype", "device")


#: Median row norm of the CelebA-attributes features (sqrt(8): eight of 38 binary
#: attributes on), the data the minibatch defaults were tuned on.
REFERENCE_ROW_NORM = math.sqrt(8.0)


def auto_learning_rate(X, reference):
    """``reference * sqrt(8) / median_i ||x_i||``: a learning rate tuned on CelebA attributes, moved to X.

    AdamW moves every weight by about the learning rate a step, so a logit
    moves by about ``lr * ||x||`` when the step is coherent: the same rate
    is 100x too large on features of norm 100 (the synthetic benchmark's
    Gaussian features) as on CelebA attributes (norm sqrt(8)), where the
    defaults were tuned. Rescaling by the median row norm keeps the logit
    step per update. The median is over at most 10,000 evenly spaced rows.
    """
    X = np.asarray(X)
    step = max(1, X.shape[0] // 10000)
    norms = np.linalg.norm(np.asarray(X[::step], dtype=np.float64), axis=1)
    norm = float(np.median(norms)) if norms.size else 0.0
    if not np.isfinite(norm) or norm <= 0:
        return float(reference)
    return float(reference * REFERENCE_ROW_NORM / norm)


def check_hidden_layer_sizes(sizes):
    sizes = tuple(np.atleast_1d(sizes).tolist()) if sizes is not None else ()
    if any(not isinstance(h, Integral) or isinstance(h, bool) or h < 1 for h in sizes):
        raise ValueError(
            f"hidden_layer_sizes must be a tuple of positive ints (e.g. (64,)), or () for a linear "
            f"head; got {sizes!r}."
        )
    return tuple(int(h) for h in sizes)


class BaseHeadClassifier(ClassifierMixin, BaseEstimator):
    """Base class: a softmax head trained by a method's plan on the engine."""

    _parameter_constraints: dict = dict(_HEAD_CONSTRAINTS)

    # validation data travels with routing by default; group labels only to
    # the methods that train on them (set_fit_request(group_labels=True) lets
    # another estimator use them for its validation split and monitor)
    __metadata_request__fit = {"X_val": True, "y_val": True, "group_labels_val": True, "group_labels": False}

    # -- input validation --------------------------------------------------
    def _validate_fit_data(self, X, y, classes=None, validated=False):
        if not validated:
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
            check_classification_targets(y)
        if classes is not None:  # a method fine-tuning a given model keeps its classes
            self.classes_ = np.asarray(classes)
            return X, encode_labels(self.classes_, y)
        self.classes_, y_enc = fit_classes(y, type(self).__name__, checked=not validated)
        return X, y_enc

    def _check_params(self):
        """Checks of parameter combinations beyond ``_parameter_constraints`` (run before every fit)."""

    def _loss(self, ctx):
        """The per-row loss of the method's objectives, bound to the training labels (``loss`` parameter)."""
        return make_loss(getattr(self, "loss", None), ctx.y, ctx.n_classes)

    #: The minibatch learning rate tuned on CelebA attributes; ``learning_rate='auto'``
    #: rescales it to the features' norm (see :func:`auto_learning_rate`). ERM's
    #: rate unless a method tuned its own.
    _reference_learning_rate = 1e-3

    def _options(self, X=None, **overrides):
        params = self.get_params(deep=False)
        values = {k: params[k] for k in _OPTION_PARAMS if k in params}
        values.update(overrides)
        ref = self._reference_learning_rate
        if values.get("learning_rate") == "auto" and ref is not None and X is not None:
            values["learning_rate"] = auto_learning_rate(X, ref)
            self.learning_rate_ = values["learning_rate"]
        return TrainOptions(**values)

    def _seed(self, offset=0):
        return (resolve_seed(self.random_state) + offset) % (2**32)

    # -- validation split and early stopping -------------------------------
    def _split_validation(self, X, y_enc, groups, sample_weight, X_val, y_val, group_labels_val, seed):
        """The shared fit protocol's split (:func:`skgroup.engine._fit.split_fit_data`) of a feature array,
        with the biased model's validation predictions when the monitor is the bias-unsupervised score."""
        data = split_fit_data(
            self, X, y_enc, groups, X_val=X_val, y_val=y_val, group_labels_val=group_labels_val,
            sample_weight=sample_weight, seed=seed,
            check_X_val=lambda Xv: validate_data(self, Xv, dtype=X.dtype, reset=False),
            subset=lambda A, rows: A[rows],
        )
        if data.stopping is not None and data.stopping["monitor"] == "bias_unsupervised":
            data.validation.y_pred_biased = self._biased_predictions(data.X, data.y, data.validation.X, seed)
        return data

    def _biased_predictions(self, X, y_enc, X_val, seed):
        """Encoded predictions of an ERM model of the training rows (LaBonte et al.'s biased model)."""
        return biased_erm(X, y_enc, dtype=self.dtype).predict(X_val)

    def _reuses_shared_fits(self):
        """Whether sub-models may come from (and go to) the shared cache.

        Only a fixed integer seed makes a sub-model a function of the data and
        settings; user callbacks expect to see every stage run.
        """
        return (isinstance(self.random_state, Integral) and not isinstance(self.random_state, bool)
                and not self.callbacks and SHARED_FITS.enabled)

    # -- the fit ------------------------------------------------------------
    def _fit(self, X, y, *, group_labels=None, X_val=None, y_val=None, group_labels_val=None,
             sample_weight=None, classes=None, validated=False, plan_kwargs=None):
        """Validate, split off validation rows, run ``self._plan`` on the engine, store the result.

        ``classes``: fixed classes (a method refining a given model);
        ``validated``: X and y already went through ``validate_data``;
        ``plan_kwargs``: passed on to ``self._plan(ctx, **plan_kwargs)``.
        """
        self._check_params()
        X, y_enc = self._validate_fit_data(X, y, classes, validated)
        groups = None if group_labels is None else check_group_labels(group_labels, X.shape[0])
        seed = self._seed()
        data = self._split_validation(X, y_enc, groups, sample_weight, X_val, y_val, group_labels_val, seed)
        X, y_enc, validation, stopping = data.X, data.y, data.validation, data.stopping
        callbacks = self.callbacks or []
        if any(not isinstance(cb, Callback) for cb in callbacks):
            raise TypeError("callbacks must be a list of skgroup.engine.Callback objects.")
        executor = HeadExecutor(
            X, y_enc, len(self.classes_),
            hidden_layer_sizes=check_hidden_layer_sizes(getattr(self, "hidden_layer_sizes", ())),
            dtype=self.dtype, device=self.device, validation=validation, early_stopping=stopping,
            callbacks=callbacks, verbose=self.verbose, classes=self.classes_,
        )
        ctx = FitContext(y=y_enc, n_classes=len(self.classes_), options=self._options(X), seed_base=seed,
                         groups=data.groups, sample_weight=data.sample_weight, executor=executor, rows=data.rows)
        result = run_plan(self._plan(ctx, **(plan_kwargs or {})), executor)
        self._store_result(result, validation is not None)
        # the majority check reads every training row when the optimizer's last evaluation predicted them
        # (full-batch L-BFGS), else at most _MAJORITY_CHECK_ROWS of them, evenly strided
        pred = None if self._reads_training_logits else result.final_predictions(
            [torch.from_numpy(np.ascontiguousarray(a)) for W, b in zip(self.coefs_, self.intercepts_)
             for a in (W.T, b)])
        if pred is not None:
            y_check = y_enc
        else:
            step = max(1, X.shape[0] // self._MAJORITY_CHECK_ROWS)
            rows, y_check = np.asarray(X[::step]), y_enc[::step]
            if self._reads_training_logits:
                # one pass over the check rows serves the method's own statistic and the majority check
                logits = self._forward(rows)
                self._training_logits_read(logits, y_check)
                pred = logits.argmax(axis=1)
            else:
                pred = self._predicted_codes(rows)
        warned = self._check_against_majority(X, y_check, pred)
        if validation is not None:
            logits = self._logits(np.asarray(validation.X))  # one pass over the validation rows for both checks
            if not warned:
                # the training rows can be fitted while the model generalises no better than the constant
                # (X for the search space's sizes: it scales with the training rows)
                self._check_against_majority(X, np.asarray(validation.y), logits.argmax(axis=1), "validation rows")
            if self._compare_to_erm:
                self._check_against_erm(X, y_enc, validation, stopping["monitor"], logits)
        return self

    #: Rows of the training data the majority check reads at most (an evenly strided subset beyond).
    _MAJORITY_CHECK_ROWS = 20_000

    #: Whether the method computes a statistic of its fitted model on the training rows
    #: (``_training_logits_read``, given the logits of the majority check's rows after the fit).
    _reads_training_logits = False

    def _training_logits_read(self, logits, y_enc):
        """The method's post-fit statistic from the logits of the check rows (see _reads_training_logits)."""

    def _predicted_codes(self, rows):
        """Encoded predictions of ``rows``."""
        linear = len(self.coefs_) == 1 and self.coefs_[0].ndim == 2 and not self._relu_after(0)
        if linear and self.coefs_[0].shape[1] == 2:
            # a linear two-class head: the sign of the logits' difference, one product with the rows
            W, b = self.coefs_[0].astype(rows.dtype, copy=False), self.intercepts_[0]
            return (rows @ (W[:, 1] - W[:, 0]) + (b[1] - b[0]) > 0).astype(np.intp)
        return self._forward(rows).argmax(axis=1)

    def _check_against_majority(self, X, y_enc, pred, where="own training rows"):
        """Warn when the fitted model, predicting ``pred`` for rows labelled ``y_enc``, does worse than always
        answering the majority class there (worse accuracy and no better balanced accuracy): on its own training
        rows (no validation data needed) or on the validation rows (``where``). ``X``, the training rows, sizes
        the search space the warning names. Returns whether it warned."""
        # encoded labels and predictions: the kernel, without the input checks of the public function
        below, n = below_majority_codes(y_enc == pred, y_enc, len(self.classes_))
        # the constant answer itself (every row the same class) is not below it, and no better either: nor is a
        # model within 0.01 of it on average and class by class (LDAM on a 93 %-majority CelebA cut answered 3
        # test rows of 19,962 with the small class: accuracy 0.00002 above the majority rate, balanced 0.501)
        constant = (n["chance"] < 1 and n["accuracy"] <= n["majority_rate"] + 0.01
                    and n["balanced_accuracy"] <= n["chance"] + 0.01)
        if below or constant:
            name = type(self).__name__
            keys = searched_parameters(name, X.shape[0], X.shape[1], len(self.classes_))
            knobs = ", ".join(keys) if keys else "its settings"
            warn(
                f"{name} does {'worse' if below else 'no better'} than always answering the majority class on "
                f"its {where}: "
                f"accuracy {n['accuracy']:.3f} against the majority rate {n['majority_rate']:.3f}, balanced "
                f"accuracy {n['balanced_accuracy']:.3f} against chance {n['chance']:.3f}. These settings do "
                f"not suit the data: search {knobs} with validation data (e.g. "
                f"skgroup.model_selection.RobustSearchCV(['{name}'], ...), which also tries ERM), or use ERM.",
                BelowMajorityWarning,
            )
        return below or constant

    #: Whether the last epoch is unreliable enough that, without X_val, early_stopping='auto' holds out
    #: validation_fraction of the training rows to choose the epoch (LfF), when that leaves every class
    #: at least 20 held-out rows (GradTune splits its own held-out rows instead, see its fit).
    _auto_validation_split = False

    #: Whether a fit with validation data compares itself with ERM (see _check_against_erm).
    _compare_to_erm = True

    def _erm_reference(self, X, y_enc):
        """The ERM model this fit is compared with: ERM on the same training rows (cached)."""
        return biased_erm(X, y_enc, dtype=self.dtype)

    def _check_against_erm(self, X, y_enc, validation, monitor, logits):
        """Warn when the validation split shows this fit below ERM with nothing to show for it.

        A robust method may trade average accuracy for the worst group; one
        whose validation accuracy falls more than 5 points below ERM's while
        the score it monitors is no better than ERM's has collapsed (settings
        that do not suit the data), and says so instead of failing silently.
        ``logits``: this model's on the validation rows.
        """
        from ..engine import validation_metrics

        reference = self._erm_reference(X, y_enc)
        ref_logits = reference._logits(np.asarray(validation.X))
        if getattr(reference, "classes_", None) is not None and len(reference.classes_) != len(self.classes_):
            return
        ours = validation_metrics(logits, validation.y, validation.membership, validation.y_pred_biased)
        erm = validation_metrics(ref_logits, validation.y, validation.membership, validation.y_pred_biased)
        drop = erm["accuracy"] - ours["accuracy"]
        sign = 1.0 if MONITORS[monitor] else -1.0
        if drop > 0.05 and sign * (ours[monitor] - erm[monitor]) <= 0:
            name = type(self).__name__
            keys = searched_parameters(name, X.shape[0], X.shape[1], len(self.classes_))
            knobs = ", ".join(keys) if keys else "its settings"
            warn(
                f"{name}'s validation accuracy ({ours['accuracy']:.3f}) is {100 * drop:.0f} points below "
                f"ERM's ({erm['accuracy']:.3f}) on the same training rows, and its validation {monitor} "
                f"({ours[monitor]:.3f}) is no better than ERM's ({erm[monitor]:.3f}): these settings do not "
                f"suit the data. Search {knobs} (e.g. RobustSearchCV(['{name}', 'ERMClassifier']) from "
                "skgroup.model_selection), or use ERM.",
                BelowERMWarning,
            )

    def _store_result(self, result, validated):
        self._set_weights(result.module)
        store_fit_result(self, result, validated)

    def _set_weights(self, module):
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
        self.intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        if len(linears) == 1:
            self.coef_ = self.coefs_[0].T
            self.intercept_ = self.intercepts_[0]
        else:
            for name in ("coef_", "intercept_"):
                if name in self.__dict__:
                    delattr(self, name)

    def _module(self):
        """The fitted head as a torch module (to fine-tune it or to export it)."""
        check_is_fitted(self)
        hidden = tuple(c.shape[1] for c in self.coefs_[:-1])
        dtype = torch_dtype(self.coefs_[0].dtype.name)
        module = make_head(self.n_features_in_, len(self.classes_), hidden, dtype, torch.Generator())
        linears = [m for m in module if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, W, b in zip(linears, self.coefs_, self.intercepts_):
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
        return module

    # -- prediction --------------------------------------------------------
    def _relu_after(self, layer):
        """Whether the output of layer ``layer`` (0-based) of ``coefs_`` goes through a ReLU.

        An MLP head: every layer but the last. Architectures with linear
        layers inside (a multitask trunk's representation) override this.
        """
        return layer < len(self.coefs_) - 1

    def _logits(self, X):
        check_is_fitted(self)
        return self._forward(validate_data(self, X, dtype=[np.float32, np.float64], reset=False))

    def _forward(self, X):
        """Logits of a validated float array (numpy, layer by layer)."""
        h = X
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            W = W.astype(X.dtype, copy=False)
            # a 1-D coefficient is a diagonal layer (elementwise scaling), kept as a vector; a layer of
            # a few outputs as matrix-vector products (BLAS's gemm runs far below them there)
            h = (h * W if W.ndim == 1 else product_with_rows(h, W.T)) + b.astype(X.dtype, copy=False)
            if self._relu_after(i):
                np.maximum(h, 0, out=h)
        return h

    def decision_function(self, X):
        """Logits; for two classes, the logit of ``classes_[1]`` minus that of ``classes_[0]``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Softmax of the logits, columns in the order of ``classes_``."""
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        z = self._logits(X)
        return self.classes_[np.argmax(z, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        return tags
