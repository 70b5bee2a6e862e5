"""Full-batch L-BFGS: scipy's L-BFGS-B driving gradients computed by torch.

(Interim driver; the fast evaluators for linear heads land with issue 13.)
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

__all__ = ["minimize_lbfgs", "LBFGSResult"]


@dataclass
class LBFGSResult:
    x: np.ndarray
    f: float
    n_iter: int
    n_eval: int
    converged: bool
    stopped: bool
    message: str
    loss_history: list = field(default_factory=list)


def minimize_lbfgs(fun_grad, x0, *, max_iter, tol, callback=None, history_size=20):
    """Minimise ``fun_grad`` from ``x0``; ``callback(n_iter, x, f) -> bool`` after each iteration.

    Stops when the largest gradient entry is at most ``tol`` (converged),
    after ``max_iter`` iterations, or when ``callback`` returns True
    (stopped). A line search that cannot decrease the float32 objective
    further ends the run as converged when the gradient is within 10x of
    ``tol``, else as not converged.
    """
    n_eval = 0
    last = {}

    def f_and_g(x):
        nonlocal n_eval
        n_eval += 1
        f, g = fun_grad(x)
        last["f"], last["g"] = f, g
        return f, g

    history = []
    stopped = False
    if max_iter <= 0:
        f, g = f_and_g(np.asarray(x0, dtype=np.float64))
        return LBFGSResult(np.asarray(x0, dtype=np.float64), f, 0, n_eval, bool(np.max(np.abs(g)) <= tol), False, "no iterations")

    def cb(intermediate_result):
        nonlocal stopped
        history.append(float(intermediate_result.fun))
        if callback is not None and callback(len(history), intermediate_result.x, intermediate_result.fun):
            stopped = True
            raise StopIteration

    res = minimize(
        f_and_g,
        np.asarray(x0, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=cb,
        options={"maxiter": int(max_iter), "gtol": float(tol), "ftol": 0.0, "maxcor": history_size,
                 "maxfun": int(max_iter * 2 + 20)},
    )
    gmax = float(np.max(np.abs(last["g"]))) if "g" in last else np.inf
    converged = (not stopped) and (res.status == 0 or gmax <= 10 * tol)
    return LBFGSResult(res.x, float(res.fun), len(history), n_eval, bool(converged), stopped, str(res.message), history)
