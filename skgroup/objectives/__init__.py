"""Training objectives: a per-row loss, a reduction, penalties, composed.

Every method in skgroup differs from ERM in how it scores a row (the loss:
cross-entropy, focal, a margin or prior-adjusted softmax), in how the
rows' losses become one number (the reduction: mean, weights, CVaR, Group
DRO's online mixture over groups) and in terms of the whole batch (the
penalties: an auxiliary task, invariance across groups). An
:class:`Objective` composes one of each; the engine calls it on every batch
as ``objective(output, y, idx)`` with the training-row indices of the batch,
so per-row state is looked up by index and the model is never seen: the same
objectives drive a linear head on cached features and a whole backbone.

::

    from skgroup.objectives import FocalLoss, GroupDRO, Objective
    objective = Objective(FocalLoss(gamma=2.0), GroupDRO(membership, eta=0.01))

Losses by name (the estimators' ``loss`` parameter): 'cross_entropy',
'focal', 'ldam', 'logit_adjusted' (Balanced Softmax at its default tau=1),
'generalized_cross_entropy'.
"""

from ._losses import LOSSES, CrossEntropy, GeneralizedCrossEntropy, Loss, make_loss, register_loss
from ._imbalance import FocalLoss, LDAMLoss, LogitAdjustedLoss, effective_number_weights
from ._objective import (
    AuxiliaryLoss,
    BatchTerms,
    FeatureOutput,
    MixedTargets,
    MultitaskLoss,
    MultitaskOutput,
    Objective,
    Penalty,
    RepresentationL1,
)
from ._reductions import CVaR, GroupDRO, Mean, Reduction, Weighted, cvar_of_losses
from ._penalties import (
    MMD_GAMMAS,
    CORALPenalty,
    EnvironmentMean,
    IRMPenalty,
    MMDPenalty,
    VRExPenalty,
    coral_distance,
    gaussian_mmd,
)

__all__ = [
    "LOSSES",
    "MMD_GAMMAS",
    "CORALPenalty",
    "EnvironmentMean",
    "IRMPenalty",
    "MMDPenalty",
    "VRExPenalty",
    "coral_distance",
    "gaussian_mmd",
    "AuxiliaryLoss",
    "BatchTerms",
    "CVaR",
    "CrossEntropy",
    "FocalLoss",
    "GeneralizedCrossEntropy",
    "GroupDRO",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "FeatureOutput",
    "Loss",
    "Mean",
    "MixedTargets",
    "MultitaskLoss",
    "MultitaskOutput",
    "Objective",
    "Penalty",
    "Reduction",
    "RepresentationL1",
    "Weighted",
    "cvar_of_losses",
    "effective_number_weights",
    "make_loss",
    "register_loss",
]
