"""W1 with models/ against scikit-learn's GridSearchCV, in one run.

W1: load_digits, standardised per fold, 5-fold stratified CV (shuffle, seed 0);
learning rate {1e-3, 3e-3, 1e-2} x L2 {1e-5, 1e-4, 1e-3} x width {64, 128};
1 hidden layer, relu, adam, batch 64, 30 epochs: 18 configurations, 90 fits.

Every figure is a whole child process (imports included): the baseline, ours with an
empty compilation cache (cold) and ours again with that cache filled (warm).
Targets: warm >= 5x, cold >= 2.5x faster; best CV accuracy no lower than the baseline.

    python benchmarks/w1_grid.py
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import matmul_gflops, run_child, table  # noqa: E402


def main() -> None:
    peak = matmul_gflops()
    base_s, base = run_child(["benchmarks/_w1_sklearn.py"])
    with tempfile.TemporaryDirectory() as cache:
        cold_s, cold = run_child(["benchmarks/_w1_models.py", cache])
        warm_s, warm = run_child(["benchmarks/_w1_models.py", cache])
    rows = [("scikit-learn GridSearchCV (n_jobs=2)", f"{base_s:.2f}", "1.00x",
             f"{base['best_cv_accuracy']:.4f}", "-")]
    for label, secs, r in (("models/ cold cache", cold_s, cold), ("models/ warm cache", warm_s, warm)):
        gflops = r["padded_gflop"] / r["train_s"]
        rows.append((label, f"{secs:.2f}", f"{base_s / secs:.2f}x",
                     f"{r['best_cv_accuracy']:.4f}",
                     f"train {r['train_s']:.2f}s, compile {r['compile_s']:.2f}s, "
                     f"{r['programs']} programs ({r.get('cache_hits', 0)} from cache), "
                     f"{gflops:.1f} GFLOP/s"))
    print(table(rows, ("W1 (90 fits)", "seconds", "speed-up", "best CV acc", "detail")))
    print(f"\nlarge float32 matmul (2048^2) in this run: {peak:.1f} GFLOP/s; "
          f"training reached {warm['padded_gflop'] / warm['train_s']:.1f} GFLOP/s "
          f"({warm['padded_gflop'] / warm['train_s'] / peak:.0%} of it); "
          f"training work {warm['useful_gflop']:.0f} GFLOP useful, "
          f"{warm['padded_gflop']:.0f} GFLOP as run")
    print(f"targets: warm >= 5x: {base_s / warm_s:.2f}x, cold >= 2.5x: {base_s / cold_s:.2f}x, "
          f"accuracy >= baseline: {warm['best_cv_accuracy'] >= base['best_cv_accuracy']}")


if __name__ == "__main__":
    main()
