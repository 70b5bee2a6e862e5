"""Group-robust classifiers on frozen features.

Each estimator's module registers its :class:`MethodSpec` (search space,
test settings, benchmark grids, whether it trains on group labels); the
import order below is the registry's order (ERM first), which the main
job's and the benchmarks' tables follow.
"""

from ._spec import (
    DataShape,
    MethodSpec,
    all_estimators,
    get_spec,
    method_specs,
    register_method,
    scaled_epochs,
    search_space,
    searched_parameters,
)
from ._base import BaseHeadClassifier, BelowERMWarning, BelowMajorityWarning  # noqa: I001 - the registry's order follows
from ._erm import ERMClassifier
from ._group_dro import GroupDROClassifier
from ._jtt import EmptyErrorSetWarning, JTTClassifier, LargeErrorSetWarning
from ._cvar import CVaRClassifier, DegenerateCVaRWarning
from ._gradtune import GradTuneClassifier, last_layer_gradient_norms
from ._mixture import MixtureBalancedClassifier
from ._mtl import (
    Diagonal,
    MultitaskHead,
    MultitaskHistory,
    ProjectConstraints,
    RegularizedMTLClassifier,
    make_multitask_head,
    project_l1_sphere,
)
from ._group_balanced import GroupBalancedClassifier
from ._afr import AFRClassifier, afr_weights
from ._dfr import DFRClassifier, TinyHeldOutGroupWarning
from ._focal import FocalClassifier
from ._cb_loss import CBLossClassifier
from ._ldam import LDAMClassifier
from ._balanced_softmax import BalancedSoftmaxClassifier
from ._environments import SingleEnvironmentWarning
from ._irm import IRMClassifier
from ._vrex import VRExClassifier
from ._coral import CORALClassifier
from ._mmd import MMDClassifier
from ._mixup import MixupClassifier
from ._lisa import LISAClassifier
from ._lff import LfFClassifier
from ._dpe import DPEClassifier

__all__ = [
    "AFRClassifier",
    "BalancedSoftmaxClassifier",
    "BaseHeadClassifier",
    "BelowERMWarning",
    "BelowMajorityWarning",
    "CBLossClassifier",
    "CORALClassifier",
    "CVaRClassifier",
    "DFRClassifier",
    "DPEClassifier",
    "DataShape",
    "DegenerateCVaRWarning",
    "Diagonal",
    "ERMClassifier",
    "EmptyErrorSetWarning",
    "FocalClassifier",
    "GradTuneClassifier",
    "GroupBalancedClassifier",
    "GroupDROClassifier",
    "IRMClassifier",
    "JTTClassifier",
    "LDAMClassifier",
    "LISAClassifier",
    "LargeErrorSetWarning",
    "LfFClassifier",
    "MMDClassifier",
    "MethodSpec",
    "MixtureBalancedClassifier",
    "MixupClassifier",
    "MultitaskHead",
    "MultitaskHistory",
    "ProjectConstraints",
    "RegularizedMTLClassifier",
    "SingleEnvironmentWarning",
    "TinyHeldOutGroupWarning",
    "VRExClassifier",
    "afr_weights",
    "all_estimators",
    "get_spec",
    "last_layer_gradient_norms",
    "make_multitask_head",
    "method_specs",
    "project_l1_sphere",
    "register_method",
    "scaled_epochs",
    "search_space",
    "searched_parameters",
]
