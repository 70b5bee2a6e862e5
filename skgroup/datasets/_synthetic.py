"""The synthetic spurious-correlation setting of Sagawa et al. (2020b).

"An investigation of why overparameterization exacerbates spurious
correlations" (ICML 2020), Sec. 4: a label y and a spurious attribute a in
{-1, 1}; core features x_core ~ N(y 1, sigma_core^2 I), spurious features
x_spu ~ N(a 1, sigma_spu^2 I) with sigma_spu^2 < sigma_core^2, so the
attribute is *easier* to read than the label; a fraction ``majority_fraction``
of the samples has a = y. Their defaults are the defaults here (d_core =
d_spu = 100, sigma_core^2 = 100, sigma_spu^2 = 1, p_maj = 0.9, n = 3000),
with optional noise dimensions N(0, sigma_noise^2 / n_noise I).

y and a are returned as {0, 1} (1 for the paper's +1). Groups are numbered
by :func:`skgroup.metrics.make_group_labels`: 0 = (y0, a0), 1 = (y0, a1),
2 = (y1, a0), 3 = (y1, a1); groups 1 and 2 are the minorities.

:func:`make_mtl_toy` is the two-feature version of the same model that
Kulkarni et al. (TMLR 2024) study in their Sec. 3.
"""

import numpy as np
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_spurious_features", "make_spurious_benchmark", "make_mtl_toy"]


def make_spurious_features(
    n_samples=3000,
    *,
    n_core=100,
    n_spurious=100,
    n_noise=0,
    sigma_core=10.0,
    sigma_spurious=1.0,
    sigma_noise=1.0,
    majority_fraction=0.9,
    group_balanced=False,
    return_attribute=False,
    random_state=None,
):
    """Draw one sample of the synthetic spurious-feature task.

    Parameters
    ----------
    n_samples : int, default=3000
    n_core, n_spurious, n_noise : int
        Dimensions of the core, spurious and noise blocks.
    sigma_core, sigma_spurious, sigma_noise : float
        Standard deviations (the paper's sigma^2 are their squares);
        ``sigma_spurious < sigma_core`` makes the shortcut easier to learn.
    majority_fraction : float in [0.5, 1], default=0.9
        Fraction of samples with a == y (ignored when ``group_balanced``).
    group_balanced : bool, default=False
        Draw the four groups in equal numbers (for validation / test sets).
    return_attribute : bool, default=False
        Also return the attribute a.
    random_state : int, RandomState or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_core + n_spurious + n_noise), float32
    y : ndarray of shape (n_samples,), {0, 1}
    group_labels : ndarray of shape (n_samples,), {0, 1, 2, 3}
    a : ndarray of shape (n_samples,), only with ``return_attribute``
    """
    if not 0.5 <= majority_fraction <= 1:
        raise ValueError(f"majority_fraction must be in [0.5, 1]; got {majority_fraction}.")
    if sigma_core <= 0 or sigma_spurious <= 0:
        raise ValueError("sigma_core and sigma_spurious must be positive.")
    if n_samples < 4:
        raise ValueError(f"n_samples must be at least 4; got {n_samples}.")
    rng = check_random_state(random_state)
    y = rng.randint(0, 2, size=n_samples)
    if group_balanced:
        g = np.arange(n_samples) % 4
        rng.shuffle(g)
        y, a = g // 2, g % 2
    else:
        agree = rng.rand(n_samples) < majority_fraction
        a = np.where(agree, y, 1 - y)
    ys, as_ = 2.0 * y - 1.0, 2.0 * a - 1.0
    blocks = [
        ys[:, None] + sigma_core * rng.randn(n_samples, n_core),
        as_[:, None] + sigma_spurious * rng.randn(n_samples, n_spurious),
    ]
    if n_noise:
        blocks.append(sigma_noise / np.sqrt(n_noise) * rng.randn(n_samples, n_noise))
    X = np.hstack(blocks).astype(np.float32)
    groups = 2 * y + a  # make_group_labels' numbering for binary y and a
    out = (X, y.astype(np.int64), groups.astype(np.int64))
    return out + (a.astype(np.int64),) if return_attribute else out


