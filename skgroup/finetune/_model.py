"""A backbone with a linear softmax head, trainable end to end, and saving it.

:class:`BackboneClassifier` wraps a :class:`feature_extraction.Backbone`
(its module becomes a trainable submodule) and a ``Linear`` head on the
penultimate features. :func:`save_finetuned` writes the fine-tuned backbone
where :func:`feature_extraction.load_backbone` reads it back (a transformers
folder, or a weights file beside the model name) and the head beside it, as
safetensors (no pickles).
"""

import copy
import json
import shutil
from pathlib import Path

import torch
from torch import nn

__all__ = ["BackboneClassifier", "resolve_head", "trainable_backbone", "save_finetuned", "load_finetuned"]


def trainable_backbone(backbone):
    """A copy of ``backbone`` whose module trains (extraction freezes it)."""
    backbone = copy.deepcopy(backbone)
    for p in backbone.module.parameters():
        p.requires_grad_(True)
    backbone.module.train()
    return backbone


HEAD_INITS = ("zeros", "normal", "uniform")


class BackboneClassifier(nn.Module):
    """``head(dropout(backbone(batch)))``: logits from a batch of backbone inputs.

    Parameters
    ----------
    backbone : feature_extraction.Backbone (its module becomes a submodule)
    n_features, n_classes : int
    init : {'zeros', 'normal', 'uniform'}, default='zeros'
        The head's initial weights: zeros (as the linear heads start);
        ``normal(0, init_std)`` with a zero bias (what transformers'
        ``_init_weights`` gives a new classifier); or PyTorch's default
        ``Linear`` initialisation, ``U(-1/sqrt(d), 1/sqrt(d))`` for weight
        and bias (torchvision's and EfficientNet-Lite's classifiers).
    init_std : float, default=0.02
    dropout : float, default=0.0
        Dropout on the features before the head, in training mode (as
        ``BertForSequenceClassification`` applies before its classifier).
    seed : int, default=0
        Seeds the initialisation (a generator of its own: the global torch
        random state is not advanced).
    """

    def __init__(self, backbone, n_features, n_classes, *, init="zeros", init_std=0.02, dropout=0.0, seed=0):
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"init must be one of {HEAD_INITS}; got {init!r}.")
        self.backbone = backbone
        self.body = backbone.module  # registered, so parameters(), state_dict() and DDP see it
        self.dropout = nn.Dropout(float(dropout))  # no parameters: state dicts and checkpoints are unchanged
        self.head = nn.Linear(int(n_features), int(n_classes))
        generator = torch.Generator().manual_seed(int(seed) % 2**63)
        with torch.no_grad():
            if init == "zeros":
                self.head.weight.zero_()
                self.head.bias.zero_()
            elif init == "normal":
                self.head.weight.normal_(0.0, float(init_std), generator=generator)
                self.head.bias.zero_()
            else:
                bound = 1.0 / max(int(n_features), 1) ** 0.5
                self.head.weight.uniform_(-bound, bound, generator=generator)
                self.head.bias.uniform_(-bound, bound, generator=generator)

    def features(self, batch):
        return self.backbone(batch)

    def forward(self, batch):
        return self.head(self.dropout(self.features(batch)))

    def __setstate__(self, state):
        super().__setstate__(state)
        if "dropout" not in self._modules:  # pickled before the head had its dropout
            self.dropout = nn.Dropout(0.0)

    def __deepcopy__(self, memo):
        # the Backbone wrapper and the registered body are one module: copy them together
        new = BackboneClassifier.__new__(BackboneClassifier)
        nn.Module.__init__(new)
        new.backbone = copy.deepcopy(self.backbone, memo)
        new.body = new.backbone.module
        new.dropout = copy.deepcopy(self.dropout, memo)
        new.head = copy.deepcopy(self.head, memo)
        new.train(self.training)
        return new


