"""The command line, in process."""

import numpy as np
import pytest

pytest.importorskip("transformers")

from feature_extraction._testing import make_tiny_bert, random_sentences  # noqa: E402
from feature_extraction.cli import main  # noqa: E402
from skgroup.datasets import load_embeddings, split_embeddings  # noqa: E402


def _tsv(path, n=12):
    a, b = random_sentences(n, seed=1), random_sentences(n, seed=2)
    lines = ["pairID\tsentence1\tsentence2\tgold_label\tneg\tsplit"]
    lines += [f"id{i}\t{a[i]}\t{b[i]}\t{['contradiction', 'entailment', 'neutral'][i % 3]}\t{i % 2}\t"
              f"{['train', 'val', 'test'][i % 3]}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_text_pairs(tmp_path, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    data = _tsv(tmp_path / "nli.tsv")
    out = tmp_path / "cache"
    argv = [str(bert), str(data), str(out), "--text-columns", "sentence1,sentence2", "--label-column", "gold_label",
            "--label-names", "contradiction,entailment,neutral", "--attribute-columns", "neg", "--split-column",
            "split", "--id-column", "pairID", "--pooling", "mean", "--dtype", "float16", "--no-progress", "-q"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    emb = load_embeddings(out)
    assert emb.features.shape == (12, 32) and emb.features.dtype == np.float16
    assert emb.ids[0] == "id0" and emb.label_names == ["contradiction", "entailment", "neutral"]
    s = split_embeddings(out)  # the single attribute is the spurious one
    assert len(s.train.y) == 4 and s.group_names[0].startswith("contradiction")
    # the same command again reuses the cache; another pooling is refused with a clear message
    assert main(argv) == 0
    assert main(argv[:-6] + ["--pooling", "cls", "--no-progress", "-q"]) == 2
    assert "different extraction" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    data = _tsv(tmp_path / "nli.tsv")
    assert main(["no-such-model-xyz", str(data), str(tmp_path / "c"), "--text-columns", "sentence1", "-q"]) == 2
    assert "Unknown model" in capsys.readouterr().err
    bert = make_tiny_bert(tmp_path / "bert")
    assert main([str(bert), str(data), str(tmp_path / "c"), "--text-columns", "premise", "-q"]) == 2
    err = capsys.readouterr().err
    assert "text_columns='premise'" in err and "sentence1" in err
    assert main(["resnet50", str(tmp_path), str(tmp_path / "c"), "--weights", str(tmp_path / "nope.pth")]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_cli_missing_labels_and_encoding(tmp_path, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    data = tmp_path / "data.csv"
    texts = random_sentences(6, seed=3)
    labels = ["0", "1", "", "1", "0", "1"]
    data.write_bytes(("sentence,label,note\n" + "".join(f"{t},{lab},caf\u00e9\n" for t, lab in zip(texts, labels)))
                     .encode("latin-1"))
    base = [str(bert), str(data), str(tmp_path / "c"), "--text-columns", "sentence", "--no-progress", "-q"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "data.csv is not valid utf-8" in err and "--encoding latin-1" in err and "Traceback" not in err
    assert main(base + ["--encoding", "latin-1"]) == 2
    err = capsys.readouterr().err
    assert "1 of 6 rows, at line(s) 4" in err and "--missing-labels skip" in err
    with pytest.warns(UserWarning, match="left out 1 of 6"):
        assert main(base + ["--encoding", "latin-1", "--missing-labels", "skip"]) == 0
    emb = load_embeddings(tmp_path / "c")
    np.testing.assert_array_equal(emb.labels, [0, 1, 1, 0, 1])
    assert emb.label_names is None


def test_cli_damaged_cache_and_manifest(tmp_path, capsys):
    bert = make_tiny_bert(tmp_path / "bert")
    data = _tsv(tmp_path / "nli.tsv")
    out = tmp_path / "cache"
    argv = [str(bert), str(data), str(out), "--text-columns", "sentence1", "--label-column", "gold_label",
            "--no-progress", "-q"]
    assert main(argv) == 0
    capsys.readouterr()
    features = out / "features.npy"
    good = features.read_bytes()
    features.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    for extra in ([], ["--verify"]):  # the default check sees a changed byte too (a small cache: all of it)
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert "features.npy does not match its checksum" in err and "--overwrite" in err and "Traceback" not in err
    features.write_bytes(good[:-100])
    assert main(argv) == 2  # truncated: always caught, never "reusing the cache"
    assert "features.npy is" in capsys.readouterr().err
    features.write_bytes(good)
    manifest = out / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{manifest} is not valid JSON" in err and "Traceback" not in err
    import json

    m = json.loads(text)
    del m["n_samples"]
    manifest.write_text(json.dumps(m))
    assert main(argv) == 2
    assert f"{manifest} lacks the entries ['n_samples']" in capsys.readouterr().err
    manifest.write_text(text)
    assert main(argv) == 0


def test_cli_no_image_decodes(tmp_path, capsys):
    from feature_extraction._testing import make_tiny_vision

    vision = make_tiny_vision(tmp_path / "resnet", "resnet")
    capsys.readouterr()  # the model's saving progress
    root = tmp_path / "images"
    root.mkdir()
    (root / "metadata.csv").write_text("img_filename,y\na.jpg,0\nb.jpg,1\nc.jpg,0\n")
    for name in "abc":
        (root / f"{name}.jpg").write_bytes(b"not an image")
    argv = [str(vision), str(root), str(tmp_path / "c"), "--on-error", "skip", "--image-size", "16", "--resize", "18",
            "--no-progress", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert "none of the 3 samples could be decoded" in err and "a.jpg" in err
