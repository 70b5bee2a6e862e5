"""A backbone classifier with an auxiliary head: the module of regularized multitask fine-tuning.

:class:`MultitaskBackboneClassifier` is a
:class:`~skgroup.finetune.BackboneClassifier` (the same backbone, the
same linear head, the same prediction path) plus an auxiliary head:
:class:`MLMHead` on the last layer's token states of a text encoder, or
:class:`SimMIMHead` on the last feature map of an image model. In
training mode it returns a :class:`~skgroup.objectives.MultitaskOutput`
(end-task logits, the pooled representations h_end and h_aux, the
auxiliary loss), which :class:`~skgroup.objectives.MultitaskLoss` turns
into eq. 9 of Kulkarni et al. (TMLR 2024); in eval mode the logits alone,
so validation, prediction and saving are those of the plain classifier.
"""

import copy
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..objectives import MultitaskOutput
from ._auxiliary import AuxBatch, check_mask_geometry
from ._model import BackboneClassifier

__all__ = ["MultitaskBackboneClassifier", "MLMHead", "SimMIMHead", "make_auxiliary_head", "image_parts"]

# image families whose pooled features and last feature map image_parts reads (checked in tests
# against the backbone's own features)
_MIM_TYPES = {"vit", "resnet", "convnext", "convnextv2"}


class MLMHead(nn.Module):
    """BERT's MLM head: dense, activation, LayerNorm, then a decoder tied to the word embeddings, plus a bias.

    ``decoder.weight`` *is* ``embeddings.weight`` (one tensor, trained by
    both tasks), as ``BertForMaskedLM`` ties it.
    """

    def __init__(self, hidden_size, embeddings, *, activation="gelu", eps=1e-12):
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[activation] if isinstance(activation, str) else activation
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(embeddings.embedding_dim, embeddings.num_embeddings, bias=False)
        self.decoder.weight = embeddings.weight
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))

    def forward(self, hidden):
        return self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias

    def loss(self, backbone, batch, labels):
        """(h_aux, L_aux): pooled features of the masked batch and the mean cross-entropy over selected tokens."""
        pooled, total, count = {}, None, 0
        for key, enc in batch.items():
            z, hidden = backbone.encode(enc, return_hidden=True)
            pooled[key] = z
            lab = labels[key]
            sel = lab != -100
            # the vocabulary projection only where the loss reads it: the selected ~15% of tokens
            ce = F.cross_entropy(self(hidden[sel]).float(), lab[sel], reduction="sum")
            total = ce if total is None else total + ce
            count += sel.sum()
        h = pooled["single"] if "single" in pooled else _siamese(pooled["a"], pooled["b"])
        return h, total / torch.clamp(torch.as_tensor(count, device=total.device), min=1)


def _siamese(u, v):
    # TextBackbone's pair features, so h_aux is the same representation as h_end
    return torch.cat([u, v, (u - v).abs(), u * v], dim=1)


def image_parts(body, x):
    """(pooled features, last feature map (B, C, h, w)) of a transformers ViT, ResNet or ConvNeXt classifier,
    or of an EfficientNet-Lite.

    The pooled features are what the backbone's classifier reads (a ViT's
    final-normed [CLS] token, a CNN's pooler output, EfficientNet's global
    average of its head convolution); the feature map is a ViT's patch
    tokens as a grid, or a CNN's last stage.
    """
    if _is_efficientnet(body):
        fmap = body.extract_features(x)
        return fmap.mean((2, 3)), fmap
    out = body.base_model(pixel_values=x)
    lhs = out.last_hidden_state
    if lhs.ndim == 3:
        p = body.config.patch_size
        gh, gw = x.shape[2] // p, x.shape[3] // p
        tokens = lhs[:, lhs.shape[1] - gh * gw:]
        return lhs[:, 0], tokens.transpose(1, 2).reshape(lhs.shape[0], lhs.shape[2], gh, gw)
    return out.pooler_output.flatten(1), lhs


def _is_efficientnet(body):
    # efficientnet-lite-pytorch's EfficientNet: extract_features is its last feature map (before pooling)
    return not hasattr(body, "base_model") and callable(getattr(body, "extract_features", None))