def resolve_head(backbone, init="auto", dropout="auto"):
    """``(init, init_std, dropout)`` of the head :class:`BackboneClassifier` gets for ``backbone``.

    'auto' follows the model's own classifier when the backbone trains:
    transformers models initialise a new classifier ``normal(0,
    config.initializer_range)``, and BERT-family text classifiers apply
    dropout ``config.classifier_dropout`` (else ``hidden_dropout_prob``)
    before it; other models get PyTorch's default ``Linear`` initialisation
    and no extra dropout (torchvision's and EfficientNet-Lite's own dropout
    sits inside the backbone, before the classifier that the features
    replace). A backbone without parameters (nothing to fine-tune) gets a
    zero head and no dropout, so the path trains exactly what the head
    estimators train.
    """
    body = backbone.module
    trains = any(True for _ in body.parameters())
    config = getattr(body, "config", None)
    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    if init == "auto":
        init = "zeros" if not trains else ("normal" if hasattr(config, "initializer_range") else "uniform")
    if dropout == "auto":
        dropout = 0.0
        if trains and backbone.modality == "text" and config is not None and getattr(backbone, "features_fn",
                                                                                      None) is None:
            p = getattr(config, "classifier_dropout", None)
            p = getattr(config, "hidden_dropout_prob", None) if p is None else p
            dropout = float(p or 0.0)
    return init, std, float(dropout)


