"""W4: Hyperband that saves compute. `tuner run` with Hyperband (a) against the same sweep
without a pruner (b) and against what an Optuna user writes today (c: Optuna TPE +
HyperbandPruner + scikit-learn MLPClassifier.partial_fit, benchmarks/_w4_baseline.py),
in one run, whole processes.

W4: make_classification(n_samples=8_000, n_features=30, n_informative=15, n_classes=4,
random_state=1), 3-fold stratified CV, 64 TPE trials (seed 0), at most 30 epochs,
search_spaces/w4_hyperband.yaml (min_resource 2, reduction_factor 3).

Targets: (a) >= 2x faster than (b), best CV accuracy within 0.005 of (b); (a) >= 6x
faster than (c) with a warm compilation cache and >= 4x cold, best CV accuracy within
0.005 of (c) or better.

    python benchmarks/w4_hyperband.py [--trials 64] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, matmul_gflops, run_child, table  # noqa: E402
from w1_cli import tuner_run  # noqa: E402

SPEC = os.path.join(ROOT, "search_spaces", "w4_hyperband.yaml")
DATA = os.path.join(ROOT, "search_spaces", "data", "w4.npz")
DRAWS = 3  # study names, so Hyperband bracket assignments, for the warm (a) runs


def make_data() -> None:
    """The W4 table as NPZ (committed; written again only if missing)."""
    if os.path.exists(DATA):
        return
    import numpy as np
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=8_000, n_features=30, n_informative=15,
                               n_classes=4, random_state=1)
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    np.savez(DATA, X=X.astype(np.float32), y=y)


def spec_without_pruner(folder: str) -> str:
    """(b): the W4 spec with ``pruner: none`` (data path made absolute)."""
    import yaml

    with open(SPEC) as fh:
        spec = yaml.safe_load(fh)
    spec["search"]["pruner"] = "none"
    spec["data"]["source"] = f"npz:{DATA}"
    path = os.path.join(folder, "w4_none.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(spec, fh)
    return path


def detail(r: dict, secs: float, peak: float) -> str:
    gflops = r["padded_gflop"] / r["train_s"] if r["train_s"] else 0.0
    return (f"{r['programs']} programs ({r['cache_hits']} from cache), compile "
            f"{r['compile_s']:.1f}s, train {r['train_s']:.1f}s at {gflops:.0f} GFLOP/s "
            f"({gflops / peak:.0%} of matmul), {r['segments']} segments, tracking "
            f"{r['tracking_s']:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    make_data()
    peak = matmul_gflops()
    extra = ["--trials", str(args.trials), "--no-refit"]
    with tempfile.TemporaryDirectory() as cache:
        env = {"TUNER_JAX_CACHE": cache}
        runs = {}
        # Fresh folders. Optuna's Hyperband puts a trial in a bracket by a hash of the
        # study name and trial number, so one name is one draw of the brackets: (a) warm
        # runs under DRAWS names (the pruned trials, the epochs and the best differ).
        for label in ("a-cold", *(f"a-warm-{k}" for k in range(DRAWS)), "b-cold", "b-warm"):
            with tempfile.TemporaryDirectory() as cwd:
                spec = SPEC if label.startswith("a") else spec_without_pruner(cwd)
                name = f"w4-{label[-1]}" if label.startswith("a-warm") else "w4-0"
                runs[label] = tuner_run(cwd, env, name, extra, spec)
    base = None
    if not args.skip_baseline:
        base = run_child(["benchmarks/_w4_baseline.py", str(args.trials)])

    a_cold_s, a_cold = runs["a-cold"]
    a_s, a = runs["a-warm-0"]  # the same draw as the cold run
    b_s, b = runs["b-warm"]
    rows = []
    if base is not None:
        c_s, c = base
        rows.append(("(c) Optuna TPE + Hyperband + sklearn partial_fit (n_jobs=2)",
                     f"{c_s:.1f}", c["trial_epochs"], c["pruned"],
                     f"{c['best_cv_accuracy']:.4f}", "-"))
    warm = [runs[f"a-warm-{k}"] for k in range(DRAWS)]
    for label, secs, r in (("(a) tuner run, Hyperband, cold cache (study w4-0)", a_cold_s, a_cold),
                           *((f"(a) tuner run, Hyperband, warm cache (study w4-{k})", *warm[k])
                             for k in range(DRAWS)),
                           ("(b) tuner run, no pruner, warm cache", b_s, b)):
        rows.append((label, f"{secs:.1f}", r["trial_epochs"], r["pruned"],
                     f"{r['best_value']:.4f}", detail(r, secs, peak)))
    print(table(rows, (f"W4 ({args.trials} trials)", "seconds", "trial-epochs", "pruned",
                       "best CV acc", "detail")))
    print(f"\nlarge float32 matmul in this run: {peak:.1f} GFLOP/s")
    mean_s = sum(s for s, _ in warm) / DRAWS
    mean_best = sum(r["best_value"] for _, r in warm) / DRAWS
    mean_epochs = sum(r["trial_epochs"] for _, r in warm) / DRAWS
    print(f"(a) warm over {DRAWS} bracket draws: mean {mean_s:.1f}s, {mean_epochs:.0f} "
          f"trial-epochs, best {mean_best:.4f}")
    print(f"(a) vs (b): {b_s / mean_s:.2f}x faster (target >= 2x); best {mean_best:.4f} "
          f"vs {b['best_value']:.4f} (target within 0.005: "
          f"{mean_best >= b['best_value'] - 0.005})")
    if base is not None:
        print(f"(a) vs (c): warm {c_s / a_s:.2f}x (target >= 6x), cold {c_s / a_cold_s:.2f}x "
              f"(target >= 4x); best {a['best_value']:.4f} vs {c['best_cv_accuracy']:.4f} "
              f"(target within 0.005 or better: "
              f"{a['best_value'] >= c['best_cv_accuracy'] - 0.005})")


if __name__ == "__main__":
    main()
