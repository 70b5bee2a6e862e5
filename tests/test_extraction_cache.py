"""The cache: reuse, staleness, overwrite; kill-and-resume and corrupt shards."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from feature_extraction import ExtractionMismatchError, TextDataset, extract_features  # noqa: E402
from feature_extraction._testing import make_tiny_bert, random_sentences  # noqa: E402
from skgroup.datasets import load_embeddings, read_manifest  # noqa: E402
from skgroup.datasets._embeddings import invalidate_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N = 40


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def _dataset(n=N):
    return TextDataset(random_sentences(n, max_words=20), np.arange(n) % 3, attributes=np.arange(n) % 2,
                       attribute_names=["neg"], split=np.arange(n) % 3, name="toy")


def test_same_extraction_is_reused(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False)
    created = read_manifest(out)["created"]
    mtime = (out / "features.npy").stat().st_mtime_ns
    time.sleep(0.01)
    again = extract_features(bert, _dataset(), tmp_path / "c", progress=False)  # same spec from new objects
    assert again == out and read_manifest(out)["created"] == created
    assert (out / "features.npy").stat().st_mtime_ns == mtime
    assert not (out / ".shards").exists()


def test_different_extraction_is_never_reused(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False)
    with pytest.raises(ExtractionMismatchError, match=r"differs in: .*backbone.pooling"):
        extract_features(bert, _dataset(), out, backbone_options={"pooling": "mean"}, progress=False)
    with pytest.raises(ExtractionMismatchError, match=r"features.dtype"):
        extract_features(bert, _dataset(), out, dtype="float16", progress=False)
    ds = _dataset()
    ds.labels[0] = 2  # same texts, other labels: the cache would carry stale labels
    with pytest.raises(ExtractionMismatchError, match=r"dataset.fingerprint"):
        extract_features(bert, ds, out, progress=False)
    extract_features(bert, _dataset(), out, dtype="float16", overwrite=True, progress=False)
    emb = load_embeddings(out)
    assert emb.features.dtype == np.float16
    assert emb.manifest["extraction"]["spec"]["features"]["dtype"] == "float16"


def test_library_versions_warn_or_count_as_different(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["extraction"]["versions"]["torch"] = "1.0.0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="other library versions.*torch"):
        extract_features(bert, _dataset(), out, progress=False)
    with pytest.raises(ExtractionMismatchError, match="library versions: torch"):
        extract_features(bert, _dataset(), out, strict_versions=True, progress=False)


def test_foreign_shards_are_not_mixed_in(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", keep_shards=True, progress=False, shard_size=10)
    invalidate_cache(out)  # as if killed before the merge finished
    with pytest.raises(ExtractionMismatchError, match="unfinished work of a different extraction.*backbone.pooling"):
        extract_features(bert, _dataset(), out, backbone_options={"pooling": "mean"}, progress=False)
    extract_features(bert, _dataset(), out, backbone_options={"pooling": "mean"}, overwrite=True, progress=False)
    assert read_manifest(out)["extraction"]["spec"]["backbone"]["pooling"] == "mean"


def test_corrupt_and_truncated_shards_are_redone(tmp_path, bert):
    ref = load_embeddings(extract_features(bert, _dataset(), tmp_path / "ref", progress=False, shard_size=8)).features
    out = extract_features(bert, _dataset(), tmp_path / "c", keep_shards=True, progress=False, shard_size=8)
    invalidate_cache(out)  # killed after the shards, before the final manifest
    shards = sorted((out / ".shards").glob("shard-*.npz"))
    assert len(shards) == 5
    data = bytearray(shards[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the features
    shards[1].write_bytes(bytes(data))
    shards[3].write_bytes(shards[3].read_bytes()[:100])  # truncated
    (out / ".shards" / ".shard-000004.npz.tmp-123").write_bytes(b"partial")  # a killed writer's leftover
    with pytest.warns(UserWarning, match="redoing shard") as record:
        extract_features(bert, _dataset(), out, progress=False, shard_size=8)
    assert sum("redoing shard" in str(w.message) for w in record) == 2
    emb = load_embeddings(out, verify=True)
    run = emb.manifest["extraction"]["run"]
    assert (run["shards_reused"], run["shards_computed"], run["shards_redone_corrupt"]) == (3, 2, 2)
    np.testing.assert_array_equal(emb.features, ref)
    assert not (out / ".shards").exists()


_CHILD = textwrap.dedent("""
    import sys, time, numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    from feature_extraction import TextBackbone, TextDataset, extract_features, load_backbone
    from feature_extraction._testing import random_sentences
    n = {n}
    ds = TextDataset(random_sentences(n, max_words=20), np.arange(n) % 3, attributes=np.arange(n) % 2,
                     attribute_names=["neg"], split=np.arange(n) % 3, name="toy")
    bb = load_backbone({bert!r})
    forward = bb.forward
    def slow(batch):  # slow the model down so the parent can kill mid-run; does not change the spec
        time.sleep(0.15)
        return forward(batch)
    bb.forward = slow
    extract_features(bb, ds, {out!r}, progress=False, shard_size=4, batch_size=2)
    print("finished")