class SimMIMHead(nn.Module):
    """SimMIM's decoder (1x1 conv to stride^2 * 3 channels, pixel shuffle) and, for a ViT, the input mask token.

    ``mask_token`` (ViT only) is a learned (3, p, p) pixel patch tiled over
    the masked tokens; CNN inputs are zeroed where masked.
    """

    def __init__(self, channels, stride, *, model_patch=None):
        super().__init__()
        self.stride = int(stride)
        self.decoder = nn.Sequential(nn.Conv2d(channels, self.stride ** 2 * 3, kernel_size=1),
                                     nn.PixelShuffle(self.stride))
        self.model_patch = model_patch
        self.mask_token = nn.Parameter(torch.zeros(3, model_patch, model_patch)) if model_patch else None

    def masked_input(self, x, mask):
        m = mask[:, None].to(x.dtype)
        if self.mask_token is None:
            return x * (1 - m)
        h, w = x.shape[2] // self.model_patch, x.shape[3] // self.model_patch
        return x * (1 - m) + self.mask_token.repeat(1, h, w)[None] * m

    def loss(self, backbone, x, mask):
        """(h_aux, L_aux): pooled features of the masked images and the L1 error on the masked pixels."""
        pooled, fmap = image_parts(backbone.module, self.masked_input(x, mask))
        rec = self.decoder(fmap)
        if rec.shape[-2:] != x.shape[-2:]:  # a final stride that does not divide the input exactly
            rec = F.interpolate(rec, size=x.shape[-2:], mode="bilinear", align_corners=False)
        m = mask[:, None].to(rec.dtype)
        err = (rec.float() - x.float()).abs() * m
        return pooled, err.sum() / (m.sum() * x.shape[1]).clamp_min(1)


