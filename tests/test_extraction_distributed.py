"""Several processes: torchrun with two CPU processes (gloo) over disjoint shards, merged into one cache."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch.distributed as dist  # noqa: E402

from feature_extraction import TextDataset, extract_features  # noqa: E402
from feature_extraction._testing import make_tiny_bert, random_sentences  # noqa: E402
from feature_extraction.distributed import assign_shards  # noqa: E402
from skgroup.datasets import load_embeddings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_assign_shards_disjoint_and_complete():
    pending = [0, 2, 3, 5, 8, 9, 10]
    parts = [assign_shards(pending, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == pending
    assert all(not set(a) & set(b) for i, a in enumerate(parts) for b in parts[i + 1:])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_torchrun_two_processes_gloo(tmp_path):
    n = 30
    bert = make_tiny_bert(tmp_path / "bert")
    a, b = random_sentences(n, seed=1), random_sentences(n, seed=2)
    data = tmp_path / "nli.tsv"
    data.write_text("s1\ts2\tlabel\n" + "".join(f"{a[i]}\t{b[i]}\t{i % 3}\n" for i in range(n)))
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "feature_extraction", str(bert), str(data), str(out), "--text-columns", "s1,s2", "--shard-size", "4",
           "--batch-size", "3", "--threads", "1", "--no-progress", "-q"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    emb = load_embeddings(out, verify=True)
    run = emb.manifest["extraction"]["run"]
    assert run["world_size"] == 2 and run["items_computed"] == n
    rank0, rank1 = run["shards_per_rank"]
    assert rank0 and rank1 and not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(8))
    # the merged cache equals a single-process extraction
    ds = TextDataset(a, np.arange(n) % 3, text_pair=b, name="nli")
    ref = load_embeddings(extract_features(bert, ds, tmp_path / "ref", progress=False, shard_size=4, batch_size=3))
    np.testing.assert_allclose(emb.features, ref.features, atol=1e-6)
    np.testing.assert_array_equal(emb.ids, ref.ids)


_ERROR_CHILD = """
import fcntl, sys, numpy as np, torch
import torch.distributed as dist
torch.set_num_threads(1)
from feature_extraction import TextDataset, extract_features, load_backbone
from feature_extraction._testing import random_sentences
dist.init_process_group("gloo")
rank = dist.get_rank()
bb = load_backbone(sys.argv[1])
ds = TextDataset(random_sentences(16, max_words=8), np.arange(16) % 2, name="toy")
forward = bb.forward
def broken(batch):
    raise ValueError("boom on rank 1")
bb.forward = broken if rank == 1 else forward
try:
    extract_features(bb, ds, sys.argv[2] + "/a", progress=False, shard_size=4, batch_size=4)
except Exception as e:
    print(f"A rank {rank}: {type(e).__name__}: {e}", flush=True)
bb.forward = forward
if rank == 0:  # as if another extraction were writing into the folder
    import os
    os.makedirs(sys.argv[2] + "/b", exist_ok=True)
    lock = open(sys.argv[2] + "/b/.extract.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
dist.barrier()
try:
    extract_features(bb, ds, sys.argv[2] + "/b", progress=False, shard_size=4, batch_size=4)
except Exception as e:
    print(f"B rank {rank}: {type(e).__name__}: {e}", flush=True)
dist.destroy_process_group()
print(f"done rank {rank}", flush=True)
# past this point only the interpreter's teardown is left, where torch's C++ statics (gloo) aborted
# ("terminate called without an active exception") about once in 30 runs after every line above had
# printed: leave without running them, as what this test checks is done
import os
os._exit(0)
"""


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_an_error_on_one_rank_reaches_every_rank(tmp_path):
    bert = make_tiny_bert(tmp_path / "bert")
    script = tmp_path / "child.py"
    script.write_text(_ERROR_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(bert), str(tmp_path)]
    # without the fix the ranks that did not fail wait forever in a collective
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout
    assert "A rank 1: ValueError: boom on rank 1" in lines
    assert "A rank 0: RuntimeError: the extraction failed on rank 1: ValueError('boom on rank 1')" in lines
    assert "B rank 0: OutputBusyError" in lines and "B rank 1: OutputBusyError" in lines
    assert "done rank 0" in lines and "done rank 1" in lines  # both ranks tore the process group down