def make_spurious_benchmark(
    n_train=3000, n_val=1000, n_test=2000, *, balanced_eval=True, random_state=None, **kwargs
):
    """Train / validation / test draws of :func:`make_spurious_features`.

    The training draw has the spurious correlation; with ``balanced_eval``
    the validation and test draws hold the four groups equally (as Waterbirds'
    evaluation sets do), otherwise they follow ``majority_fraction`` too.

    Returns
    -------
    Bunch with ``train``, ``val``, ``test`` (each a Bunch of ``X``, ``y``,
    ``group_labels``, ``attribute``), ``group_names`` and ``description``.
    """
    rng = check_random_state(random_state)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        X, y, g, a = make_spurious_features(
            n,
            group_balanced=balanced_eval and name != "train",
            return_attribute=True,
            random_state=rng,
            **kwargs,
        )
        splits[name] = Bunch(X=X, y=y, group_labels=g, attribute=a)
    return Bunch(
        **splits,
        group_names=["y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"],
        name="synthetic",
        description="Sagawa et al. (2020b) synthetic spurious features",
    )


def _exact_groups(n_samples, minority, rng):
    """y and a for exactly ``minority`` rows with a != y (split evenly between the
    classes) and the rest with a == y (likewise), in random order."""
    counts = [(n_samples - minority) - (n_samples - minority) // 2, minority // 2,
              minority - minority // 2, (n_samples - minority) // 2]  # groups (y, a) = 00, 01, 10, 11
    groups = np.repeat(np.arange(4), counts)
    rng.shuffle(groups)
    return groups // 2, groups % 2


def make_mtl_toy(
    n_train=1000,
    n_val=100,
    n_test=1000,
    *,
    n_minority=100,
    core_variance=0.6,
    spurious_variance=0.1,
    balanced_val=False,
    random_state=None,
):
    """The two-feature task of Kulkarni et al. (TMLR 2024), Sec. 3.

    One core and one spurious feature (d_core = d_spur = 1):
    ``x_core ~ N(y, core_variance)``, ``x_spur ~ N(a, spurious_variance)``
    with y, a in {-1, +1}; the spurious feature is the less noisy one. The
    training draw holds exactly ``n_minority`` rows with a != y (100 of
    1,000, split evenly between the classes), the test draw the four groups
    in equal numbers; the validation draw has the training proportions
    (the setting without group annotations), or equal groups with
    ``balanced_val``. The defaults are the paper's (sigma_core^2 = 0.6,
    sigma_spur^2 = 0.1, 900 majority / 100 minority training points, 100
    validation points).

    Under these variances no linear rule has a worst-group accuracy above
    ``Phi(1 / sqrt(core_variance))`` (0.902 at 0.6) on the test
    distribution: the core feature alone, read at its optimal threshold.

    y and a are returned in {0, 1}; groups are numbered 2 * y + a
    (:func:`skgroup.metrics.make_group_labels`), so groups 1 and 2 are the
    minorities.

    Parameters
    ----------
    n_train, n_val, n_test : int
    n_minority : int, default=100
        Training rows with a != y.
    core_variance, spurious_variance : float
        sigma_core^2 and sigma_spur^2.
    balanced_val : bool, default=False
    random_state : int, RandomState or None

    Returns
    -------
    Bunch with ``train``, ``val``, ``test`` (each a Bunch of ``X`` (n, 2)
    float32 with columns [core, spurious], ``y``, ``group_labels``,
    ``attribute``), ``group_names`` and ``description``.
    """
    if core_variance <= 0 or spurious_variance <= 0:
        raise ValueError(
            f"core_variance and spurious_variance must be positive; got {core_variance} and {spurious_variance}."
        )
    if not 0 <= n_minority <= n_train:
        raise ValueError(f"n_minority must be between 0 and n_train={n_train}; got {n_minority}.")
    rng = check_random_state(random_state)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n < 4:
            raise ValueError(f"n_{name} must be at least 4 (one row per group); got {n}.")
        if name == "test" or (name == "val" and balanced_val):
            g = np.arange(n) % 4
            rng.shuffle(g)
            y, a = g // 2, g % 2
        else:
            y, a = _exact_groups(n, int(round(n * n_minority / n_train)), rng)
        X = np.column_stack([
            (2.0 * y - 1) + np.sqrt(core_variance) * rng.randn(n),
            (2.0 * a - 1) + np.sqrt(spurious_variance) * rng.randn(n),
        ]).astype(np.float32)
        splits[name] = Bunch(X=X, y=y.astype(np.int64), group_labels=(2 * y + a).astype(np.int64),
                             attribute=a.astype(np.int64))
    return Bunch(
        **splits,
        group_names=["y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"],
        name="mtl-toy",
        description="Kulkarni et al. (2024) Sec. 3: one core and one spurious feature",
    )