def _checkpoint_mlm_state(folder):
    """The MLM head's weights in a transformers folder, renamed to :class:`MLMHead`'s, or None."""
    if folder is None or not Path(folder).is_dir():
        return None
    prefixes = {  # BERT-family, RoBERTa-family
        "cls.predictions.": {"transform.dense.": "dense.", "transform.LayerNorm.": "norm.", "bias": "bias",
                             "decoder.bias": "bias"},
        "lm_head.": {"dense.": "dense.", "layer_norm.": "norm.", "bias": "bias", "decoder.bias": "bias"},
    }
    state = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                for prefix, names in prefixes.items():
                    if not key.startswith(prefix):
                        continue
                    rest = key[len(prefix):]
                    for old, new in names.items():
                        if rest == old or (old.endswith(".") and rest.startswith(old)):
                            state[new + rest[len(old):] if old.endswith(".") else new] = f.get_tensor(key)
    needed = {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias"}
    return state if needed <= set(state) else None


def make_auxiliary_head(task, backbone, *, geometry=None, seed=0):
    """The auxiliary head of ``task`` for ``backbone`` (see :class:`MaskedLM` for where an MLM head comes from).

    ``geometry``: for MIM, ``(channels, feature height, input height,
    input width)`` of the backbone's last feature map on a training input.
    """
    body = backbone.module
    generator = torch.Generator().manual_seed(int(seed))
    if task.modality == "text":
        config = getattr(body, "config", None)
        embeddings = body.get_input_embeddings() if hasattr(body, "get_input_embeddings") else None
        if config is None or embeddings is None or getattr(backbone, "features_fn", None) is not None:
            raise ValueError(f"auxiliary=MaskedLM needs a transformers text encoder; {backbone.name} is not one.")
        hidden = int(config.hidden_size)
        if embeddings.embedding_dim != hidden:
            raise ValueError(f"{backbone.name}: the word embeddings ({embeddings.embedding_dim}) and the hidden size "
                             f"({hidden}) differ, so a tied MLM decoder cannot read the hidden states.")
        head = MLMHead(hidden, embeddings, activation=getattr(config, "hidden_act", "gelu"),
                       eps=float(getattr(config, "layer_norm_eps", 1e-12)))
        state = None if task.head == "new" else _checkpoint_mlm_state(backbone.source.get("path"))
        if state is not None:
            head.load_state_dict(state, strict=False)  # decoder.weight: the (tied) embeddings
        elif task.head == "checkpoint":
            raise ValueError(f"MaskedLM(head='checkpoint'): {backbone.name} holds no MLM head (cls.predictions or "
                             "lm_head); use head='auto' to build one.")
        else:
            std = float(getattr(config, "initializer_range", 0.02))
            with torch.no_grad():
                head.dense.weight.normal_(0.0, std, generator=generator)
                head.dense.bias.zero_()
            warnings.warn(
                f"{backbone.name} ships without an MLM head: auxiliary=MaskedLM builds a BERT-style head whose "
                "transform layer (dense + LayerNorm) starts untrained; the decoder is tied to the word embeddings.",
                UserWarning, stacklevel=3,
            )
        return head
    model_type = getattr(getattr(body, "config", None), "model_type", None)
    if not _is_efficientnet(body) and (model_type not in _MIM_TYPES or not hasattr(body, "base_model")):
        raise ValueError(f"auxiliary=MaskedImageModeling reads the last feature map of a transformers ViT, ResNet or "
                         f"ConvNeXt classifier or of an EfficientNet-Lite; {backbone.name} "
                         f"({model_type or type(body).__name__}) is not one. "
                         "Load such a model folder as the backbone, or use auxiliary=None.")
    channels, fh, height, width = geometry
    model_patch = int(body.config.patch_size) if model_type == "vit" else None
    check_mask_geometry(task, height, width, model_patch)
    head = SimMIMHead(channels, max(height // fh, 1), model_patch=model_patch)
    with torch.no_grad():  # the 1x1 conv's default init, from the stage's generator
        bound = 1.0 / channels ** 0.5
        head.decoder[0].weight.uniform_(-bound, bound, generator=generator)
        head.decoder[0].bias.uniform_(-bound, bound, generator=generator)
    return head


class MultitaskBackboneClassifier(BackboneClassifier):
    """``head(backbone(batch))`` plus an auxiliary head on the same body (see the module docstring).

    ``aux_head`` None trains the end task with the L1 penalty on h_end
    only (``alpha_aux=0``: the paper's end-task + L1 ablation).
    """

    def __init__(self, backbone, n_features, n_classes, aux_head=None, **head_options):
        super().__init__(backbone, n_features, n_classes, **head_options)
        self.aux_head = aux_head
        self._head_last()

    def _head_last(self):
        # the end head stays the last registered Linear: methods find "the last layer" as the last
        # nn.Linear of modules() (GradTune's norms, group balancing's head-only stage)
        self._modules["head"] = self._modules.pop("head")

    def forward(self, batch):
        end = batch.end if isinstance(batch, AuxBatch) else batch
        h_end = self.features(end)
        logits = self.head(self.dropout(h_end))  # the L1 penalty reads h_end itself, not its dropped-out copy
        if not self.training:
            return logits
        if self.aux_head is None or not isinstance(batch, AuxBatch):
            return MultitaskOutput(logits, h_end=h_end)
        h_aux, aux_loss = self.aux_head.loss(self.backbone, batch.aux, batch.target)
        return MultitaskOutput(logits, h_end=h_end, h_aux=h_aux, aux_loss=aux_loss)

    def auxiliary_parameters(self):
        """The auxiliary head's own parameters (not the body's: the tied decoder weight is the body's)."""
        if self.aux_head is None:
            return []
        body = {id(p) for p in self.body.parameters()}
        return [p for p in self.aux_head.parameters() if id(p) not in body]

    def __deepcopy__(self, memo):
        # backbone, body, head and aux head copied together, so the tied decoder stays tied
        new = MultitaskBackboneClassifier.__new__(MultitaskBackboneClassifier)
        nn.Module.__init__(new)
        new.backbone = copy.deepcopy(self.backbone, memo)
        new.body = new.backbone.module
        new.dropout = copy.deepcopy(self.dropout, memo)
        new.aux_head = copy.deepcopy(self.aux_head, memo)
        new.head = copy.deepcopy(self.head, memo)
        new.train(self.training)
        return new
