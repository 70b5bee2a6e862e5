"""The library's search space for every estimator, in one registry.

Modelled on DomainBed's ``hparams_registry.py`` (Gulrajani & Lopez-Paz,
2021): one place defines, for each method, which hyperparameters are
searched and over which values, each range with its source. Unlike
DomainBed's random draws, every space here is a small deterministic grid
(a search over it is reproducible and its cost is known in advance), and
the grids scale with the data, because a 3,000-row table and a 160,000-row
feature cache need different epoch counts and fine-tuning set sizes.

Adding an estimator is one entry: a function of the data's shape decorated
with ``@register("MyClassifier")`` that returns its grid (a dict, or a list
of dicts, as ``GridSearchCV`` takes). :class:`RobustSearchCV` with
``candidates='auto'`` searches every registered estimator that
:func:`skgroup.estimators.all_estimators` lists.

How the grids scale with the data
---------------------------------

* **Epochs.** The minibatch defaults were tuned on CelebA attributes
  (162,770 training rows, batch 1024: 159 steps an epoch). With
  ``batch_size='auto'`` (``min(1024, max(32, n // 100))``) an epoch is
  about 100 steps from 3,200 rows up, but only ``n / 32`` steps below, and
  about ``n / 1024`` steps beyond 100,000 rows. Epoch counts are therefore
  given as CelebA epochs and converted to this data's epochs at the same
  number of optimizer steps (:func:`scaled_epochs`): JTT's T = 2 CelebA
  epochs is 4 epochs at 3,000 rows and 1 epoch at 500,000.
* **Learning rates** are ``'auto'``: each estimator rescales its
  CelebA-tuned rate by the features' median row norm (a fixed rate that
  suits binary attributes of norm sqrt(8) is 35x too large on Gaussian
  features of norm 100).
* **Fine-tuning set sizes.** GradTune's M' = 500 and k = 400 assume a
  held-out set of several thousand rows (half of CelebA's validation); on
  smaller data M' is capped at half of the held-out rows.
* **L2 strengths and the methods' own knobs** (``lambda_up``, ``alpha``,
  ``eta``) are scale-free: the papers' ranges are used as they are.

``n_features`` is passed to every entry for spaces that need it (e.g. an
MLP head's width); none of the current linear-head entries does.
"""

import math
from dataclasses import dataclass

from ..engine import resolve_batch_size

__all__ = ["search_space", "searched_parameters", "register", "registered", "scaled_epochs", "DataShape"]

#: Optimizer steps an epoch on CelebA attributes at the default batch size: the
#: unit in which the minibatch epoch defaults were tuned.
CELEBA_STEPS_PER_EPOCH = math.ceil(162_770 / 1024)

_REGISTRY = {}


@dataclass(frozen=True)
class DataShape:
    """What a search space may depend on."""

    n_samples: int
    n_features: int
    n_classes: int

    @property
    def steps_per_epoch(self):
        return math.ceil(self.n_samples / resolve_batch_size("auto", self.n_samples))


def scaled_epochs(celeba_epochs, data):
    """Epochs on ``data`` with as many optimizer steps as ``celeba_epochs`` on CelebA attributes."""
    steps = celeba_epochs * CELEBA_STEPS_PER_EPOCH
    return max(1, round(steps / data.steps_per_epoch))


_NEEDS_GROUP_LABELS = set()


def register(name, *, needs_group_labels=False):
    """Decorator: ``fn(data: DataShape) -> grid`` is the search space of estimator ``name``.

    ``needs_group_labels``: the method is only itself with training group
    labels (DFR's group-balanced held-out subsets, group balancing); without
    them it would quietly become a class-balanced method, so
    ``candidates='auto'`` leaves it out unless ``fit`` gets ``group_labels``.
    """

    def decorate(fn):
        if name in _REGISTRY:
            raise ValueError(f"{name} already has a search space ({_REGISTRY[name].__name__}).")
        _REGISTRY[name] = fn
        if needs_group_labels:
            _NEEDS_GROUP_LABELS.add(name)
        return fn

    return decorate


