"""Shared parameter documentation, substituted into the estimators' docstrings.

After imbalanced-learn's ``Substitution``: a docstring names a shared
parameter as ``{name}`` on a line of its own, and :func:`fill_doc` replaces
it with the text below, the default read from the class's ``__init__`` so
the two can never disagree. Only these placeholders are replaced (plain
``str.replace``), so braces elsewhere, e.g. in LaTeX, need no escaping.
"""

import inspect
import textwrap

__all__ = ["PARAM_DOCS", "fill_doc"]

PARAM_DOCS = {
    "loss": """
loss : str, skgroup.objectives.Loss or None, default={default}
    The per-row loss the method's reduction is applied to: None or
    'cross_entropy' (the papers' choice), another name in
    ``skgroup.objectives.LOSSES`` (with its defaults), or a Loss object
    (e.g. a focal loss under this method's reduction).""",
    "hidden_layer_sizes": """
hidden_layer_sizes : tuple of int, default={default}
    Empty for a linear softmax head; otherwise the widths of the ReLU hidden
    layers of an MLP head.""",
    "l2_reg": """
l2_reg : float, default={default}
    Strength of the L2 penalty ``l2_reg / 2 * ||W||^2`` added to the
    objective (weight matrices only, not biases): the coupled weight decay of
    the papers' SGD code. For ERM with a linear head,
    ``LogisticRegression(C=1 / (l2_reg * n_samples))`` (``C = 2 / (l2_reg *
    n_samples)`` for two classes) is the same model.""",
    "solver": """
solver : {{'lbfgs', 'adamw', 'sgd'}}, default={default}
    'lbfgs': full-batch L-BFGS, ``max_iter`` iterations. 'adamw' / 'sgd'
    (momentum 0.9): minibatches, ``max_iter`` epochs.""",
    "solver_minibatch": """
solver : {{'adamw', 'sgd'}}, default={default}
    Minibatch optimiser (SGD with momentum 0.9); the method changes its
    state at every step, so full-batch L-BFGS does not apply.""",
    "max_iter": """
max_iter : int, default={default}
    L-BFGS iterations, or epochs for the minibatch solvers.""",
    "batch_size": """
batch_size : int or 'auto', default={default}
    Minibatch size (ignored by L-BFGS). 'auto' is
    ``min(1024, max(32, n_samples // 100))``: about 100 steps an epoch where
    the data allows, and 1024 on CelebA-sized data (a minibatch loop on
    cached features is overhead-bound at small batches).""",
    "learning_rate": """
learning_rate : float or 'auto', default={default}
    Step size of the minibatch solvers (ignored by L-BFGS). 'auto': the
    rate tuned on CelebA attributes (this estimator's
    ``_reference_learning_rate``) times ``sqrt(8) / median ||x_i||`` over
    the training rows, so that a step moves the logits as much on features
    of any scale (``learning_rate_`` holds the value used).""",
    "lr_schedule": """
lr_schedule : {{'constant', 'cosine', 'linear'}}, default={default}
    Minibatch solvers: keep the step, or anneal it to zero over the run per
    step (cosine or linear).""",
    "tol": """
tol : float, default={default}
    L-BFGS stops when the largest gradient entry falls below ``tol``.""",
    "early_stopping": """
early_stopping : 'auto' or bool, default={default}
    Watch a validation split during training, keep the best epoch and stop
    when the ``monitor`` score has not improved for ``n_iter_no_change``
    epochs (L-BFGS: iterations), the checkpoint selection of the papers.
    The validation rows are ``X_val, y_val`` (and ``group_labels_val``)
    passed to ``fit``, else a ``validation_fraction`` held out of the
    training rows. 'auto': on exactly when ``X_val`` is passed, and then
    full-batch L-BFGS runs to convergence and keeps its last iterate (an
    iteration is not an epoch: selecting an early iterate on a noisy
    validation score stops short of the optimum); ``True`` selects L-BFGS
    iterations too.""",
    "validation_fraction": """
validation_fraction : float in (0, 1), default={default}
    Share of the training rows held out for early stopping when no
    ``X_val`` is given; the split is stratified by group when
    ``group_labels`` are passed to ``fit``, by class otherwise.""",
    "monitor": """
monitor : {{'auto', 'worst_group_accuracy', 'worst_class_accuracy', 'bias_unsupervised', 'accuracy', 'loss'}}, default={default}
    Validation score early stopping follows. 'worst_group_accuracy' needs
    group labels of the validation rows; 'worst_class_accuracy' (LaBonte et
    al., 2023) and 'bias_unsupervised' (their eq. 1, with an ERM model fitted
    on the training rows) need none; 'accuracy' is Kulkarni et al.'s
    selection without group labels. 'auto': the validation loss for ERM
    (which aims at average accuracy), and for the robust methods
    'worst_group_accuracy' when the validation rows have group labels, else
    'worst_class_accuracy'.""",
    "n_iter_no_change": """
n_iter_no_change : int or None, default={default}
    Epochs (L-BFGS: iterations) without improvement of the validation score
    before training stops; None trains ``max_iter`` epochs and still keeps
    the best.""",
    "restore_best": """
restore_best : bool, default={default}
    With validation, end with the weights of the best epoch (the papers'
    checkpoint selection) instead of the last.""",
    "callbacks": """
callbacks : list of skgroup.engine.Callback or None, default={default}
    Called during every training stage (copied, so the list given here is
    never changed); e.g. ``[Checkpoint(dirname)]`` saves each stage's
    state and resumes a killed fit where it stopped.""",
    "device": """
device : str, default={default}
    Torch device for training, e.g. 'cuda'. Prediction runs in numpy.""",
    "dtype": """
dtype : {{'float32', 'float64'}}, default={default}
    Training precision. Features already in this dtype are not copied.""",
    "random_state": """
random_state : int, RandomState instance or None, default={default}
    Seeds initialisation, splits and sampling through local generators
    (the global torch and numpy generators are never touched); the same
    seed gives the same model.""",
    "verbose": """
verbose : int, default={default}
    Show a progress bar per training stage.""",
    "environments": """
environments : {{'attribute', 'groups'}}, default={default}
    What the penalty compares. 'attribute': the values of the spurious
    attribute, as SubpopBench does (each environment holds every class);
    ``group_labels`` are read as (class, attribute) cells
    (:func:`skgroup.metrics.make_group_labels`' numbering) and a row's
    environment is the rank of its group among its class's groups, which
    needs every class to have the same number of groups. 'groups': each
    group is an environment (DomainBed's domains): pass attribute values,
    domains or inferred environments as ``group_labels``.""",
    "penalty_anneal_iters": """
penalty_anneal_iters : int, default={default}
    Optimizer steps at penalty weight 1 before the full ``penalty_weight``
    (DomainBed's ``*_penalty_anneal_iters``); the switch starts a fresh
    optimizer, as DomainBed resets Adam there. They come before the
    ``max_iter`` epochs; 0 trains at the full weight from the start.""",
}


def fill_doc(cls):
    """Replace ``{name}`` lines of ``cls.__doc__`` by :data:`PARAM_DOCS` entries.

    ``{solver_minibatch}`` documents ``solver`` for minibatch-only methods.
    """
    if not cls.__doc__:
        return cls
    defaults = {
        name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    doc = cls.__doc__
    for key, text in PARAM_DOCS.items():
        placeholder = "{" + key + "}"
        if placeholder not in doc:
            continue
        param = "solver" if key == "solver_minibatch" else key
        if param not in defaults:
            raise TypeError(f"{cls.__name__}.__doc__ documents {param!r}, which __init__ does not take.")
        body = text.strip("\n").replace("{{", "{").replace("}}", "}").replace("{default}", repr(defaults[param]))
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if line.strip() == placeholder:
                indent = line[: len(line) - len(line.lstrip())]
                lines[i] = textwrap.indent(body, indent)
        doc = "\n".join(lines)
    cls.__doc__ = doc
    return cls
