"""Datasets: metadata layouts, class folders, text tables, decode errors; end to end into a loadable cache."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from feature_extraction import (  # noqa: E402
    ExtractionMismatchError,
    ImageDecodeError,
    MetadataError,
    TextDataset,
    extract_features,
    image_folder_dataset,
    load_backbone,
    load_dataset,
    metadata_image_dataset,
)
from feature_extraction._testing import (  # noqa: E402
    make_tiny_bert,
    make_tiny_vision,
    random_images,
    random_sentences,
    write_image_files,
)
from skgroup.datasets import load_embeddings, split_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    folder = make_tiny_vision(tmp_path_factory.mktemp("vision") / "resnet", "resnet")
    return load_backbone(folder, image_size=16, resize=18)


def _waterbirds(root, n=12):
    names = [f"{i:03d}.Bird/img_{i}.jpg" for i in range(n)]
    write_image_files(root, random_images(n), names, fmt="JPEG")
    y, place, split = np.arange(n) % 2, (np.arange(n) // 2) % 2, np.arange(n) % 3
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for i in range(n):
            w.writerow([i + 1, names[i], y[i], split[i], place[i], f"/b/bamboo/{i}.jpg"])
    return names, y, place, split


def test_waterbirds_layout_end_to_end(tmp_path, resnet):
    names, y, place, split = _waterbirds(tmp_path / "wb")
    ds = metadata_image_dataset(tmp_path / "wb")  # columns detected
    assert ds.attribute_names == ["place"] and ds.spurious_attribute == "place"
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(ds.split, split)
    out = extract_features(resnet, tmp_path / "wb", tmp_path / "cache", dataset_options={"layout": "waterbirds"},
                           progress=False, shard_size=5, batch_size=4)
    emb = load_embeddings(out, verify=True)
    assert emb.features.shape == (12, 16) and emb.features.dtype == np.float32
    np.testing.assert_array_equal(emb.ids, names)
    np.testing.assert_array_equal(emb.attributes[:, 0], place)
    assert emb.label_names == ["landbird", "waterbird"]
    # features equal the backbone run directly on the preprocessed images
    x = torch.stack([resnet.preprocessing(ds.get(i)) for i in range(12)])
    with torch.inference_mode():
        np.testing.assert_allclose(emb.features, resnet(x).numpy(), atol=1e-5)
    s = split_embeddings(out)
    assert s.train.X.shape[0] == 4 and set(s.test.group_labels) <= {0, 1, 2, 3}


def test_celeba_attribute_layout(tmp_path):
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    write_image_files(root / "img_align_celeba", random_images(6), names, fmt="JPEG")
    blond, male = [1, -1, -1, 1, -1, -1], [-1, -1, 1, 1, 1, -1]
    with open(root / "list_attr_celeba.csv", "w") as f:
        f.write("image_id,Bald,Blond_Hair,Male\n")
        f.writelines(f"{n},-1,{b},{m}\n" for n, b, m in zip(names, blond, male))
    with open(root / "list_eval_partition.csv", "w") as f:
        f.write("image_id,partition\n")
        f.writelines(f"{n},{i % 3}\n" for i, n in enumerate(names))
    ds = load_dataset(root, layout="celeba-attr")
    np.testing.assert_array_equal(ds.labels, [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ds.attributes[:, 0], [0, 0, 1, 1, 1, 0])
    assert ds.attribute_names == ["male"] and ds.files[0] == "img_align_celeba/000001.jpg"
    np.testing.assert_array_equal(ds.split, [0, 1, 2, 0, 1, 2])


def test_metadata_missing_columns_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "metadata.csv").write_text("img_filename,split\na.jpg,0\n")
    with pytest.raises(MetadataError, match="cannot tell which column is label_column"):
        metadata_image_dataset(root)
    with pytest.raises(MetadataError, match=r"lacks the column\(s\) label_column='bird'.*img_filename"):
        metadata_image_dataset(root, label_column="bird")


def test_image_folder_with_split_folders(tmp_path):
    for part in ("train", "test"):
        for cls in ("cat", "dog"):
            write_image_files(tmp_path / part / cls, random_images(2), ["a.png", "b.png"])
    ds = image_folder_dataset(tmp_path)
    assert ds.label_names == ["cat", "dog"] and len(ds) == 8
    np.testing.assert_array_equal(ds.split, [2, 2, 2, 2, 0, 0, 0, 0])  # sorted: test/, then train/
    assert ds.ids[0] == "test/cat/a.png"


def test_decode_errors_raise_or_skip(tmp_path, resnet):
    root = tmp_path / "wb"
    names, *_ = _waterbirds(root)
    (root / names[3]).write_bytes(b"not an image at all")
    data = (root / names[7]).read_bytes()
    (root / names[7]).write_bytes(data[: len(data) // 2])  # truncated JPEG
    with pytest.raises(ImageDecodeError, match=r"(?s)img_3\.jpg.*img_7\.jpg.*on_error='skip'"):
        extract_features(resnet, root, tmp_path / "c1", progress=False, shard_size=20, batch_size=12)
    with pytest.warns(UserWarning, match="2 samples could not be decoded"):
        out = extract_features(resnet, root, tmp_path / "c2", progress=False, shard_size=5, batch_size=4,
                               on_error="skip")
    emb = load_embeddings(out)
    assert emb.features.shape[0] == 10 and names[3] not in emb.ids and names[7] not in emb.ids
    assert emb.manifest["extraction"]["run"]["skipped_ids"] == [names[3], names[7]]
    # a cache built with on_error='skip' is not silently reused by on_error='raise'
    with pytest.raises(ImageDecodeError, match="built with on_error='skip'"):
        extract_features(resnet, root, out, progress=False, shard_size=5, batch_size=4)
    extract_features(resnet, root, out, progress=False, shard_size=5, batch_size=4, on_error="skip")  # reused
    # nor are the finished shards of an interrupted on_error='skip' run
    with pytest.warns(UserWarning, match="2 samples could not be decoded"):
        extract_features(resnet, root, tmp_path / "c3", progress=False, shard_size=5, batch_size=4,
                         on_error="skip", keep_shards=True)
    from skgroup.datasets._embeddings import invalidate_cache

    invalidate_cache(tmp_path / "c3")  # as a run killed during its merge leaves it
    with pytest.raises(ImageDecodeError, match="interrupted run"):
        extract_features(resnet, root, tmp_path / "c3", progress=False, shard_size=5, batch_size=4)


def test_changed_image_is_a_different_extraction(tmp_path, resnet):
    root = tmp_path / "wb"
    names, *_ = _waterbirds(root, n=4)
    extract_features(resnet, root, tmp_path / "c", progress=False)
    write_image_files(root, random_images(1, seed=5), [names[0]], fmt="JPEG")
    with pytest.raises(ExtractionMismatchError, match="dataset.fingerprint"):
        extract_features(resnet, root, tmp_path / "c", progress=False)


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl.gz"])
def test_text_tables(tmp_path, kind):
    import gzip

    a, b = random_sentences(6, seed=1), random_sentences(6, seed=2)
    a[0] = 'he said "no" twice'  # quotes: TSV must be read with quoting off
    labels = ["entailment", "neutral", "contradiction"] * 2
    rows = [dict(id=f"p{i}", premise=a[i], hypothesis=b[i], gold=labels[i], neg=i % 2, part="train" if i < 4 else
                 "test") for i in range(6)]
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif kind == "tsv":
        path.write_text("\t".join(rows[0]) + "\n" + "".join("\t".join(str(v) for v in r.values()) + "\n"
                                                            for r in rows))
    else:
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    ds = TextDataset.from_file(path, text_columns=["premise", "hypothesis"], label_column="gold",
                               attribute_columns={"neg": "negation"}, split_column="part", id_column="id",
                               label_names=["contradiction", "entailment", "neutral"])
    assert ds.get(0) == (a[0], b[0])
    np.testing.assert_array_equal(ds.labels, [1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(ds.attributes[:, 0], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(ds.split, [0, 0, 0, 0, 2, 2])
    assert ds.spurious_attribute == "negation" and list(ds.ids[:2]) == ["p0", "p1"]
    with pytest.raises(MetadataError, match=r"text_columns='sentence'.*Name the right columns"):
        TextDataset.from_file(path, text_columns="sentence", label_column="gold")


def test_text_end_to_end_with_truncation(tmp_path):
    folder = make_tiny_bert(tmp_path / "bert")
    texts = random_sentences(10, max_words=40)
    ds = TextDataset(texts, np.arange(10) % 3, attributes=np.arange(10) % 2, attribute_names=["neg"],
                     split=["train"] * 6 + ["test"] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no padding / truncation warnings from the tokenizer
        out = extract_features(folder, ds, tmp_path / "c", backbone_options={"pooling": "mean", "max_length": 8},
                               progress=False, batch_size=3, shard_size=4)
    emb = load_embeddings(out)
    bb = load_backbone(folder, pooling="mean", max_length=8)
    assert bb.collate(texts)["single"]["input_ids"].shape[1] == 8
    with torch.inference_mode():
        ref = bb(bb.collate(texts)).numpy()
    np.testing.assert_allclose(emb.features, ref, atol=1e-5)  # length-sorted batches put back in order
    assert emb.manifest["extraction"]["spec"]["preprocessing"]["max_length"] == 8


def test_numeric_class_folders_are_classes_not_splits(tmp_path):
    for cls in ("0", "1", "2"):
        write_image_files(tmp_path / cls, random_images(2), ["a.png", "b.png"])
    ds = image_folder_dataset(tmp_path)
    assert ds.label_names == ["0", "1", "2"] and len(ds) == 6
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.split, [-1] * 6)


def test_text_integer_labels_with_label_names(tmp_path):
    path = tmp_path / "data.csv"
    texts = random_sentences(4, seed=3)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        w.writerows([texts[i], i % 2] for i in range(4))
    ds = TextDataset.from_file(path, text_columns="sentence", label_names=["negative", "positive"])
    np.testing.assert_array_equal(ds.labels, [0, 1, 0, 1])
    assert ds.label_names == ["negative", "positive"]
    with pytest.raises(MetadataError, match="outside 0..0"):
        TextDataset.from_file(path, text_columns="sentence", label_names=["negative"])
    with pytest.warns(UserWarning, match="left out 2 rows whose label"):  # dropped, and counted
        ds = TextDataset.from_file(path, text_columns="sentence", label_names=["negative"], drop_unknown_labels=True)
    assert len(ds) == 2 and ds.get(0) == texts[0]


def _labelled_csv(path, labels, encoding="utf-8"):
    texts = random_sentences(len(labels), seed=4)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        w.writerows([t, lab] for t, lab in zip(texts, labels))
    return texts


def test_blank_or_dash_labels_never_shift_the_integer_codes(tmp_path):
    path = tmp_path / "data.csv"
    texts = _labelled_csv(path, ["0", "1", "1", "0", "", "1", "-"])
    with pytest.raises(MetadataError, match=r"(?s)'label' has no label .* in 2 of 7 rows, at line\(s\) 6, 8.*"
                                            r"missing_labels='skip'.*--missing-labels skip"):
        TextDataset.from_file(path, text_columns="sentence")
    with pytest.warns(UserWarning, match=r"left out 2 of 7 rows with no label"):
        ds = TextDataset.from_file(path, text_columns="sentence", missing_labels="skip")
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 0, 1])  # their own codes, not [1, 2, 2, 1, 2]
    assert ds.label_names is None and ds.get(4) == texts[5] and list(ds.ids) == ["0", "1", "2", "3", "5"]
    # names: '-' (MultiNLI's no gold label) is not a class either
    _labelled_csv(path, ["neutral", "-", "entailment", "contradiction"])
    with pytest.raises(MetadataError, match="1 of 4 rows"):
        TextDataset.from_file(path, text_columns="sentence")
    with pytest.warns(UserWarning, match="left out 1 of 4"):
        ds = TextDataset.from_file(path, text_columns="sentence", missing_labels="skip")
    assert ds.label_names == ["contradiction", "entailment", "neutral"]
    np.testing.assert_array_equal(ds.labels, [2, 1, 0])
    with pytest.warns(UserWarning, match="left out 1 of 4"):  # drop_unknown_labels drops label-less rows too
        ds = TextDataset.from_file(path, text_columns="sentence", drop_unknown_labels=True,
                                   label_names=["contradiction", "entailment", "neutral"])
    assert len(ds) == 3
    # integers mixed with names cannot be numbered safely
    _labelled_csv(path, ["1", "2", "cat", "2"])
    with pytest.raises(MetadataError, match=r"mixes integer labels \(1, 2\) and names \(cat\).*label_names"):
        TextDataset.from_file(path, text_columns="sentence")
    with pytest.raises(ValueError, match="missing_labels must be"):
        TextDataset.from_file(path, text_columns="sentence", missing_labels="drop")


def test_image_metadata_with_blank_labels(tmp_path):
    root = tmp_path / "wb"
    names, y, *_ = _waterbirds(root, n=6)
    text = (root / "metadata.csv").read_text().splitlines()
    row = text[3].split(",")
    row[2] = ""  # image 2 has no label
    text[3] = ",".join(row)
    (root / "metadata.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(MetadataError, match=r"1 of 6 rows, at line\(s\) 4.*missing_labels='skip'"):
        metadata_image_dataset(root)
    with pytest.warns(UserWarning, match="left out 1 of 6"):
        ds = metadata_image_dataset(root, missing_labels="skip")
    np.testing.assert_array_equal(ds.labels, np.delete(y, 2))
    assert names[2] not in ds.ids and len(ds.files) == 5


def test_encoding_of_tables(tmp_path):
    path = tmp_path / "data.csv"
    _labelled_csv(path, ["0", "1"])
    path.write_bytes(path.read_bytes().replace(b"sentence", "sentence_caf\u00e9".encode("latin-1")))
    with pytest.raises(MetadataError, match=r"data.csv is not valid utf-8 text.*--encoding latin-1"):
        TextDataset.from_file(path, text_columns="sentence_caf\u00e9")
    ds = TextDataset.from_file(path, text_columns="sentence_caf\u00e9", encoding="latin-1")
    assert len(ds) == 2
    root = tmp_path / "wb"
    _waterbirds(root, n=4)
    meta = root / "metadata.csv"
    meta.write_bytes(meta.read_bytes().replace(b"place_filename", b"place_nam\xe9"))
    with pytest.raises(MetadataError, match=r"metadata.csv is not valid utf-8"):
        metadata_image_dataset(root)
    assert len(metadata_image_dataset(root, encoding="latin-1")) == 4
