"""Fine-tuning whole backbones with the same methods, objectives and loop as the heads.

:class:`FineTuneClassifier` fine-tunes a backbone of :mod:`feature_extraction`
(transformers text and vision models, torchvision or EfficientNet-Lite with
local weights, any module) end to end with any skgroup method. The command
``skgroup-finetune config.toml`` runs a fine-tuning from a TOML file. This
package needs ``feature_extraction``'s optional dependencies (transformers,
pillow); ``skgroup`` itself imports without them.
"""

from ._auxiliary import MaskedImageModeling, MaskedLM
from ._estimator import FineTuneClassifier
from ._inputs import BackboneDataset, Inputs, RandomResizedCropFlip, as_inputs
from ._model import BackboneClassifier, load_finetuned, save_finetuned

__all__ = [
    "BackboneClassifier",
    "BackboneDataset",
    "FineTuneClassifier",
    "Inputs",
    "MaskedImageModeling",
    "MaskedLM",
    "RandomResizedCropFlip",
    "as_inputs",
    "load_finetuned",
    "save_finetuned",
]
