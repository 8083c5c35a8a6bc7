"""W3: scale. A grid of 8 trials (learning rate {1e-3, 3e-3} x l2 {1e-5, 1e-4} x
activation {relu, tanh}; width 256, depth 2, adam, batch 256) on
make_classification(n_features=50, n_informative=30, n_classes=4, random_state=0) saved
as NPZ, 3-fold CV, through `tuner run` as a new user would; whole processes, peak RSS of
each process, same-run ratios.

Targets: at 100,000 rows and 10 epochs >= 2.5x faster than scikit-learn GridSearchCV
(n_jobs=2) on the same 24 fits, training >= 60% of a large float32 matmul's GFLOP/s
(measured in the same run), best CV accuracy within 0.003 of scikit-learn's; peak RSS
<= 3 GB at 1,000,000 rows and 1 epoch, <= 1.5 GB at 100,000 rows and 1 epoch.

    python benchmarks/w3_scale.py [--skip-baseline] [--skip-million]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import matmul_gflops, run_child, run_measured, table  # noqa: E402

SPEC = """name: w3
data: {{source: "npz:{data}", task: multiclass}}
cv: {{folds: 3, stratified: true, shuffle: true, seed: 0}}
search: {{method: grid, batch: 8}}
metric: accuracy
fixed: {{width: 256, depth: 2, optimizer: adam, batch_size: 256, epochs: {epochs}}}
space:
  learning_rate: [1.0e-3, 3.0e-3]
  l2: [1.0e-5, 1.0e-4]
  activation: [relu, tanh]
"""


def tuner_run(folder: str, data: str, epochs: int, cache: str, label: str) -> dict:
    spec = os.path.join(folder, f"{label}.yaml")
    with open(spec, "w") as fh:
        fh.write(SPEC.format(data=data, epochs=epochs))
    stats = os.path.join(folder, f"{label}.json")
    work = os.path.join(folder, label)
    os.makedirs(work)
    wall, rss, proc = run_measured(
        [shutil.which("tuner") or "tuner", "run", spec, "--no-refit"], cwd=work,
        env={"TUNER_JAX_CACHE": cache, "TUNER_STATS_JSON": stats})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"tuner run failed ({label})")
    with open(stats) as fh:
        return {**json.load(fh), "wall_s": wall, "rss_gb": rss / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    peak = matmul_gflops()
    with tempfile.TemporaryDirectory() as folder:
        cache = os.path.join(folder, "cache")
        small = os.path.join(folder, "w3_100k.npz")
        run_child(["benchmarks/_w3_baseline.py", "make", small, "100000"])
        runs = {"100k x 10, first": tuner_run(folder, small, 10, cache, "first"),
                "100k x 10, warm": tuner_run(folder, small, 10, cache, "warm"),
                "100k x 1": tuner_run(folder, small, 1, cache, "one")}
        if not args.skip_million:
            big = os.path.join(folder, "w3_1m.npz")
            run_child(["benchmarks/_w3_baseline.py", "make", big, "1000000"])
            runs["1M x 1"] = tuner_run(folder, big, 1, cache, "million")
        base = None if args.skip_baseline else run_child(
            ["benchmarks/_w3_baseline.py", small, "10"])
    rows = []
    if base is not None:
        rows.append(("scikit-learn GridSearchCV, 100k x 10 (n_jobs=2)", f"{base[0]:.1f}",
                     "1.00x", f"{base[1]['best_cv_accuracy']:.4f}", "-", "-"))
    for label, r in runs.items():
        gflops = r["padded_gflop"] / r["train_s"]
        ratio = f"{base[0] / r['wall_s']:.2f}x" if base is not None and "x 10" in label else "-"
        rows.append((f"tuner run, {label}", f"{r['wall_s']:.1f}", ratio,
                     f"{r['best_value']:.4f}", f"{r['rss_gb']:.2f}",
                     f"train {r['train_s']:.1f}s at {gflops:.0f} GFLOP/s ({gflops / peak:.0%} "
                     f"of matmul), compile {r['compile_s']:.1f}s"))
    print(table(rows, ("W3 (8 trials x 3 folds)", "seconds", "speed-up", "best CV acc",
                       "peak RSS GB", "detail")))
    print(f"\nlarge float32 matmul in this run: {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
