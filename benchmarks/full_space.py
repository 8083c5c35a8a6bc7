"""Every hyperparameter at once: `tuner run search_spaces/digits_tpe.yaml` (48 TPE
trials, 20 epochs, 14 hyperparameters) cold (empty compilation cache) and warm, whole
processes; useful training GFLOP/s (widths, depths and rows as ``lane_flops`` counts
them) next to a large matmul's measured in the same run.

Targets: warm training >= 30% of the matmul's GFLOP/s; the cold run at most 1.5x the
warm one.

    python benchmarks/full_space.py
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, matmul_gflops, table  # noqa: E402
from w1_cli import tuner_run  # noqa: E402

SPEC = os.path.join(ROOT, "search_spaces", "digits_tpe.yaml")


def main() -> None:
    peak = matmul_gflops()
    with tempfile.TemporaryDirectory() as cache:
        env = {"TUNER_JAX_CACHE": cache}
        runs = {}
        for label in ("cold", "warm"):
            with tempfile.TemporaryDirectory() as cwd:
                runs[label] = tuner_run(cwd, env, "digits-tpe", ["--no-refit"], SPEC)
    rows = []
    for label, (secs, r) in runs.items():
        useful = r["useful_gflop"] / r["train_s"]
        rows.append((label, f"{secs:.1f}", f"{r['best_value']:.4f}",
                     f"{useful:.1f} ({useful / peak:.0%})",
                     f"train {r['train_s']:.1f}s, compile {r['compile_s']:.1f}s "
                     f"({r['programs']} programs, {r['cache_hits']} from cache), padding "
                     f"+{r['padded_gflop'] / r['useful_gflop'] - 1:.0%}"))
    print(table(rows, ("digits_tpe (48 trials)", "seconds", "best CV acc",
                       "useful GFLOP/s (of matmul)", "detail")))
    cold, warm = runs["cold"][0], runs["warm"][0]
    print(f"\nlarge float32 matmul in this run: {peak:.1f} GFLOP/s")
    print(f"targets: warm useful >= 30% of matmul: "
          f"{runs['warm'][1]['useful_gflop'] / runs['warm'][1]['train_s'] / peak:.0%}; "
          f"cold <= 1.5x warm: {cold / warm:.2f}x")


if __name__ == "__main__":
    main()
