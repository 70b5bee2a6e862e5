"""Smoke tests of the benchmark scripts (the CI runs `compare.py --quick`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_compare_quick_runs_and_resumes(tmp_path):
    out = tmp_path / "res"
    # three estimators: the script's loop is the same for all (the whole registry runs in benchmarks/)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--out", str(out), "--estimators",
           "ERMClassifier", "JTTClassifier", "GroupDROClassifier"]
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
    # one of the four rules (each is a search of its own: the rules are RobustSearchCV's and test_groups'
    # tests) and three estimators in the defaults table (the loop is the same for all)
    proc = subprocess.run([sys.executable, "-m", "skgroup", "--seeds", "1", "--n-train", "600", "--rules",
                           "inferred_worst_group", "--estimators", "ERMClassifier", "JTTClassifier", "CVaRClassifier"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ERMClassifier" in proc.stdout and "worst-group acc" in proc.stdout
    assert "| class_diff |" not in proc.stdout and "| GroupDROClassifier" not in proc.stdout
    # the search's pick under the rule, with intervals
    for rule in ("| inferred_worst_group |",):
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
    for script in ("finetune.py", "finetune_parity.py", "finetune_speed.py"):
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


# -- the benchmark suite (benchmarks/suite.py) and its reference oracles ----------------------------


def _benchmarks_on_path():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))


def test_suite_quick_runs_resumes_and_writes_tables(tmp_path):
    out = tmp_path / "suite"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--out", str(out),
           "--estimators", "ERMClassifier", "GroupBalancedClassifier",
           "--modes", "defaults", "defaults_val", "tuned", "reference"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    # 2 estimators x 3 modes, and the references of those two (ERM, group balancing)
    assert sorted((c["estimator"], c["mode"]) for c in cells) == sorted(
        [(e, m) for e in ("ERMClassifier", "GroupBalancedClassifier") for m in ("defaults", "defaults_val", "tuned")]
        + [("ERM", "reference"), ("group balancing", "reference")])
    for c in cells:
        assert "error" not in c, c
        assert 0 <= c["test_wga"] <= c["test_acc"] <= 1 and c["majority_rate"] == 0.5  # balanced test set
    table = (out / "benchmarks_results.inc").read_text()
    assert "Library against the references" in table and '"synthetic", "GroupBalanced", "group balancing"' in table
    assert (out / "summary.csv").exists() and json.loads((out / "summary.json").read_text())["cells"] == 8
    # a restart finds every cell done: nothing runs again, the tables are rewritten
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 cells done, 0 to run" in proc.stdout
    assert len((out / "cells.jsonl").read_text().splitlines()) == 8


def _cell(estimator, mode, acc, wga, seed=0, majority=0.6, bacc=None, **kw):
    return {"dataset": "d", "estimator": estimator, "mode": mode, "seed": seed, "majority_rate": majority,
            "n_classes": 2, "test_acc": acc, "test_wga": wga, "test_wca": wga,
            "test_bacc": acc if bacc is None else bacc, "fit_time": 1.0, "cpu_time": 1.0, **kw}


def test_suite_flags_by_hand():
    _benchmarks_on_path()
    import suite

    cells = [
        _cell("ERMClassifier", "defaults", 0.80, 0.50),
        _cell("ERMClassifier", "defaults_val", 0.785, 0.50),   # accuracy drop 0.015 > 0.01: V
        _cell("ERMClassifier", "tuned", 0.80, 0.60),
        _cell("JTTClassifier", "defaults", 0.55, 0.47),        # accuracy below the majority rate 0.6 with a
        # balanced accuracy above chance (0.55): the trade of a robust method, no M; WGA -0.03: E
        _cell("LfFClassifier", "defaults", 0.55, 0.40, bacc=0.505),  # below the rate and at chance: M (and E)
        _cell("JTTClassifier", "defaults_val", 0.70, 0.49),    # WGA -0.01 from ERM: no E
        _cell("JTTClassifier", "tuned", 0.70, 0.585),          # reference 0.60: -0.015 < -0.01: R
        _cell("CVaRClassifier", "tuned", 0.70, 0.595),         # reference 0.60: -0.005: no R
        _cell("GroupDROClassifier", "defaults", 0.70, 0.50, bacc=0.505),  # balanced accuracy at chance: C
        _cell("GroupDROClassifier", "defaults_val", 0.70, 0.40),  # WGA 0.50 -> 0.40 with X_val: V (and E)
        _cell("JTT", "reference", 0.7, 0.60), _cell("CVaR DRO", "reference", 0.7, 0.60),
    ]
    fl = suite.flags(suite.aggregate(cells))
    got = {(k[1], k[2]): "".join(sorted(c for c, *_ in v)) for k, v in fl.items()}
    assert got == {("ERMClassifier", "defaults_val"): "V", ("JTTClassifier", "defaults"): "E",
                   ("LfFClassifier", "defaults"): "EM",
                   ("JTTClassifier", "tuned"): "R", ("GroupDROClassifier", "defaults"): "C",
                   ("GroupDROClassifier", "defaults_val"): "EV"}
    # seed noise: a drop of 0.03 with seeds spread by 0.05 is within twice the pooled std
    noisy = [_cell("ERMClassifier", "defaults", 0.8, 0.5)]
    for seed, (a, b) in enumerate([(0.55, 0.47), (0.45, 0.47), (0.50, 0.37)]):
        noisy += [_cell("AFRClassifier", "defaults", 0.7, a, seed=seed), _cell("AFRClassifier", "defaults_val", 0.7, b,
                                                                                seed=seed)]
    assert not [c for c, *_ in suite.flags(suite.aggregate(noisy)).get(("d", "AFRClassifier", "defaults_val"), [])
                if c == "V"]


def test_suite_renders_each_label_free_search_with_its_picks_and_flags():
    _benchmarks_on_path()
    import suite

    inferred, worst_class = (suite.search_name(m) for m in ("label_free_inferred", "label_free"))
    cells = [_cell("ERMClassifier", "defaults", 0.80, 0.50), _cell("GroupDROClassifier", "tuned", 0.75, 0.70),
             _cell(worst_class, "label_free", 0.75, 0.45, pick="AFRClassifier", params={"gamma": 2.0}),
             _cell(inferred, "label_free_inferred", 0.75, 0.62, pick="JTTClassifier", params={"lambda_up": 5})]
    for c in cells:
        c["dataset"] = "synthetic"
    fl = suite.flags(suite.aggregate(cells))
    # the worst-class search falls 0.05 below ERM at defaults: E; the inferred-group search does not
    assert [c for c, *_ in fl[("synthetic", worst_class, "label_free")]] == ["E"]
    assert ("synthetic", inferred, "label_free_inferred") not in fl
    text, _, _ = suite.render(cells, {}, ["ERMClassifier"], "test")
    assert '"RobustSearchCV(\'auto\', inferred_worst_group)", "", "", "", "", "0.750 ± 0.000", "0.620 ± 0.000"' in text
    assert "The label-free search under selection='worst_class' picked, by seed: AFR (gamma=2)." in text
    assert ("The label-free search under selection='inferred_worst_group' picked, by seed: JTT (lambda_up=5)."
            in text)
    # gap closed between ERM (0.50) and Group DRO with labels (0.70), the default search first:
    # (0.62 - 0.50) / 0.2 and (0.45 - 0.50) / 0.2
    assert '"synthetic", "0.500 ± 0.000", "0.700 ± 0.000", "0.620 ± 0.000", "60 %", "0.450 ± 0.000", "-25 %"' in text


def test_reference_scores_and_weights_by_hand():
    _benchmarks_on_path()
    import references

    y = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 1, 0, 1])
    g = np.array([0, 0, 1, 1, 2, 2])
    # group 0: 1/2, group 1: 2/2, group 2: 0/2 -> WGA 0; average 3/6
    assert references.group_scores(y, pred, g) == (0.0, 0.5)
    # the l2 <-> C conversion: sklearn's C * sum(w loss) + |W|^2 / 2 is n C (mean loss + |W|^2 / (2 n C))
    X = np.random.RandomState(0).randn(200, 3)
    yy = (X[:, 0] > 0).astype(int)
    m = references._logreg(X, yy, l2=0.5)
    z = X @ m.coef_.ravel() + m.intercept_[0]
    grad = X.T @ (1 / (1 + np.exp(-z)) - yy) / len(yy) + 0.5 * m.coef_.ravel()
    np.testing.assert_allclose(grad, 0, atol=1e-4)  # stationary point of mean loss + l2/2 |W|^2


def test_references_beat_erm_where_the_answer_is_known():
    # the synthetic benchmark: the spurious block is easier, ERM leans on it; reweighting the groups
    # and Group DRO are known to raise worst-group accuracy far above ERM's (Sagawa et al., 2020)
    _benchmarks_on_path()
    import references
    from sklearn.utils import Bunch

    from skgroup.datasets import make_spurious_benchmark

    b = make_spurious_benchmark(600, 400, 800, random_state=0)
    data = Bunch(train=b.train, val=b.val, test=b.test)
    erm = references.fit_reference("ERM", data, 0)
    for name in ("group balancing", "Group DRO"):
        res = references.fit_reference(name, data, 0)
        assert res["test_wga"] > erm["test_wga"] + 0.1, (name, res["test_wga"], erm["test_wga"])
