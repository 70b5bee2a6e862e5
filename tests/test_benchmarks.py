"""Smoke tests of the benchmark scripts (the CI runs `compare.py --quick`)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_quick_runs_and_resumes(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "worst-group acc" in proc.stdout
    for name in ("results.md", "results.csv", "runs.jsonl"):
        assert (out / name).exists()
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["rule"] for r in runs} == {"wga", "acc", "wca", "bias"}
    # a second run finds every run done and only re-renders the tables
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == len(runs)


def test_main_job_prints_its_table():
    proc = subprocess.run([sys.executable, "-m", "skgroup", "--seeds", "1", "--n-train", "600"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ERMClassifier" in proc.stdout and "worst-group acc" in proc.stdout
    # the search's pick under each label-free rule, with intervals
    for rule in ("| worst_class |", "| bias_unsupervised |", "| class_diff |", "| inferred_worst_group |"):
        line = next(row for row in proc.stdout.splitlines() if row.startswith(rule))
        assert line.count("[") == 2 and "of" in line
        # whether the pick trains on inferred groups, and on which inferrer's
        assert "| none |" in line or "| inferred (" in line


def test_group_inference_benchmark_quick(tmp_path):
    out = tmp_path / "groups"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "groups.py"), "--section", "recovery", "--quick", "--seeds", "1",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[0])
    assert set(run["result"]) == {"ErrorSplit", "Cluster (features)", "Cluster (probabilities)", "Cluster (gradients)",
                                  "EIIL", "SPARE"}
    assert run["result"]["Cluster (features)"]["train"]["ari_within_class"] > 0.9
    assert "| synthetic | 1 | Cluster (features) |" in proc.stdout


def test_bench_merge_smoke(tmp_path):
    out = tmp_path / "merge.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_merge.py"), "--n", "3000", "--dim", "16", "--shard-size",
           "256", "--dir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["features_bytes"] == 3000 * 16 * 4 and result["peak_rss_mib"] > 0
    assert "peak / data" in proc.stdout
    assert not list(tmp_path.glob("bench-merge-*"))  # removed without --keep


def test_finetune_scripts_quick():
    for script in ("finetune.py", "finetune_speed.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                              text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps/s" in proc.stdout


def test_mtl_toy_benchmark_prints_the_paper_table():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mtl_toy.py"), "--epochs", "2", "--seeds", "1",
                           "--reading", "variance"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| end task only | 0.1 | 64.15 |" in proc.stdout and "94.02" in proc.stdout


def test_mtl_toy_example_writes_its_figure(tmp_path):
    out = tmp_path / "halfspaces.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "plot_mtl_toy.py"), "--epochs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 10_000 and "worst-group accuracy" in proc.stdout
