"""`tuner run search_spaces/digits_grid.yaml` (W1, tracking and refit included) as a
whole process, against scikit-learn's GridSearchCV baseline, in one run.

The timed `tuner run` uses a warm compilation cache (a first, untimed run fills it) and
an MLflow store that already exists (MLflow creates its schema once per store, ~5 s).
Target: >= 3x faster than the baseline, best CV accuracy no lower; tracking < 10% of the
sweep's wall time.

    python benchmarks/w1_cli.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, run_child, table  # noqa: E402

SPEC = os.path.join(ROOT, "search_spaces", "digits_grid.yaml")


def tuner_run(cwd: str, env: dict, study: str, extra: list[str] = (), spec: str = SPEC
              ) -> tuple[float, dict]:
    stats = os.path.join(cwd, f"{study}.json")
    start = time.perf_counter()
    proc = subprocess.run([shutil.which("tuner") or "tuner", "run", spec, "--study", study,
                           *extra],
                          cwd=cwd, env={**os.environ, **env, "TUNER_STATS_JSON": stats},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"tuner run failed with exit code {proc.returncode}")
    with open(stats) as fh:
        return wall, json.load(fh)


def main() -> None:
    base_s, base = run_child(["benchmarks/_w1_sklearn.py"])
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cwd:
        env = {"TUNER_JAX_CACHE": cache}
        cold_s, cold = tuner_run(cwd, env, "w1-first")   # fills cache and store
        warm_s, warm = tuner_run(cwd, env, "w1-warm")
    rows = [("scikit-learn GridSearchCV (n_jobs=2)", f"{base_s:.2f}", "1.00x",
             f"{base['best_cv_accuracy']:.4f}", "-")]
    for label, secs, r in (("tuner run, first (cold cache, new store)", cold_s, cold),
                           ("tuner run, warm cache", warm_s, warm)):
        rows.append((label, f"{secs:.2f}", f"{base_s / secs:.2f}x", f"{r['best_value']:.4f}",
                     f"train {r['train_s']:.2f}s, compile {r['compile_s']:.2f}s, "
                     f"tracking {r['tracking_s']:.2f}s ({r['tracking_s'] / secs:.0%})"))
    print(table(rows, ("W1 via the CLI", "seconds", "speed-up", "best CV acc", "detail")))
    print(f"targets: warm >= 3x: {base_s / warm_s:.2f}x; accuracy >= baseline: "
          f"{warm['best_value'] >= base['best_cv_accuracy']}; tracking < 10% of wall: "
          f"{warm['tracking_s'] / warm_s:.1%}")


if __name__ == "__main__":
    main()
