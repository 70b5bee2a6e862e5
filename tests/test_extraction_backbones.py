"""Backbones: penultimate features per family (shapes and values against the models run by hand), errors."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from feature_extraction import ImagePreprocessing, ModelNotFoundError, load_backbone  # noqa: E402
from feature_extraction._testing import make_tiny_bert, make_tiny_vision, random_images, random_sentences  # noqa: E402


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def _manual(folder, texts, pairs=None):
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder).eval()
    enc = tok(texts, pairs, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    return enc, out


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_bert_pooling_matches_manual(bert_folder, pooling):
    texts = random_sentences(5)
    bb = load_backbone(bert_folder, pooling=pooling)
    with torch.inference_mode():
        feats = bb(bb.collate(texts)).numpy()
    enc, out = _manual(bert_folder, texts)
    if pooling == "cls":
        ref = out.last_hidden_state[:, 0]
    elif pooling == "mean":
        m = enc["attention_mask"].unsqueeze(-1).float()
        ref = (out.last_hidden_state * m).sum(1) / m.sum(1)
    else:
        ref = out.pooler_output
    assert feats.shape == (5, 32)
    np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5)
    assert bb.identity()["pooling"] == pooling


def test_bert_pair_template(bert_folder):
    a, b = random_sentences(4, seed=1), random_sentences(4, seed=2)
    bb = load_backbone(bert_folder)  # BERT-style default: [CLS] pooling, the tokenizer's pair template
    batch = bb.collate(list(zip(a, b)))
    assert (batch["single"]["token_type_ids"] == 1).any()  # [CLS] a [SEP] b [SEP]
    with torch.inference_mode():
        feats = bb(batch).numpy()
    _, out = _manual(bert_folder, a, b)
    np.testing.assert_allclose(feats, out.last_hidden_state[:, 0].numpy(), atol=1e-5)


def test_bert_siamese_pairs(bert_folder):
    a, b = random_sentences(4, seed=1), random_sentences(4, seed=2)
    bb = load_backbone(bert_folder, pair_mode="siamese", pooling="mean")
    with torch.inference_mode():
        feats = bb(bb.collate(list(zip(a, b)))).numpy()
        u = bb(bb.collate(a)).numpy()
        v = bb(bb.collate(b)).numpy()
    assert feats.shape == (4, 4 * 32)
    np.testing.assert_allclose(feats, np.concatenate([u, v, np.abs(u - v), u * v], 1), atol=1e-5)


def test_sentence_transformers_folder_defaults(tmp_path):
    folder = make_tiny_bert(tmp_path / "st")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    bb = load_backbone(folder)
    assert (bb.pooling, bb.pair_mode, bb.normalize, bb.max_length) == ("mean", "siamese", True, 16)
    with torch.inference_mode():
        u = bb(bb.collate(random_sentences(3))).numpy()
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("kind", ["resnet", "convnext", "vit"])
def test_vision_penultimate_is_classifier_input(tmp_path, kind):
    from transformers import AutoModelForImageClassification

    folder = make_tiny_vision(tmp_path / kind, kind)
    bb = load_backbone(folder, image_size=32, resize=32)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        feats = bb(x)
    # reference: the input of the untouched model's final classification layer
    ref = AutoModelForImageClassification.from_pretrained(folder).eval()
    captured = {}
    layer = ref.classifier[-1] if isinstance(ref.classifier, nn.Sequential) else ref.classifier
    layer.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        ref(pixel_values=x)
    assert feats.shape == (3, 16) == captured["x"].shape
    np.testing.assert_allclose(feats.numpy(), captured["x"].numpy(), atol=1e-5)
    assert bb.channels_last_ok == (kind != "vit")


def test_custom_module_with_features_fn():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def penultimate(module, x):
        return module.conv(x).mean((2, 3))

    net = Net().eval()
    bb = load_backbone(net, features_fn=penultimate, image_size=16, resize=16)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        np.testing.assert_allclose(bb(x).numpy(), penultimate(net, x).numpy(), atol=1e-6)
    assert bb.identity()["family"] == "custom"
    other = load_backbone(Net().eval(), features_fn=penultimate)
    assert other.identity()["weights_sha256"] != bb.identity()["weights_sha256"]


def _fake_torchvision(monkeypatch):
    class TinyTV(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 6, 3)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 10))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3), keepdim=True))

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(list_models=lambda: ["tinytv", "resnet50"],
                                      get_model=lambda name, weights=None: TinyTV())
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    return TinyTV


def test_torchvision_by_name_with_local_weights(tmp_path, monkeypatch):
    TinyTV = _fake_torchvision(monkeypatch)
    torch.manual_seed(0)
    net = TinyTV().eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    bb = load_backbone("torchvision:tinytv", weights=tmp_path / "w.pth", image_size=16, resize=16)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        feats = bb(x)
        hidden = net.classifier[:3](net.features(x).mean((2, 3), keepdim=True))  # input of the last Linear
    assert feats.shape == (2, 5)
    np.testing.assert_allclose(feats.numpy(), hidden.numpy(), atol=1e-6)
    with pytest.raises(ModelNotFoundError, match="close names"):
        load_backbone("torchvision:tinytw", weights=tmp_path / "w.pth")


def test_torchvision_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ImportError, match="torchvision is not installed"):
        load_backbone("resnet50", weights=tmp_path / "w.pth")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found.*argument weights"):
        load_backbone("resnet50", weights=tmp_path / "missing.pth")
    with pytest.raises(ModelNotFoundError, match="Unknown model 'no-such-model-xyz'"):
        load_backbone("no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        load_backbone("someorg/some-bert")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_backbone(str(tmp_path / "nope" / "model"))
    with pytest.raises(ValueError, match="pooling must be one of"):
        load_backbone(make_tiny_bert(tmp_path / "b"), pooling="max")


def test_efficientnet_lite_random_shape():
    pytest.importorskip("efficientnet_lite_pytorch")
    bb = load_backbone("efficientnet-lite0", weights="random", image_size=64, resize=64)
    with torch.inference_mode():
        assert bb(torch.randn(2, 3, 64, 64)).shape == (2, 1280)
    assert bb.preprocessing.mean == (127 / 255,) * 3  # EfficientNet-Lite's (x - 127) / 128


def test_image_preprocessing_resize_crop_normalise():
    pp = ImagePreprocessing(size=16, resize=20, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = pp(Image.new("RGB", (40, 36), (255, 0, 51)))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 5, 5].numpy(), [2.0, -2.0, (0.2 - 0.5) / 0.25], atol=1e-5)
    # crop offsets follow torchvision's CenterCrop rounding: no resize, 7 px spare -> offset round(3.5) = 4
    img = np.zeros((16, 23, 3), np.uint8)
    img[:, 4] = 255
    x = ImagePreprocessing(size=16, resize=16, interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1))(
        Image.fromarray(img))
    assert x[0, :, 0].min() == 1 and x[0, :, 1].max() == 0
    # the shorter side goes to `resize`, the longer one scales and rounds down (torchvision.transforms.Resize)
    pp = ImagePreprocessing(size=8, resize=10)
    assert pp(Image.fromarray(random_images(1, size=(37, 20))[0])).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="resize must be"):
        ImagePreprocessing(size=16, resize=8)


def test_out_of_memory_batches_are_split(tmp_path):
    from feature_extraction import ArrayImageDataset, extract_features
    from skgroup.datasets import load_embeddings

    sizes = []

    def picky(module, x):  # "runs out of memory" above 3 images
        if x.shape[0] > 3:
            raise torch.OutOfMemoryError("simulated")
        sizes.append(x.shape[0])
        return x.mean((2, 3))

    bb = load_backbone(nn.Identity(), features_fn=picky, image_size=8, resize=8)
    images = random_images(10, size=(8, 8))
    out = extract_features(bb, ArrayImageDataset(images, np.zeros(10, int)), tmp_path / "c", batch_size=10,
                           progress=False)
    ref = torch.stack([bb.preprocessing(Image.fromarray(im)) for im in images]).mean((2, 3)).numpy()
    np.testing.assert_allclose(load_embeddings(out).features, ref, atol=1e-6)
    assert max(sizes) <= 3 and sum(sizes) == 10


def test_transformers_image_processor_is_used_when_present(tmp_path):
    from transformers import ViTImageProcessor

    folder = make_tiny_vision(tmp_path / "vit", "vit")
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(folder)
    img = Image.fromarray(random_images(1, size=(50, 40))[0])
    bb = load_backbone(folder)  # processor='auto': the folder's preprocessor_config.json
    assert bb.preprocessing_spec()["kind"] == "transformers-processor"
    np.testing.assert_allclose(bb.prepare(img).numpy(), processor(images=img, return_tensors="np")["pixel_values"][0],
                               atol=1e-6)
    own = load_backbone(folder, processor=None, image_size=32, resize=32)
    assert own.preprocessing_spec()["kind"] == "resize-center-crop"


def test_half_precision_checkpoint_loads_in_float32(tmp_path):
    from transformers import BertModel

    folder = make_tiny_bert(tmp_path / "bert16")
    BertModel.from_pretrained(folder).half().save_pretrained(folder)  # an fp16 checkpoint
    bb = load_backbone(folder)
    assert {p.dtype for p in bb.module.parameters()} == {torch.float32}  # as the spec records
