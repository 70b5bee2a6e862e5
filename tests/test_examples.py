"""Every example in examples/ runs, in its quick mode (SKGROUP_EXAMPLES_QUICK=1)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"plot_quickstart.py", "plot_choose_without_group_labels.py", "plot_mnli_minilm.py",
            "plot_jtt_error_set.py", "plot_finetune_minilm.py", "plot_mtl_toy.py", "plot_infer_groups.py"} <= names
    for path in EXAMPLES:  # sphinx-gallery: a docstring with a title underlined by '='
        head = path.read_text().split('"""')[1].strip().splitlines()
        assert len(head) > 2 and set(head[1]) == {"="}, f"{path.name} lacks a sphinx-gallery title"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_quickly(path, tmp_path):
    env = {**os.environ, "SKGROUP_EXAMPLES_QUICK": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "the example printed nothing"
