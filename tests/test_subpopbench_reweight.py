"""SubpopBench's ReWeight, SqrtReWeight and CBLoss objectives, transcribed, against skgroup's estimators.

SubpopBench (Yang et al., ICML 2023, ``subpopbench/learning/algorithms.py``) weighs the groups
``g = y * n_attributes + a`` of its training set (with ``--train_attr no`` every ``a`` is 0 and the
groups are the classes), normalises the group weights to average 1 over the groups, and minimises the
*unnormalised* batch mean ``mean_i w_{g_i} l_i`` with SGD weight decay. skgroup's weighted mean is
normalised by the weights' sum, so SubpopBench's objective is ``mean_i(w_{g_i})`` times skgroup's:
the same minimiser once ``l2_reg = weight_decay / mean_i(w_{g_i})``. These tests check that mapping
by the gradient of the transcribed objective at the estimators' solutions.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skgroup import CBLossClassifier, GroupBalancedClassifier, MixtureBalancedClassifier
from skgroup.datasets import make_spurious_features

F64 = dict(dtype="float64", tol=1e-10, max_iter=2000)
WEIGHT_DECAY = 1e-3


def subpopbench_group_weights(grp_sizes, method, beta=None):
    """ReWeight / SqrtReWeight / CBLoss ``weights_per_grp`` as SubpopBench's __init__ computes them."""
    grp_sizes = [x if x else np.inf for x in grp_sizes]
    if method == "ReWeight":
        w = 1 / np.array(grp_sizes)
    elif method == "SqrtReWeight":
        w = 1 / np.sqrt(np.array(grp_sizes))
    else:  # CBLoss
        effective_num = np.array(1.0 - np.power(beta, grp_sizes))
        effective_num[effective_num == 1] = np.inf
        w = (1.0 - beta) / effective_num
    return w / np.sum(w) * len(grp_sizes)


def subpopbench_objective(coef, intercept, X, y, groups, weights_per_grp, weight_decay):
    """``(weights_per_grp[g] * CE).mean()`` over the full batch, plus the L2 penalty of the weights
    (SubpopBench's SGD also decays the bias; skgroup never penalises intercepts)."""
    W = torch.tensor(coef, requires_grad=True)
    b = torch.tensor(intercept, requires_grad=True)
    losses = F.cross_entropy(torch.as_tensor(X) @ W.T + b, torch.as_tensor(y), reduction="none")
    value = (torch.as_tensor(weights_per_grp)[torch.as_tensor(groups)] * losses).mean()
    value = value + 0.5 * weight_decay * (W**2).sum()
    return max(float(g.abs().max()) for g in torch.autograd.grad(value, (W, b)))


@pytest.fixture(scope="module")
def data():
    X, y, g = make_spurious_features(1200, n_core=20, n_spurious=20, random_state=0)
    keep = (y == 0) | (np.arange(len(y)) % 4 == 0)  # class 1 to a quarter: classes imbalanced too
    return X[keep].astype(np.float64), y[keep], g[keep]  # g = 2 y + a, SubpopBench's y * n_attributes + a


@pytest.mark.parametrize("method, balancing", [("ReWeight", "reweight"), ("SqrtReWeight", "sqrt_reweight")])
@pytest.mark.parametrize("train_attr", ["yes", "no"])
def test_group_balanced_classifier_is_subpopbench_reweighting(data, method, balancing, train_attr):
    X, y, g = data
    groups = g if train_attr == "yes" else y  # --train_attr no: a = 0, the groups are the classes
    sizes = np.bincount(groups, minlength=4 if train_attr == "yes" else 2)
    weights = subpopbench_group_weights(sizes, method)
    scale = weights[groups].mean()
    kwargs = {"group_labels": g} if train_attr == "yes" else {}  # without group labels: the classes
    est = GroupBalancedClassifier(balancing=balancing, l2_reg=WEIGHT_DECAY / scale, **F64).fit(X, y, **kwargs)
    assert subpopbench_objective(est.coef_, est.intercept_, X, y, groups, weights, WEIGHT_DECAY) < 1e-6
    # the rescaled L2 is what makes them one model: at l2_reg = weight_decay it is another
    other = GroupBalancedClassifier(balancing=balancing, l2_reg=WEIGHT_DECAY, **F64).fit(X, y, **kwargs)
    assert subpopbench_objective(other.coef_, other.intercept_, X, y, groups, weights, WEIGHT_DECAY) > 1e-5


def test_class_reweighting_without_group_labels_is_also_upweighting(data):
    # ReWeight with --train_attr no weighs 1 / n_c, as MixtureBalancedClassifier's upweighting (n_max / n_c)
    X, y, _ = data
    a = GroupBalancedClassifier(balancing="reweight", **F64).fit(X, y)
    b = MixtureBalancedClassifier(balancing="upweighting", **F64).fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-6)
    np.testing.assert_allclose(a.intercept_, b.intercept_, atol=1e-6)


def test_cb_loss_classifier_is_subpopbench_cbloss_without_training_attributes(data):
    X, y, _ = data
    beta = 0.999
    weights = subpopbench_group_weights(np.bincount(y), "CBLoss", beta)
    est = CBLossClassifier(beta=beta, l2_reg=WEIGHT_DECAY / weights[y].mean(), **F64).fit(X, y)
    np.testing.assert_allclose(est.class_weight_, weights, rtol=1e-12)  # the same normalisation
    assert subpopbench_objective(est.coef_, est.intercept_, X, y, y, weights, WEIGHT_DECAY) < 1e-6
