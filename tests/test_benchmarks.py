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
    assert {r["rule"] for r in runs} == {"wga", "wca", "bias"}
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
    for rule in ("| worst_class |", "| bias_unsupervised |"):
        line = next(row for row in proc.stdout.splitlines() if row.startswith(rule))
        assert line.count("[") == 2 and "of" in line