def save_finetuned(model, folder, *, classes, backbone_source=None, overwrite=False):
    """Write the fine-tuned backbone and head to ``folder``; returns the folder.

    ``folder`` must be absent or empty: a folder that holds anything is
    refused (another model's weights, a README of the user's) unless
    ``overwrite=True``, which replaces the files this function writes and
    keeps every other file. The backbone's own source folder is refused
    in any case.

    A transformers backbone is saved with ``save_pretrained`` (and its
    tokenizer; the other files of a sentence-transformers folder, e.g. its
    pooling, are copied from ``backbone_source``), so
    ``feature_extraction.load_backbone(folder)`` and ``skgroup-extract
    folder ...`` extract fine-tuned features. Other backbones are saved as
    ``backbone.safetensors`` for ``load_backbone(name, weights=...)``. The
    head is ``head.safetensors``; ``skgroup_finetuned.json`` says what is
    where.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    source = Path(backbone_source) if backbone_source else None
    _check_save_folder(folder, source, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    body = model.body
    meta = {"backbone": backbone.name, "identity": backbone.identity(), "classes": [_plain(c) for c in classes],
            "n_features": model.head.in_features}
    if backbone.modality == "text":
        # how the features were read: load_backbone(folder) takes these as its defaults, so extraction
        # from the folder reproduces the estimator's transform without repeating them
        meta["text_options"] = {"pooling": backbone.pooling, "pair_mode": backbone.pair_mode,
                                "max_length": backbone.max_length, "normalize": bool(backbone.normalize)}
    elif backbone.modality == "image":
        meta["preprocessing"] = backbone.preprocessing_spec()
    if hasattr(body, "save_pretrained"):
        if source is not None and source.is_dir():
            for item in source.iterdir():  # sentence-transformers modules, tokenizer files, ...
                if item.suffix in (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx"):
                    continue
                target = folder / item.name
                if item.is_dir():
                    shutil.copytree(item, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(item, target)
        body.save_pretrained(folder, safe_serialization=True)
        tokenizer = getattr(backbone, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        meta["format"] = "transformers"
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()}
        save_file(state, str(folder / "backbone.safetensors"))
        meta["format"] = "state_dict"
        meta["load"] = "feature_extraction.load_backbone(<model name>, weights=<folder>/backbone.safetensors)"
    save_file({"weight": model.head.weight.detach().cpu().contiguous(),
               "bias": model.head.bias.detach().cpu().contiguous()}, str(folder / "head.safetensors"))
    (folder / "skgroup_finetuned.json").write_text(json.dumps(meta, indent=2, default=str))
    return folder


def _check_save_folder(folder, source, overwrite):
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder: a fine-tuned model is saved as a folder of "
                              "files; choose another path.")
    if source is not None and source.is_dir() and folder.exists() and folder.resolve() == source.resolve():
        raise ValueError(f"{folder} is the folder the backbone was loaded from: saving there would replace the "
                         "pretrained model's files. Choose another folder.")
    if overwrite or not folder.is_dir():
        return
    present = sorted(p.name for p in folder.iterdir())
    if present:
        shown = ", ".join(present[:5]) + (f", ... ({len(present)} entries)" if len(present) > 5 else "")
        raise FileExistsError(
            f"{folder} is not empty ({shown}): saving would replace files of the same names there (a model's "
            "weights, config, tokenizer, README). Choose a new or empty folder, or pass overwrite=True to replace "
            "the files the save writes (other files are kept)."
        )


def load_finetuned(folder, **backbone_options):
    """(backbone, head weight, head bias, classes) of a folder written by :func:`save_finetuned`.

    The backbone reads inputs as the fine-tuned estimator did, so its
    features are the estimator's ``transform``: a text folder's recorded
    pooling, pair mode, maximum length and normalisation, and a saved state
    dict's recorded image preprocessing (resize, crop, mean, std), are the
    defaults; ``backbone_options`` given here win. A transformers folder
    loads as a backbone directly; for a saved state dict pass ``model=``
    (the name or module it was fine-tuned from) in ``backbone_options``.
    """
    from safetensors.torch import load_file

    from feature_extraction import load_backbone

    folder = Path(folder)
    meta_file = folder / "skgroup_finetuned.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder} holds no skgroup_finetuned.json: not a folder written by save().")
    meta = _read_meta(meta_file)
    if meta["format"] == "transformers":
        backbone = load_backbone(folder, **backbone_options)
    else:
        model = backbone_options.pop("model", None)
        if model is None:
            raise ValueError(f"{folder} holds a state dict: pass model=<the name or module it was fine-tuned from>.")
        defaults = _image_options(meta.get("preprocessing"))
        if "preprocessing" in backbone_options or any(k in backbone_options for k in _IMAGE_KEYS):
            defaults = {}  # the caller states the preprocessing
        options = {**defaults, **backbone_options}
        if isinstance(model, nn.Module):  # a module: its own copy carries the fine-tuned weights
            model = copy.deepcopy(model)
            model.load_state_dict(load_file(str(folder / "backbone.safetensors")))
            backbone = load_backbone(model, **options)
        else:
            backbone = load_backbone(model, weights=folder / "backbone.safetensors", **options)
    head_file = folder / "head.safetensors"
    try:
        head = load_file(str(head_file))
        weight, bias = head["weight"], head["bias"]
    except Exception as exc:  # a truncated or foreign file: SafetensorError, KeyError, OSError...
        raise ValueError(f"{head_file} cannot be read as the saved head ({type(exc).__name__}: {exc}): the "
                         "folder is damaged; save the model again.") from exc
    return backbone, weight, bias, meta["classes"]


_FORMATS = ("transformers", "state_dict")


def _read_meta(meta_file):
    """The contents of skgroup_finetuned.json, with what a load needs checked, errors naming the file."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_file} is not valid JSON ({exc}): the folder is damaged; save the model "
                         "again.") from exc
    if not isinstance(meta, dict) or "format" not in meta or "classes" not in meta:
        missing = [k for k in ("format", "classes") if not isinstance(meta, dict) or k not in meta]
        raise ValueError(f"{meta_file} lacks {missing}: not a description save() writes, or damaged; save the "
                         "model again.")
    if meta["format"] not in _FORMATS:
        raise ValueError(f"{meta_file} says format {meta['format']!r}, which save() never writes (it writes "
                         f"{' or '.join(repr(f) for f in _FORMATS)}): the file is damaged or from another program.")
    return meta


_IMAGE_KEYS = ("image_size", "resize", "interpolation", "mean", "std")


def _image_options(spec):
    """load_backbone's image arguments for a recorded ImagePreprocessing spec (others: {})."""
    if not spec or spec.get("kind") != "resize-center-crop":
        return {}
    return {"image_size": spec["size"], "resize": spec["resize"], "interpolation": spec["interpolation"],
            "mean": tuple(spec["mean"]), "std": tuple(spec["std"])}


def _plain(value):
    return value.item() if hasattr(value, "item") else value
