"""What every skgroup head estimator shares: validation, the training call,
and prediction from the learned weights.

An estimator subclass only says which objective, sampler and solver its fit
uses and calls :meth:`BaseHeadClassifier._train`. The learned weights are
kept as numpy arrays (``coefs_``, ``intercepts_``, and ``coef_`` /
``intercept_`` for a linear head), so prediction needs no torch, a fitted
estimator pickles small, and a model trained on a GPU predicts anywhere.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._training import TrainOptions, train_head

__all__ = ["BaseHeadClassifier", "HEAD_PARAMS_DOC"]

HEAD_PARAMS_DOC = """
    hidden_layer_sizes : tuple of int, default=()
        Empty for a linear softmax head; otherwise the widths of ReLU hidden
        layers of an MLP head.
    l2_reg : float, default={l2_reg}
        Strength of the L2 penalty ``l2_reg / 2 * ||W||^2`` added to the mean
        objective (weights only, not biases). For ERM with a linear head,
        ``LogisticRegression(C=1 / (l2_reg * n_samples))`` (``C = 2 / (l2_reg *
        n_samples)`` for two classes) is the same model.
    solver : {{'lbfgs', 'adamw', 'sgd'}}, default={solver!r}
        'lbfgs': full-batch L-BFGS, ``max_iter`` iterations. 'adamw' / 'sgd'
        (momentum 0.9): minibatches, ``max_iter`` epochs.
    max_iter : int, default={max_iter}
        L-BFGS iterations, or epochs for the minibatch solvers.
    batch_size : int or 'auto', default={batch_size!r}
        Minibatch size (ignored by L-BFGS). 'auto' is
        ``min(1024, max(32, n_samples // 100))``: about 100 steps an epoch
        where the data allows, and 1024 on CelebA-sized data (a minibatch loop
        is overhead-bound at small batches).
    learning_rate : float, default={learning_rate}
        Step size of the minibatch solvers (ignored by L-BFGS).
    tol : float, default=1e-5
        L-BFGS stops when the largest gradient entry falls below ``tol``.
    device : str, default='cpu'
        Torch device for training, e.g. 'cuda'. Prediction runs in numpy.
    dtype : {{'float32', 'float64'}}, default='float32'
        Training precision. Features already in this dtype are not copied.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and sampling through local generators; the same
        seed gives the same model.
    verbose : int, default=0
        Show a progress bar while training.
"""

_HEAD_CONSTRAINTS = {
    "hidden_layer_sizes": ["array-like"],
    "l2_reg": [Interval(Real, 0, None, closed="left")],
    "solver": [StrOptions({"lbfgs", "adamw", "sgd"})],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "device": [str],
    "dtype": [StrOptions({"float32", "float64"})],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


class BaseHeadClassifier(ClassifierMixin, BaseEstimator):
    """Base class: a softmax head trained by :func:`skgroup._training.train_head`."""

    _parameter_constraints: dict = dict(_HEAD_CONSTRAINTS)

    # -- fitting helpers ---------------------------------------------------
    def _validate_fit_data(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y, but "
                f"the data contains only one class: {self.classes_[0]!r}."
            )
        return X, y_enc.ravel()

    def _options(self, **overrides):
        fields = TrainOptions.__dataclass_fields__
        params = {k: v for k, v in self.get_params(deep=False).items() if k in fields}
        params["hidden_layer_sizes"] = tuple(int(h) for h in np.atleast_1d(params.get("hidden_layer_sizes", ())))
        params.update(overrides)
        return TrainOptions(**params)

    def _seed(self, offset=0):
        rs = self.random_state
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        if rs is None:
            return int(np.random.randint(np.iinfo(np.int32).max))
        return int(rs) + offset

    def _train(self, X, y_enc, objective, *, sampler=None, options=None, seed=None, init=None, epoch_callback=None):
        """Run the shared loop and store the learned weights on ``self``."""
        result = train_head(
            X,
            y_enc,
            len(self.classes_),
            objective=objective,
            options=options if options is not None else self._options(),
            sampler=sampler,
            seed=self._seed() if seed is None else seed,
            init=init,
            epoch_callback=epoch_callback,
        )
        self._set_weights(result.module)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_history
        return result

    def _set_weights(self, module):
        linears = [m for m in module if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
        self.intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        if len(linears) == 1:
            self.coef_ = self.coefs_[0].T
            self.intercept_ = self.intercepts_[0]

    def _module(self):
        """The fitted head as a torch module (to fine-tune it or to export it)."""
        from .._training import make_head, torch_dtype

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
    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        h = X
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            h = h @ W.astype(X.dtype, copy=False) + b.astype(X.dtype, copy=False)
            if i < len(self.coefs_) - 1:
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
