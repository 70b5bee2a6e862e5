"""Tiny randomly initialised models and generated data for the tests (no hub, no downloads)."""

import string
from pathlib import Path

import numpy as np

WORDS = ("the a an cat dog man woman child sat ran is not no never nobody nothing on in at mat park street "
         "red blue big small happy sad and or but with").split()


def make_tiny_bert(folder, *, seed=0, hidden_size=32, layers=2, pooler=True):
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer that covers any lower-case ASCII text."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase) + list(string.digits)
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(string.punctuation) + list(WORDS)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    try:  # transformers 5 takes the vocabulary as ``vocab`` and ignores ``vocab_file`` (every word [UNK])
        tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    except TypeError:  # transformers 4
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    if len(tokenizer) < 100:
        raise RuntimeError(f"the tiny tokenizer holds {len(tokenizer)} tokens: it did not read {folder / 'vocab.txt'}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=pooler).eval().save_pretrained(folder)
    return folder


def make_tiny_sentence_transformer(folder, *, seed=0, max_seq_length=32, normalize=True):
    """:func:`make_tiny_bert` laid out as a sentence-transformers folder: mean pooling, then (by default) L2
    normalisation, as all-MiniLM-L6-v2 ships."""
    import json

    folder = make_tiny_bert(folder, seed=seed)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def make_tiny_vision(folder, kind, *, seed=0, image_size=32):
    """A tiny randomly initialised transformers ResNet, ConvNeXt or ViT image classifier."""
    import torch
    from transformers import AutoModelForImageClassification, ConvNextConfig, ResNetConfig, ViTConfig

    configs = {
        "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                                       num_labels=3),
        "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
        "vit": lambda: ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=image_size, patch_size=8, num_labels=3),
    }
    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_config(configs[kind]()).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    return folder


def random_images(n, size=(40, 36), *, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(n, size[1], size[0], 3), dtype=np.uint8)


def write_image_files(root, images, names, fmt="PNG"):
    from PIL import Image

    root = Path(root)
    for img, name in zip(images, names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, format=fmt)


def random_sentences(n, *, seed=0, min_words=3, max_words=12):
    rng = np.random.RandomState(seed)
    return [" ".join(rng.choice(WORDS, rng.randint(min_words, max_words))) for _ in range(n)]
