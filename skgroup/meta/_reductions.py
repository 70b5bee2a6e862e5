"""Distributionally robust training of any classifier by reductions: a game of weights and weighted fits.

Agarwal, Beygelzimer, Dudik, Langford & Wallach, "A Reductions Approach to
Fair Classification", ICML 2018, solve a constrained classification problem
as a two-player game: one player keeps weights (there: Lagrange
multipliers) and updates them by exponentiated gradient, the other answers
each weighting with a *best response*, a cost-sensitive (here: weighted) fit
of an ordinary classifier; the average of the responses approaches the
game's solution (Freund & Schapire, 1996). fairlearn's
``ExponentiatedGradient`` implements it for fairness constraints.

Distributionally robust classification is the same game with other weights:

* Group DRO (Sagawa et al., ICLR 2020): weights q on the simplex over
  groups; the learner fits with ``sample_weight`` :math:`n\\,q_g / n_g` on
  the rows of group g (the minimiser of :math:`\\sum_g q_g L_g(h)`), and q
  takes the exponentiated-gradient step of the paper's Algorithm 1,
  :math:`q_g \\leftarrow q_g \\exp(\\eta L_g(h_t))`, once per fit;
* CVaR DRO (Levy et al., NeurIPS 2020): weights p on the rows, in the
  CVaR uncertainty set :math:`\\{p : \\sum_i p_i = 1, 0 \\le p_i \\le
  1/(\\alpha n)\\}`; the learner fits with ``sample_weight`` :math:`n p`,
  and p takes an exponentiated-gradient step followed by the KL projection
  onto that capped simplex (Hedge with capping, Warmuth & Kuzmin, JMLR
  2008).

Both players' guarantee: with losses in [0, B], Hedge's regret after T
rounds is at most :math:`\\mathrm{KL}(u \\| w_1)/\\eta + \\eta T B^2/8`
against any fixed weighting u (``ln G`` for groups, ``ln(1/alpha)`` for the
CVaR set), so the uniform average of the iterates has worst-case loss
within that regret / T of the best response values (Agarwal et al., 2018,
Theorem 1's argument). The returned classifier is that average, a
randomized classifier: ``predict_proba`` is the mean of the iterates'
probabilities and ``predict`` its argmax.
"""

import math
import time
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if

from ._base import META_MONITORS, BaseMetaClassifier, Validation, aligned_proba, check_predict_X, one_hot_predictions

__all__ = ["BaseReductionClassifier", "capped_simplex_projection", "cvar"]

#: Probabilities are floored here before the log loss, which then lies in [0, -log(floor)] = [0, 13.8]:
#: the bounded losses the exponentiated-gradient guarantee needs (a forest's leaf can give probability 0).
PROBA_FLOOR = 1e-6


def capped_simplex_projection(log_v, cap):
    """The KL projection of the positive vector ``exp(log_v)`` onto ``{p : sum p = 1, 0 <= p <= cap}``.

    The solution is ``p_i = min(cap, s * v_i)`` for the scale s that makes it
    sum to one (Warmuth & Kuzmin, 2008, "capping"): the largest entries are
    capped, the others rescaled. ``cap * len(log_v)`` must be at least 1.
    """
    log_v = np.asarray(log_v, dtype=np.float64)
    n = log_v.shape[0]
    if cap * n < 1 - 1e-12:
        raise ValueError(f"cap={cap} is below 1/n={1 / n}: no distribution fits under it.")
    v = np.exp(log_v - log_v.max())
    order = np.argsort(-v, kind="stable")
    vs = v[order]
    tail = np.cumsum(vs[::-1])[::-1]  # tail[k] = sum of vs[k:]
    k = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (1.0 - k * cap) / tail
    ok = (1.0 - k * cap > 0) & (vs * scale <= cap * (1 + 1e-12))
    first = int(np.argmax(ok)) if ok.any() else n - 1
    p = np.empty(n)
    p[order[:first]] = cap
    p[order[first:]] = vs[first:] * scale[first]
    return p / p.sum()


def cvar(losses, alpha):
    """CVaR at level alpha of equally likely losses: the mean of the worst alpha-fraction (a fractional row
    at the boundary), i.e. the largest ``sum p_i losses_i`` over the CVaR set."""
    losses = np.sort(np.asarray(losses, dtype=np.float64))[::-1]
    m = alpha * losses.shape[0]
    whole = int(math.floor(m + 1e-12))
    total = losses[:whole].sum()
    if whole < losses.shape[0] and m > whole:
        total += (m - whole) * losses[whole]
    return float(total / m)