def registered(*, with_group_labels=True):
    """Names of the estimators with a search space, in registration order.

    ``with_group_labels=False``: only those that are themselves without
    training group labels.
    """
    return [name for name in _REGISTRY if with_group_labels or name not in _NEEDS_GROUP_LABELS]


def search_space(estimator_name, n_samples, n_features, n_classes):
    """The grid that ``candidates='auto'`` searches for one estimator on data of this shape.

    Parameters
    ----------
    estimator_name : str
        A class name, e.g. ``'JTTClassifier'``; see :func:`registered`.
    n_samples : int
        Training rows (the rows the candidate is fitted on).
    n_features, n_classes : int

    Returns
    -------
    dict or list of dict
        Parameter name -> list of values, as ``GridSearchCV``'s
        ``param_grid``. Deterministic: the same shape gives the same grid.

    Examples
    --------
    >>> from skgroup.model_selection import search_space
    >>> search_space("JTTClassifier", 3000, 200, 2)["id_epochs"]
    [2, 3]
    """
    if estimator_name not in _REGISTRY:
        raise ValueError(
            f"No search space is registered for {estimator_name!r}; registered: {registered()}. "
            "Pass (estimator, param_grid) pairs as candidates, or register one with "
            "skgroup.model_selection.register."
        )
    for value, what in ((n_samples, "n_samples"), (n_features, "n_features"), (n_classes, "n_classes")):
        if int(value) != value or value < 1:
            raise ValueError(f"{what} must be a positive integer; got {value!r}.")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2; got {n_classes}.")
    grid = _REGISTRY[estimator_name](DataShape(int(n_samples), int(n_features), int(n_classes)))
    return [dict(g) for g in grid] if isinstance(grid, list) else dict(grid)


def searched_parameters(estimator_name, n_samples=3000, n_features=2, n_classes=2):
    """Sorted names of the parameters the registry searches for ``estimator_name`` on data of this
    shape (what a warning tells a user to search), or None when none is registered."""
    if estimator_name not in _REGISTRY:
        return None
    space = search_space(estimator_name, n_samples, n_features, n_classes)
    return sorted({k for grid in (space if isinstance(space, list) else [space]) for k in grid})


# ---------------------------------------------------------------------------
# The entries. Each names the source of every range it searches.


@register("ERMClassifier")
def _erm(data):
    # L2 from weak (the default, sklearn's C=1 at 20,000 rows) to strong: strong L2 is what
    # Sagawa et al. (2020) show matters for worst-group generalisation; with early stopping
    # on the validation split this is also the ERM baseline of Kulkarni et al.'s model selection
    return {"l2_reg": [1e-4, 1e-2, 1.0]}


@register("GroupDROClassifier")
def _group_dro(data):
    # eta: the paper's 0.01 and DomainBed's upper end 0.1 (10^U(-3, -1)); L2: the paper's
    # "strong" weight decay (0.1) against a weak one (Sagawa et al., 2020, Sec. 4);
    # epochs: the default 5 CelebA epochs, at equal steps. Without group labels in training
    # it is worst-class DRO (the classes are the groups).
    return {"eta": [0.01, 0.1], "l2_reg": [1e-3, 0.1], "max_iter": [scaled_epochs(5, data)]}


@register("JTTClassifier")
def _jtt(data):
    # T: 1 and 2 CelebA epochs (Liu et al., 2021, use T = 1 on CelebA and 1-2 on MultiNLI and
    # CivilComments, in epochs of a network that fits the data in a few); lambda_up: the
    # paper's NLP range (4-6) to its image range (20-100), capped at 20 because upsampling
    # makes an epoch n(1 + (lambda_up - 1) |E| / n) rows long and 50 did worse than 10-20 on
    # CelebA attributes (docs/methods/jtt.rst); final model 2 CelebA epochs (the default).
    ids = sorted({scaled_epochs(1, data), scaled_epochs(2, data)})
    return {"id_epochs": ids, "lambda_up": [5, 10, 20], "max_iter": [scaled_epochs(2, data)]}