""")


def test_kill_and_resume_loses_nothing(tmp_path, bert):
    out = tmp_path / "c"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(repo=str(REPO), n=N, bert=str(bert), out=str(out)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(list((out / ".shards").glob("shard-*.npz"))) < 3:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "the child wrote no shards in 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    done = len(list((out / ".shards").glob("shard-*.npz")))
    assert 3 <= done < N // 4, "the child should have been killed mid-run"

    resumed = extract_features(bert, _dataset(), out, progress=False, shard_size=4, batch_size=2)
    emb = load_embeddings(resumed, verify=True)
    run = emb.manifest["extraction"]["run"]
    assert run["shards_reused"] == done and run["shards_computed"] == N // 4 - done
    ref = load_embeddings(extract_features(bert, _dataset(), tmp_path / "ref", progress=False, shard_size=4,
                                           batch_size=2))
    np.testing.assert_array_equal(emb.features, ref.features)
    np.testing.assert_array_equal(emb.ids, ref.ids)
    np.testing.assert_array_equal(emb.labels, ref.labels)


def test_concurrent_run_into_the_same_folder_is_refused(tmp_path, bert):
    from feature_extraction import OutputBusyError

    fcntl = pytest.importorskip("fcntl")

    out = tmp_path / "c"
    out.mkdir()
    with open(out / ".extract.lock", "w") as f:  # as a running extraction holds it
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputBusyError, match="another extraction is writing"):
            extract_features(bert, _dataset(), out, progress=False)
    extract_features(bert, _dataset(), out, progress=False)  # free again


def test_killed_overwrite_run_resumes(tmp_path, bert, monkeypatch):
    from feature_extraction.cache import ShardStore

    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False)
    write = ShardStore.write
    calls = {"n": 0, "limit": 2}

    def dying_write(self, *args, **kwargs):  # the run is "killed" after `limit` shards
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise RuntimeError("killed")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(ShardStore, "write", dying_write)
    mean = {"backbone_options": {"pooling": "mean"}, "shard_size": 4, "batch_size": 4, "progress": False}
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(bert, _dataset(), out, overwrite=True, **mean)
    assert not (out / "manifest.json").exists()  # the old cache was invalidated before any shard was written
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 2
    calls.update(n=0, limit=1)
    with pytest.raises(RuntimeError, match="killed"):  # overwrite again, same extraction: its shards are kept
        extract_features(bert, _dataset(), out, overwrite=True, **mean)
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 3
    monkeypatch.setattr(ShardStore, "write", write)
    emb = load_embeddings(extract_features(bert, _dataset(), out, **mean), verify=True)  # a plain rerun resumes
    assert emb.manifest["extraction"]["run"]["shards_reused"] == 3
    ref = load_embeddings(extract_features(bert, _dataset(), tmp_path / "ref", **mean))
    np.testing.assert_array_equal(emb.features, ref.features)


def test_strict_versions_on_resume(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", keep_shards=True, progress=False, shard_size=10)
    invalidate_cache(out)  # as if killed before the merge finished
    info_file = out / ".shards" / "spec.json"
    info = json.loads(info_file.read_text())
    assert info["versions"]["torch"]
    info["versions"]["torch"] = "1.0.0"
    info_file.write_text(json.dumps(info))
    with pytest.raises(ExtractionMismatchError, match="unfinished work.*library versions: torch"):
        extract_features(bert, _dataset(), out, strict_versions=True, progress=False, shard_size=10)
    with pytest.warns(UserWarning, match="other library versions.*torch"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    assert read_manifest(out)["extraction"]["run"]["shards_reused"] == 4


def test_cache_not_written_by_feature_extraction(tmp_path, bert):
    from skgroup.datasets import save_embeddings

    out = tmp_path / "c"
    save_embeddings(out, np.zeros((N, 4), np.float32), np.arange(N) % 3)
    with pytest.raises(ExtractionMismatchError, match="not written by feature_extraction"):
        extract_features(bert, _dataset(), out, progress=False)


def _flip_byte(file, where=-1):
    data = bytearray(file.read_bytes())
    data[where] ^= 0xFF
    file.write_bytes(bytes(data))


def test_damaged_cache_is_never_reused_nor_deleted(tmp_path, bert):
    from skgroup.datasets import CorruptCacheError

    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False)
    good = {f.name: f.read_bytes() for f in out.glob("*.npy")}
    ref = load_embeddings(out).features.copy()
    _flip_byte(out / "labels.npy")  # a changed label: the small files' checksums are always checked
    with pytest.raises(CorruptCacheError, match=r"labels.npy does not match its checksum.*overwrite=True"):
        extract_features(bert, _dataset(), out, progress=False)
    (out / "labels.npy").write_bytes(good["labels.npy"])
    _flip_byte(out / "features.npy")  # a changed feature: the default block checksums (all, it is small)
    for verify in ("auto", True):
        with pytest.raises(CorruptCacheError, match=r"features.npy does not match its checksum"):
            extract_features(bert, _dataset(), out, progress=False, verify=verify)
    (out / "features.npy").write_bytes(good["features.npy"][:-7])  # truncated: always
    with pytest.raises(CorruptCacheError, match=r"features.npy is \d+ bytes.*truncated"):
        extract_features(bert, _dataset(), out, progress=False)
    (out / "features.npy").write_bytes(good["features.npy"])
    (out / "ids.npy").unlink()  # deleted: always
    with pytest.raises(CorruptCacheError, match=r"ids.npy is missing"):
        extract_features(bert, _dataset(), out, progress=False)
    # nothing the user cached was deleted on the way; overwrite=True rebuilds it
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "attributes.npy", "features.npy", "labels.npy", "manifest.json", "split.npy"]
    emb = load_embeddings(extract_features(bert, _dataset(), out, progress=False, overwrite=True), verify=True)
    np.testing.assert_array_equal(emb.features, ref)


def _killed_before_shards_removed(monkeypatch, bert, out, **kw):
    """A finished run whose process died after the manifest, before .shards/ was removed."""

    import feature_extraction.cache as cache

    monkeypatch.setattr(cache, "_remove_shards", lambda *a, **k: None)
    extract_features(bert, _dataset(), out, progress=False, shard_size=10, **kw)
    monkeypatch.undo()
    assert (out / "manifest.json").exists() and len(list((out / ".shards").glob("shard-*.npz"))) == 4


def test_stale_shards_beside_a_complete_cache_are_removed(tmp_path, bert, monkeypatch, caplog):
    import logging

    from skgroup.datasets import CorruptCacheError

    out = tmp_path / "c"
    _killed_before_shards_removed(monkeypatch, bert, out)
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir() if f.is_file()}
    with caplog.at_level(logging.INFO, logger="feature_extraction"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    assert not (out / ".shards").exists()
    assert "removed" in caplog.text and ".shards" in caplog.text and "verified" in caplog.text
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir() if f.is_file()} == before
    load_embeddings(out, verify=True)
    # shards kept on purpose stay
    kept = extract_features(bert, _dataset(), tmp_path / "k", progress=False, shard_size=10, keep_shards=True)
    extract_features(bert, _dataset(), kept, progress=False, shard_size=10)
    assert len(list((kept / ".shards").glob("shard-*.npz"))) == 4
    # a final cache that fails the full check is not reused and its shards stay; overwrite rebuilds from them
    out = tmp_path / "d"
    _killed_before_shards_removed(monkeypatch, bert, out)
    _flip_byte(out / "features.npy")  # caught by the default check before reuse, which points at the shards
    with pytest.raises(CorruptCacheError, match=r"features.npy does not match its checksum.*Shards of an earlier run"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 4
    (out / "features.npy").write_bytes((out / "features.npy").read_bytes()[:-3])
    with pytest.raises(CorruptCacheError, match=r"features.npy is \d+ bytes.*Shards of an earlier run"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    emb = load_embeddings(extract_features(bert, _dataset(), out, progress=False, shard_size=10, overwrite=True),
                          verify=True)
    assert emb.manifest["extraction"]["run"]["shards_reused"] == 4
    assert not (out / ".shards").exists()


def test_merge_streams_one_shard_at_a_time(tmp_path, bert, monkeypatch):
    import weakref

    from feature_extraction.cache import ShardStore

    read = ShardStore.read
    alive = []

    def tracking_read(self, k):
        rows, features, failed = read(self, k)
        assert not [r for r in alive if r() is not None], "the merge held the features of an earlier shard"
        alive.append(weakref.ref(features))
        return rows, features, failed

    def no_memmap(*args, **kwargs):
        raise AssertionError("the merge must not map the whole features array into memory")

    monkeypatch.setattr(ShardStore, "read", tracking_read)
    monkeypatch.setattr(np.lib.format, "open_memmap", no_memmap)
    out = extract_features(bert, _dataset(), tmp_path / "c", progress=False, shard_size=4)
    monkeypatch.undo()
    assert len(alive) == N // 4
    ref = load_embeddings(extract_features(bert, _dataset(), tmp_path / "ref", progress=False, shard_size=40))
    emb = load_embeddings(out, verify=True)
    np.testing.assert_allclose(emb.features, ref.features, atol=1e-5)  # other batches: last-bit differences
    np.testing.assert_array_equal(emb.ids, ref.ids)


def test_merge_killed_midway_leaves_no_cache_and_resumes(tmp_path, bert, monkeypatch):
    from skgroup.datasets._embeddings import FeaturesWriter

    write = FeaturesWriter.write
    calls = {"n": 0}

    def dying_write(self, block):
        calls["n"] += 1
        if self.path.name == "features.npy" and calls["n"] > 2:
            raise KeyboardInterrupt("killed")
        return write(self, block)

    monkeypatch.setattr(FeaturesWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_features(bert, _dataset(), tmp_path / "c", progress=False, shard_size=8)
    monkeypatch.undo()
    out = tmp_path / "c"
    assert not (out / "manifest.json").exists() and not list(out.glob(".features.npy.tmp-*"))
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 5
    (out / ".features.npy.tmp-999999").write_bytes(b"left by a process killed with SIGKILL")
    emb = load_embeddings(extract_features(bert, _dataset(), out, progress=False, shard_size=8), verify=True)
    assert emb.manifest["extraction"]["run"]["shards_reused"] == 5
    assert not list(out.glob(".*.tmp-*")) and not (out / ".shards").exists()


def test_user_files_in_the_output_and_in_shards_are_kept(tmp_path, bert):
    out = tmp_path / "c"
    (out / ".shards").mkdir(parents=True)
    (out / ".shards" / "mine.txt").write_text("keep me")
    with pytest.warns(UserWarning, match="mine.txt"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    assert (out / ".shards" / "mine.txt").read_text() == "keep me"
    assert not list((out / ".shards").glob("shard-*")) and not (out / ".shards" / "spec.json").exists()
    # a features.npy without a manifest is not this extraction's: refused before any work
    other = tmp_path / "d"
    other.mkdir()
    np.save(other / "features.npy", np.ones((3, 2), np.float32))
    with pytest.raises(FileExistsError, match=r"features.npy.*overwrite=True"):
        extract_features(bert, _dataset(), other, progress=False)
    np.testing.assert_array_equal(np.load(other / "features.npy"), np.ones((3, 2)))
    assert not (other / ".shards").exists()
    load_embeddings(extract_features(bert, _dataset(), other, progress=False, overwrite=True))


def test_a_damaged_shard_spec_is_called_damaged(tmp_path, bert):
    out = extract_features(bert, _dataset(), tmp_path / "c", keep_shards=True, progress=False, shard_size=10)
    invalidate_cache(out)
    spec = out / ".shards" / "spec.json"
    spec.write_text("{garbage")
    with pytest.raises(ExtractionMismatchError, match=r"spec.json.*damaged.*overwrite=True") as info:
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
    assert "differs in: unknown" not in str(info.value)
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 4  # nothing deleted
    spec.unlink()
    with pytest.raises(ExtractionMismatchError, match=r"no spec.json"):
        extract_features(bert, _dataset(), out, progress=False, shard_size=10)
