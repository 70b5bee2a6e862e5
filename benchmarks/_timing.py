"""Timing helper shared by the benchmark scripts (run them from the repo root or anywhere)."""

import time

import numpy as np


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def print_method_table(rows, params_header="selected params"):
    """One Markdown row per method: mean test accuracy and WGA over seeds, WGA per seed, params, time ratio.

    ``rows``: dicts with ``method``, ``params``, ``test`` (a list of
    (accuracy, worst-group accuracy) per seed) and ``ratio`` (fit time / ERM).
    """
    print(f"| method | test avg acc | test WGA | WGA per seed | {params_header} | fit time / ERM |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        acc = np.mean([a for a, _ in r["test"]])
        wga = np.mean([w for _, w in r["test"]])
        per = ", ".join(f"{w:.3f}" for _, w in r["test"])
        print(f"| {r['method']} | {acc:.3f} | {wga:.3f} | {per} | {r['params']} | {r['ratio']:.2f} |")