class BaseReductionClassifier(BaseMetaClassifier):
    """The reductions loop shared by Group DRO and CVaR DRO around any classifier.

    A subclass provides the adversary (``_start_game(...)`` returning an
    object with ``weights()``, ``update(losses)`` and ``history()``) and a
    ``fit`` that calls ``_fit_game``.
    """

    _parameter_constraints = {
        **BaseMetaClassifier._parameter_constraints,
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "eta": [Interval(Real, 0, None, closed="left")],
        "loss": [StrOptions({"log_loss", "zero_one"})],
        "prediction": [StrOptions({"average", "best_iterate"})],
        "monitor": [StrOptions({"auto", *META_MONITORS})],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    __metadata_request__fit = {"group_labels": False, "X_val": True, "y_val": True, "group_labels_val": True}

    #: the monitors RobustSearchCV may set (it sets 'monitor' to match its selection rule)
    _supported_monitors = META_MONITORS

    def _row_scores(self, estimator, X):
        """Probabilities (log loss) or one-hot predictions (0-1 loss) of one iterate, classes_ columns."""
        if self.loss == "log_loss":
            return aligned_proba(estimator, X, self.classes_)
        return one_hot_predictions(estimator, X, self.classes_)

    def _row_losses(self, scores, y_enc):
        p = scores[np.arange(y_enc.shape[0]), y_enc]
        if self.loss == "log_loss":
            return -np.log(np.maximum(p, PROBA_FLOOR))
        return 1.0 - p

    def _fit_game(self, X, y, y_enc, routed, game, X_val, y_val, group_labels_val):
        """Run ``n_iter`` rounds of (weighted fit, adversary update); store the iterates and what happened."""
        self._check_weighted(self.estimator, "fits each iterate with the adversary's weights as sample_weight")
        if self.loss == "log_loss" and not hasattr(self.estimator, "predict_proba"):
            raise ValueError(
                f"loss='log_loss' needs the probabilities of the base estimator, but {type(self.estimator).__name__} "
                "has no predict_proba: pass loss='zero_one' (the iterates' errors), or a classifier with "
                "predict_proba (e.g. CalibratedClassifierCV around it)."
            )
        validation = None
        if X_val is not None or y_val is not None or group_labels_val is not None:
            validation = Validation(self, X_val, y_val, group_labels_val, self.monitor)
        if self.prediction == "best_iterate" and validation is None:
            raise ValueError(
                "prediction='best_iterate' predicts with the iterate that scores best on validation data: pass "
                "X_val, y_val (and group_labels_val), or use prediction='average'."
            )
        self.estimator_ = clone(self.estimator)
        rng = self._rng()
        estimators, fit_seconds, iterate_scores, average_scores = [], [], [], []
        val_sum = None
        for t in range(self.n_iter):
            weights = game.weights()
            start = time.perf_counter()
            est = self._fit_one(self.estimator, X, y, routed, sample_weight=weights, seed=self._draw_seed(rng))
            fit_seconds.append(time.perf_counter() - start)
            estimators.append(est)
            game.update(self._row_losses(self._row_scores(est, X), y_enc))
            if validation is not None:
                scores = self._prediction_scores(est, validation.X)
                val_sum = scores if val_sum is None else val_sum + scores
                iterate_scores.append(validation.score(scores))
                average_scores.append(validation.score(val_sum))
            if self.verbose:
                extra = "" if validation is None else (f", validation {validation.monitor} iterate "
                                                        f"{iterate_scores[-1]:.4f} average {average_scores[-1]:.4f}")
                print(f"[{type(self).__name__}] iteration {t + 1}/{self.n_iter}: fit {fit_seconds[-1]:.2f}s{extra}")
        self.estimators_ = estimators
        self.n_iter_ = len(estimators)
        self.history_ = {**game.history(), "fit_time": np.asarray(fit_seconds)}
        if validation is None:
            self.validation_scores_ = None
            self.monitor_ = None
            self.best_iteration_ = None
            self.n_average_ = self.n_iter_
        else:
            self.validation_scores_ = {"iterate": np.asarray(iterate_scores), "average": np.asarray(average_scores)}
            self.monitor_ = validation.monitor
            # the first maximum: fewer iterates for the same score
            self.best_iteration_ = int(np.argmax(iterate_scores)) + 1
            self.n_average_ = int(np.argmax(average_scores)) + 1
        return self

    # -- prediction --------------------------------------------------------------
    def _prediction_scores(self, estimator, X):
        if hasattr(estimator, "predict_proba"):
            return aligned_proba(estimator, X, self.classes_)
        return one_hot_predictions(estimator, X, self.classes_)

    def _selected(self):
        """The iterates that predict: the first ``n_average_`` ones, or the best iterate."""
        if self.prediction == "best_iterate":
            return [self.estimators_[self.best_iteration_ - 1]]
        return self.estimators_[: self.n_average_]

    def _mean_scores(self, X):
        check_predict_X(self, X)
        chosen = self._selected()
        if self.n_jobs in (None, 1) or len(chosen) == 1:
            parts = [self._prediction_scores(e, X) for e in chosen]
        else:
            parts = Parallel(n_jobs=self.n_jobs, prefer="threads")(
                delayed(self._prediction_scores)(e, X) for e in chosen
            )
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        return total / len(parts)

    def predict(self, X):
        """The class of largest mean probability over the predicting iterates (of most votes without
        ``predict_proba``)."""
        scores = self._mean_scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_proba(self, X):
        """Mean class probabilities of the predicting iterates (all of them, the first ``n_average_``, or the
        best one), columns in the order of ``classes_``: the randomized classifier that draws an iterate
        uniformly, as probabilities."""
        return self._mean_scores(X)

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
