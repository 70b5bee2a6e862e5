"""Build the two real benchmarks with the feature-extraction stage and check that the estimators run on them.

    python benchmarks/build_real_benchmarks.py [--cache-root DIR] [--data-home DIR] [--only mnli|fashion] [--rebuild]
        [--json F]

For each benchmark: extraction wall time (0 when the cache already
existed: it is reused), cache size on disk, rows and feature dimension per
split, group counts, and ERMClassifier's test average and worst-group
accuracy, trained on the train split of the cache loaded back with
``skgroup.datasets.load_embeddings`` / ``split_embeddings``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_extraction import keep_freed_memory  # noqa: E402
from feature_extraction.real import build_fashion_spurious, build_mnli_minilm  # noqa: E402
from skgroup import ERMClassifier, worst_group_accuracy  # noqa: E402
from skgroup.datasets import load_embeddings, split_embeddings  # noqa: E402
from _data import use_project_data  # benchmarks/ is on sys.path when a script runs

BUILDERS = {"mnli": build_mnli_minilm, "fashion": build_fashion_spurious}


def report(name, builder, cache_root, data_home, rebuild=False):
    t = time.perf_counter()
    path = builder(cache_root=cache_root, data_home=data_home, overwrite=rebuild)
    wall = time.perf_counter() - t
    emb = load_embeddings(path, verify=True)
    run = emb.manifest["extraction"]["run"]
    s = split_embeddings(emb)
    clf = ERMClassifier(random_state=0).fit(s.train.X, s.train.y)
    pred = clf.predict(s.test.X)
    out = {
        "benchmark": name,
        "path": str(path),
        "wall_seconds_this_call": round(wall, 1),
        "extraction_seconds": round(run["seconds"], 1),
        "extraction_items_per_second": round(run["items_per_second"], 1),
        "device": run["device"],
        "cache_mb": round(sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) / 2**20, 1),
        "features": list(emb.features.shape),
        "dtype": str(emb.features.dtype),
        "groups": s.group_names,
        "group_counts": {k: np.bincount(s[k].group_labels, minlength=len(s.group_names)).tolist()
                         for k in ("train", "val", "test")},
        "erm_test_accuracy": float((pred == s.test.y).mean()),
        "erm_test_worst_group_accuracy": float(worst_group_accuracy(s.test.y, pred, group_labels=s.test.group_labels)),
    }
    print(json.dumps(out, indent=2), flush=True)
    return out


def main(argv=None):
    use_project_data()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-root")
    p.add_argument("--data-home")
    p.add_argument("--only", choices=sorted(BUILDERS))
    p.add_argument("--rebuild", action="store_true", help="extract again even if the caches exist")
    p.add_argument("--json")
    args = p.parse_args(argv)
    keep_freed_memory()  # a process dedicated to extraction, as the command line
    names = [args.only] if args.only else list(BUILDERS)
    results = [report(n, BUILDERS[n], args.cache_root, args.data_home, args.rebuild) for n in names]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
