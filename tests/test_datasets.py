import gzip
import json

import numpy as np
import pytest

from skgroup.datasets import (
    check_embeddings,
    load_celeba_attributes,
    load_embeddings,
    load_law_school,
    load_mnli,
    make_spurious_benchmark,
    make_spurious_features,
    read_manifest,
    save_embeddings,
    split_embeddings,
)


def test_synthetic_matches_the_generative_model():
    X, y, g, a = make_spurious_features(40000, n_core=3, n_spurious=2, n_noise=4, sigma_core=3.0,
                                        sigma_spurious=0.5, majority_fraction=0.8, return_attribute=True,
                                        random_state=0)
    assert X.shape == (40000, 9) and X.dtype == np.float32
    np.testing.assert_array_equal(g, 2 * y + a)
    assert np.mean(a == y) == pytest.approx(0.8, abs=0.01)
    ys, as_ = 2 * y - 1, 2 * a - 1
    np.testing.assert_allclose((X[:, :3] - ys[:, None]).std(0), 3.0, rtol=0.03)
    np.testing.assert_allclose((X[:, :3] - ys[:, None]).mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose((X[:, 3:5] - as_[:, None]).std(0), 0.5, rtol=0.03)
    np.testing.assert_allclose(X[:, 5:].std(0), 1 / 2, rtol=0.03)  # sigma_noise / sqrt(n_noise)


def test_synthetic_balanced_and_deterministic():
    X1, y1, g1 = make_spurious_features(400, group_balanced=True, random_state=3)
    X2, _, g2 = make_spurious_features(400, group_balanced=True, random_state=3)
    np.testing.assert_array_equal(np.bincount(g1), [100] * 4)
    np.testing.assert_array_equal(X1, X2)
    b = make_spurious_benchmark(1000, 200, 400, random_state=0)
    assert np.bincount(b.train.group_labels)[[1, 2]].sum() < 200
    np.testing.assert_array_equal(np.bincount(b.test.group_labels), [100] * 4)
    with pytest.raises(ValueError, match="majority_fraction"):
        make_spurious_features(10, majority_fraction=0.2)


def test_erm_fails_the_minority_groups_on_synthetic():
    from skgroup import ERMClassifier
    from skgroup.metrics import per_group_accuracy

    b = make_spurious_benchmark(3000, 400, 2000, random_state=0)
    erm = ERMClassifier().fit(b.train.X, b.train.y)
    _, acc, _ = per_group_accuracy(b.test.y, erm.predict(b.test.X), group_labels=b.test.group_labels)
    assert min(acc[1], acc[2]) < 0.6 < min(acc[0], acc[3])  # the shortcut is learned


# -- embeddings cache ---------------------------------------------------------


def make_cache(path, n=50, dtype=np.float16, **kw):
    rng = np.random.RandomState(0)
    feats = rng.randn(n, 6).astype(dtype)
    labels = np.arange(n) % 2
    attrs = np.c_[np.arange(n) % 3 == 0, np.arange(n) % 5 == 0].astype(int)
    split = np.array(["train", "val", "test"] * n)[:n]
    save_embeddings(path, feats, labels, attributes=attrs, attribute_names=["bg", "other"], split=split,
                    ids=[f"img{i}.jpg" for i in range(n)], label_names=["a", "b"], spurious_attribute="bg",
                    extraction={"backbone": "toy"}, **kw)
    return feats, labels, attrs, split


def test_embeddings_round_trip(tmp_path):
    feats, labels, attrs, split = make_cache(tmp_path / "c")
    emb = load_embeddings(tmp_path / "c", verify=True)
    assert isinstance(emb.features, np.memmap) and not emb.features.flags.writeable
    np.testing.assert_array_equal(emb.features, feats)
    np.testing.assert_array_equal(emb.labels, labels)
    np.testing.assert_array_equal(emb.attributes, attrs)
    assert emb.ids[3] == "img3.jpg" and emb.split.tolist()[:3] == [0, 1, 2]
    assert emb.manifest["extraction"] == {"backbone": "toy"} and emb.manifest["dtype"] == "float16"
    s = split_embeddings(emb)
    assert len(s.train.y) + len(s.val.y) + len(s.test.y) == 50
    np.testing.assert_array_equal(s.val.X, feats[1::3])
    np.testing.assert_array_equal(s.train.group_labels, 2 * labels[::3] + attrs[::3, 0])
    assert s.group_names[3] == "b, bg=1"
    s2 = split_embeddings(tmp_path / "c", attribute=["bg", "other"])
    assert s2.train.group_labels.max() <= 7


def test_embeddings_never_overwritten_by_accident(tmp_path):
    make_cache(tmp_path / "c")
    before = (tmp_path / "c" / "features.npy").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_cache(tmp_path / "c")
    assert (tmp_path / "c" / "features.npy").read_bytes() == before
    make_cache(tmp_path / "c", n=30, overwrite=True)
    assert load_embeddings(tmp_path / "c").features.shape == (30, 6)


def test_embeddings_corruption_and_incomplete_cache(tmp_path):
    make_cache(tmp_path / "c")
    f = tmp_path / "c" / "labels.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_embeddings(tmp_path / "c", verify=True)
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        load_embeddings(tmp_path / "c")
    assert read_manifest(tmp_path / "c") is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_embeddings(tmp_path / "nowhere")


def test_embeddings_bad_input(tmp_path):
    with pytest.raises(ValueError, match="float16 or float32"):
        save_embeddings(tmp_path / "x", np.zeros((3, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match="labels must have shape"):
        save_embeddings(tmp_path / "x", np.zeros((3, 2), np.float32), [0, 1])
    with pytest.raises(ValueError, match="unknown split name"):
        save_embeddings(tmp_path / "x", np.zeros((3, 2), np.float32), [0, 1, 0], split=["train", "holdout", "test"])
    with pytest.raises(ValueError, match="spurious_attribute"):
        save_embeddings(tmp_path / "x", np.zeros((3, 2), np.float32), [0, 1, 0], attributes=[1, 0, 1],
                        attribute_names=["a"], spurious_attribute="b")



def test_non_integral_float_labels_are_refused(tmp_path):
    labels = np.arange(4) % 2
    with pytest.raises(ValueError, match=r"labels hold non-integer values.*0.7"):
        save_embeddings(tmp_path / "x", np.zeros((4, 2), np.float32), labels + 0.7)
    with pytest.raises(ValueError, match=r"labels hold NaN"):
        save_embeddings(tmp_path / "x", np.zeros((4, 2), np.float32), [0, 1, np.nan, 0])
    with pytest.raises(ValueError, match=r"attributes hold non-integer values"):
        save_embeddings(tmp_path / "x", np.zeros((4, 2), np.float32), labels, attributes=[0, 0.5, 1, 1])
    with pytest.raises(ValueError, match=r"labels must be integer class codes.*label_names"):
        save_embeddings(tmp_path / "x", np.zeros((4, 2), np.float32), ["a", "b", "a", "b"])
    save_embeddings(tmp_path / "x", np.zeros((4, 2), np.float32), labels.astype(float))  # integral floats: fine
    emb = load_embeddings(tmp_path / "x")
    assert emb.labels.dtype == np.int64 and emb.labels.tolist() == [0, 1, 0, 1]


def _flip_byte(file, where=-1):
    data = bytearray(file.read_bytes())
    data[where] ^= 0xFF
    file.write_bytes(bytes(data))


def test_damaged_cache_files_name_the_file(tmp_path):
    from skgroup.datasets import CorruptCacheError

    # a flipped byte in a small file is always caught (their checksums are cheap); in a small features.npy
    # by the default check too
    make_cache(tmp_path / "c", dtype=np.float32)
    _flip_byte(tmp_path / "c" / "labels.npy")
    with pytest.raises(CorruptCacheError, match=r"labels.npy.*checksum"):
        load_embeddings(tmp_path / "c")
    make_cache(tmp_path / "c", dtype=np.float32, overwrite=True)
    _flip_byte(tmp_path / "c" / "features.npy", where=200)
    for verify in ("auto", True):
        with pytest.raises(CorruptCacheError, match=r"features.npy.*checksum"):
            load_embeddings(tmp_path / "c", verify=verify)
    with pytest.raises(CorruptCacheError, match=r"features.npy.*checksum"):
        check_embeddings(tmp_path / "c")
    load_embeddings(tmp_path / "c", verify=False)  # asked not to: the size and header checks only
    with pytest.raises(ValueError, match="verify"):
        load_embeddings(tmp_path / "c", verify="yes")
    # truncated, missing, wrong shape or dtype: always, naming the file
    for damage, match in [
        (lambda c: (c / "features.npy").write_bytes((c / "features.npy").read_bytes()[:-10]), r"features.npy.*bytes"),
        (lambda c: (c / "ids.npy").unlink(), r"ids.npy.*missing"),
        (lambda c: np.save(c / "split.npy", np.zeros(50, np.int64)), r"split.npy.*int64.*int8"),
        (lambda c: np.save(c / "features.npy", np.zeros((50, 5), np.float32)), r"features.npy.*\(50, 5\).*\(50, 6\)"),
        (lambda c: np.save(c / "attributes.npy", np.zeros((50, 1), np.int64)), r"attributes.npy.*\(50, 1\).*\(50, 2\)"),
        (lambda c: (c / "labels.npy").write_bytes(b"garbage"), r"labels.npy.*not a .npy file"),
    ]:
        make_cache(tmp_path / "c", dtype=np.float32, overwrite=True)
        damage(tmp_path / "c")
        with pytest.raises(CorruptCacheError, match=match) as e:
            load_embeddings(tmp_path / "c")
        assert "overwrite" in str(e.value)


def test_damaged_manifest_names_the_manifest(tmp_path):
    from skgroup.datasets import CorruptCacheError

    make_cache(tmp_path / "c")
    manifest = tmp_path / "c" / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text("{ not json")
    with pytest.raises(CorruptCacheError, match=r"manifest.json is not valid JSON"):
        load_embeddings(tmp_path / "c")
    with pytest.raises(CorruptCacheError, match=r"manifest.json"):
        read_manifest(tmp_path / "c")
    manifest.write_text(json.dumps({k: v for k, v in good.items() if k != "n_samples"}))
    with pytest.raises(CorruptCacheError, match=r"manifest.json lacks.*n_samples"):
        load_embeddings(tmp_path / "c")
    manifest.write_text(json.dumps({**good, "n_samples": "fifty"}))
    with pytest.raises(CorruptCacheError, match=r"manifest.json.*n_samples"):
        load_embeddings(tmp_path / "c")
    manifest.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"manifest.json is not a skgroup-embeddings manifest"):
        load_embeddings(tmp_path / "c")
    manifest.write_text(json.dumps({**good, "spurious_attribute": "nope"}))
    with pytest.raises(CorruptCacheError, match=r"spurious_attribute"):
        load_embeddings(tmp_path / "c")

def test_estimator_trains_on_memory_mapped_cache(tmp_path):
    from skgroup import ERMClassifier

    make_cache(tmp_path / "c", n=300, dtype=np.float32)
    s = split_embeddings(tmp_path / "c")
    ERMClassifier().fit(s.train.X, s.train.y).predict(s.test.X)


def test_large_features_written_in_chunks(tmp_path, monkeypatch):
    from skgroup.datasets import _embeddings

    monkeypatch.setattr(_embeddings, "_CHUNK_ROWS", 7)
    feats = np.random.RandomState(0).randn(50, 3).astype(np.float32)
    save_embeddings(tmp_path / "c", feats, np.zeros(50, int))
    np.testing.assert_array_equal(load_embeddings(tmp_path / "c").features, feats)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["n_samples"] == 50


# -- real data (skips without ../shared/data) ----------------------------------


def test_celeba_attributes(data_home):
    d = load_celeba_attributes(data_home)
    np.testing.assert_array_equal(np.bincount(d.train.group_labels), [71629, 66874, 22880, 1387])
    assert d.train.X.shape == (162770, 38) and len(d.val.y) == 19867 and len(d.test.y) == 19962
    assert "Blond_Hair" not in d.feature_names and "Male" not in d.feature_names
    assert d.group_names[3] == "Blond_Hair=1, Male=1"
    with pytest.raises(ValueError, match="not a CelebA attribute"):
        load_celeba_attributes(data_home, attribute="Gender")


def test_mnli(data_home):
    m = load_mnli(data_home)
    assert len(m.y) == 9815
    np.testing.assert_array_equal(np.bincount(m.y), [3213, 3479, 3123])
    neg = [int(((m.y == c) & (m.attribute == 1)).sum()) for c in range(3)]
    # group_DRO's tokenisation gives 504 / 91 / 87 (data README: about 500 / 89 / 86)
    assert neg == [504, 91, 87]
    for g in range(6):
        rows = m.group_labels == g
        frac = np.mean(m.split[rows] == "train")
        assert 0.49 <= frac <= 0.53  # stratified 50 / 25 / 25
    again = load_mnli(data_home)
    np.testing.assert_array_equal(again.split, m.split)
    assert not any('"' in p and "\t" in p for p in m.premise)


def test_large_features_are_checked_on_a_sample_of_blocks(tmp_path, monkeypatch):
    """Above the full-check size the default reads the first, the last and a random sample of the blocks
    whose checksums the manifest records; verify=True reads everything."""
    from skgroup.datasets import CorruptCacheError
    from skgroup.datasets import _embeddings as emb_module

    monkeypatch.setattr(emb_module, "_MIN_BLOCK_BYTES", 64)
    make_cache(tmp_path / "c", n=200, dtype=np.float32)  # 200 x 6 x 4 bytes: about 20 blocks of 64 bytes
    manifest = read_manifest(tmp_path / "c")
    n_blocks = len(manifest["blocks"]["features"]["crc32"])
    assert n_blocks >= 18 and manifest["blocks"]["features"]["size"] == 64
    monkeypatch.setattr(emb_module, "_FULL_CHECK_BYTES", 0)  # now "large"
    monkeypatch.setattr(emb_module, "_SAMPLED_BLOCKS", 3)
    read = []
    real = emb_module._read_block
    monkeypatch.setattr(emb_module, "_read_block", lambda f, i, size: read.append(i) or real(f, i, size))
    load_embeddings(tmp_path / "c")
    assert len(set(read)) == 5 and {0, n_blocks - 1} <= set(read)  # first, last and 3 more
    _flip_byte(tmp_path / "c" / "features.npy", where=-1)  # the last block is always read
    with pytest.raises(CorruptCacheError, match=r"features.npy.*checksum.*block"):
        load_embeddings(tmp_path / "c")
    _flip_byte(tmp_path / "c" / "features.npy", where=-1)
    _flip_byte(tmp_path / "c" / "features.npy", where=10 * 64 + 3)  # a middle block: maybe sampled...
    with pytest.raises(CorruptCacheError, match=r"features.npy.*checksum"):
        load_embeddings(tmp_path / "c", verify=True)  # ...the full checksum always sees it
    monkeypatch.setattr(emb_module, "_SAMPLED_BLOCKS", n_blocks)
    with pytest.raises(CorruptCacheError, match=r"block 10 "):
        load_embeddings(tmp_path / "c")


def test_files_of_a_cache_without_a_manifest_are_not_replaced_unasked(tmp_path):
    # a folder without manifest.json holding a file of a cache's name: the user's, not an interrupted save
    folder = tmp_path / "c"
    folder.mkdir()
    np.save(folder / "labels.npy", np.array([7, 7, 7]))
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"labels.npy.*overwrite=True"):
        make_cache(folder)
    np.testing.assert_array_equal(np.load(folder / "labels.npy"), [7, 7, 7])
    make_cache(folder, overwrite=True)
    assert load_embeddings(folder).labels.shape == (50,) and (folder / "notes.txt").read_text() == "mine"


def test_a_save_killed_before_its_manifest_is_finished_by_the_next_one(tmp_path, monkeypatch):
    from skgroup.datasets import _embeddings as emb_module

    real = emb_module._atomic_save
    calls = []

    def dies_on_split(path, array, **kw):
        if path.name == "split.npy":
            raise KeyboardInterrupt  # a kill after features, labels and attributes are in place
        calls.append(path.name)
        return real(path, array, **kw)

    monkeypatch.setattr(emb_module, "_atomic_save", dies_on_split)
    with pytest.raises(KeyboardInterrupt):
        make_cache(tmp_path / "c")
    monkeypatch.undo()
    assert (tmp_path / "c" / "labels.npy").exists() and not (tmp_path / "c" / "manifest.json").exists()
    make_cache(tmp_path / "c")  # its own leftovers: no overwrite needed
    load_embeddings(tmp_path / "c", verify=True)


# -- law school: a hand-made file, then the real one ------------------------------


def _write_law(folder, rows):
    (folder / "law").mkdir(parents=True)
    header = ",race,sex,LSAT,UGPA,region_first,ZFYA,sander_index,first_pf\n"
    with gzip.open(folder / "law" / "law_data.csv.gz", "wt") as f:
        f.write(header + "".join(",".join(map(str, (i, *r))) + "\n" for i, r in enumerate(rows)))


def test_law_school_features_by_hand(tmp_path):
    # 5 rows of each (pass, White) group: 20 rows, so a 0.6 / 0.2 / 0.2 split is 3 / 1 / 1 per group
    rows = []
    for k in range(20):
        y, white = k % 2, (k // 2) % 2
        rows.append(("White" if white else "Black", 1 + k % 3 // 2, 30 + k, 3.0 + k / 10, "GL" if k % 4 else "NE",
                     9.9, 0.5 + k / 100, f"{y}.0"))
    _write_law(tmp_path, rows)
    d = load_law_school(tmp_path)
    assert d.feature_names[:3] == ["LSAT", "UGPA", "sander_index"] and d.feature_names[-1] == "sex=2"
    assert not any("ZFYA" in n or n.startswith("race") for n in d.feature_names)
    for part, n in (("train", 12), ("val", 4), ("test", 4)):
        np.testing.assert_array_equal(np.bincount(d[part].group_labels, minlength=4), [n // 4] * 4)
    ids = np.concatenate([d[p].ids for p in ("train", "val", "test")]).astype(int)
    assert sorted(ids.tolist()) == list(range(20))
    # group = 2 * pass + White, and every row keeps its own label and attribute
    for part in ("train", "val", "test"):
        for i, yy, a, g, x in zip(d[part].ids.astype(int), d[part].y, d[part].attribute, d[part].group_labels,
                                  d[part].X):
            assert (yy, a) == (i % 2, (i // 2) % 2) and g == 2 * yy + a
            assert x[d.feature_names.index("sex=2")] == float(1 + i % 3 // 2 == 2)
            assert x[d.feature_names.index("region_first=NE")] == float(i % 4 == 0)
            assert x[d.feature_names.index("region_first=GL")] == float(i % 4 != 0)
    # standardised with the training rows' mean and (population) standard deviation
    lsat_train = 30 + d.train.ids.astype(int)
    np.testing.assert_allclose(d.train.X[:, 0], (lsat_train - lsat_train.mean()) / lsat_train.std(), rtol=1e-5)
    lsat_test = 30 + d.test.ids.astype(int)
    np.testing.assert_allclose(d.test.X[:, 0], (lsat_test - lsat_train.mean()) / lsat_train.std(), rtol=1e-5)
    # sex as the attribute: race one-hot comes in, sex goes out
    s = load_law_school(tmp_path, attribute="sex")
    assert "sex=2" not in s.feature_names and "race=White" in s.feature_names and s.train.X.shape[1] == 22
    np.testing.assert_array_equal(s.train.attribute, (1 + s.train.ids.astype(int) % 3 // 2 == 2).astype(int))
    # the split depends on the seed, and only on it
    again = load_law_school(tmp_path)
    np.testing.assert_array_equal(again.test.ids, d.test.ids)
    other = load_law_school(tmp_path, random_state=1)
    assert sorted(other.test.ids.tolist()) != sorted(d.test.ids.tolist()) or \
        sorted(other.val.ids.tolist()) != sorted(d.val.ids.tolist())


def test_law_school_bad_input(tmp_path):
    with pytest.raises(ValueError, match="attribute must be 'race' or 'sex'"):
        load_law_school(tmp_path, attribute="gender")
    with pytest.raises(FileNotFoundError, match="Law school data not found"):
        load_law_school(tmp_path)
    _write_law(tmp_path, [("Martian", 1, 30, 3.0, "GL", 0, 0.5, "1.0")] * 8)
    with pytest.raises(ValueError, match="unexpected race values"):
        load_law_school(tmp_path)


def test_law_school(data_home):
    d = load_law_school(data_home)
    counts = sum(np.bincount(d[p].group_labels, minlength=4) for p in ("train", "val", "test"))
    np.testing.assert_array_equal(counts, [973, 1458, 2533, 16827])  # the data README's counts
    assert d.train.X.shape == (13079, 15) and len(d.val.y) == 4356 and len(d.test.y) == 4356
    np.testing.assert_allclose(d.train.X[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.train.X[:, :3].std(0), 1, atol=1e-4)
    for g in range(4):
        assert np.mean(d.train.group_labels == g) == pytest.approx(np.mean(d.test.group_labels == g), abs=0.002)