@register("CVaRClassifier")
def _cvar(data):
    # alpha from 0.05 (the default on CelebA attributes) to 0.5, the span of the CVaR DRO
    # baselines of Levy et al. (2020) and Liu et al. (2021); alpha * batch >= 2 so that a
    # minibatch CVaR averages at least two losses. L2 0.1: strong, as for Group DRO.
    batch = resolve_batch_size("auto", data.n_samples)
    alphas = [a for a in (0.05, 0.2, 0.5) if a * batch >= 2] or [0.5]
    return {"alpha": alphas, "l2_reg": [0.1], "max_iter": [scaled_epochs(2, data)]}


@register("GradTuneClassifier")
def _gradtune(data):
    # Kenfack et al. (2024): M' = 500, k = 400 with half of the validation set held out; a
    # search gives GradTune no validation rows to train on, so half of the training rows
    # are held out and M' is capped at half of them. lr_scale: the step constant is
    # data-dependent (0.005-0.007 best on CelebA attributes, about 0.1 on the synthetic
    # benchmark; docs/methods/gradtune.rst), so a decade either side of the default.
    held_out = data.n_samples // 2
    m = max(2 * data.n_classes, min(500, held_out // 2))
    return {"lr_scale": [0.005, 0.05, 0.5], "n_finetune": [m], "n_top": [int(0.8 * m)]}


@register("MixtureBalancedClassifier")
def _mixture(data):
    # The four class-balancing schemes of LaBonte et al. (2024), with their proposed
    # mixture at ratio 2; upsampling's expected objective is upweighting's (the same
    # minimiser for a linear head), so upweighting stands for both.
    return [{"balancing": ["subsetting", "upweighting"]}, {"balancing": ["mixture"], "mixture_ratio": [2.0]}]


@register("GroupBalancedClassifier", needs_group_labels=True)
def _group_balanced(data):
    # Idrissi et al. (2022)'s group-balancing schemes: reweighting (their RWG), its square
    # root, resampling (SUBG-like draws with replacement), over a weak-to-strong L2.
    return {"balancing": ["reweight", "sqrt_reweight", "resample"], "l2_reg": [1e-5, 1e-4, 1e-3]}


@register("AFRClassifier")
def _afr(data):
    # Qiu et al. (2023) search gamma in linspace(1, 3, 10) on CelebA and linspace(4, 20, 33)
    # on Waterbirds, reg_coeff in logspace(-3, -1, 3) and {0, 0.1, 0.2, 0.3}: three points
    # across both spans each (docs/methods/afr.rst).
    return {"gamma": [2.0, 4.0, 8.0], "reg_coeff": [0.0, 0.01, 0.1]}


@register("DFRClassifier", needs_group_labels=True)
def _dfr(data):
    # One configuration: DFR tunes its own C on halves of its held-out rows (Kirichenko et
    # al., 2023); the paper's 20 retrains on group-balanced subsets.
    return {"n_retrains": [20]}


@register("RegularizedMTLClassifier")
def _mtl(data):
    # Kulkarni et al. (2024): both weights in {e^-1, e^0, e^1}; the noise at the paper's
    # sigma^2 = 1 only, alpha_reg below e (the grid stays under a dozen settings), and the
    # constrained form of their Sec. 3 (L1 radius 1 or 10, projected SGD): 8 settings.
    # On wide features the default d x d trunk costs minutes a fit on a small machine (about 5 min
    # at d = 1,536 and 4,911 rows here); beyond d = 512 the trunk is a linear 256-wide bottleneck.
    weights = [math.exp(k) for k in (-1, 0, 1)]
    trunk = {} if data.n_features <= 512 else {"hidden_layer_sizes": [(256,)]}
    return [{"alpha_aux": weights, "alpha_reg": weights[:2], "noise_std": [1.0], **trunk},
            {"featurizer": ["diagonal"], "l1_radius": [1.0, 10.0], "alpha_aux": [1.0], "alpha_reg": [0.0],
             "solver": ["sgd"]}]
