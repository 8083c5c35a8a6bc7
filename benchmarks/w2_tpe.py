"""W2 (48 TPE trials on digits over lr, L2, width, depth, activation, optimizer, batch)
with `tuner run search_spaces/digits_w2.yaml` against Optuna TPE + scikit-learn, in
one run, whole processes.

Target: >= 3x faster, best CV accuracy within 0.005 of the baseline's or better. Also
prints training GFLOP/s next to a large matmul's, programs compiled, compile seconds
and the padded-compute overhead.

Same-work comparison (issue 10): the 48 configurations our sweep trained, trained again
by scikit-learn (5-fold cross_val_score, n_jobs=2; benchmarks/_w2_replay.py), so both
sides do exactly the same work. Targets: >= 3x with a warm compilation cache, >= 1.5x
on a cold first run; padding overhead under 30%.

    python benchmarks/w2_tpe.py [--trials 48]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, matmul_gflops, run_child, table  # noqa: E402
from w1_cli import tuner_run  # noqa: E402

SPEC = os.path.join(ROOT, "search_spaces", "digits_w2.yaml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=48)
    args = parser.parse_args()
    peak = matmul_gflops()
    base_s, base = run_child(["benchmarks/_w2_baseline.py", str(args.trials)])
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cwd:
        env = {"TUNER_JAX_CACHE": cache}
        extra = ["--trials", str(args.trials)]
        cold_s, cold = tuner_run(cwd, env, "w2-cold", extra, SPEC)
        warm_s, warm = tuner_run(cwd, env, "w2-warm", extra, SPEC)
        configs = os.path.join(cwd, "configs.json")
        write_configs(os.path.join(cwd, "mlruns", "optuna.db"), "w2-warm", configs)
        replay_s, replay = run_child(["benchmarks/_w2_replay.py", configs])
    rows = [("Optuna TPE + scikit-learn (n_jobs=2)", f"{base_s:.1f}", "1.00x",
             f"{base['best_cv_accuracy']:.4f}", "-")]
    for label, secs, r in (("tuner run, cold cache", cold_s, cold),
                           ("tuner run, warm cache", warm_s, warm)):
        rows.append((label, f"{secs:.1f}", f"{base_s / secs:.2f}x", f"{r['best_value']:.4f}",
                     f"train {r['train_s']:.1f}s at {r['padded_gflop'] / r['train_s']:.1f} "
                     f"GFLOP/s, {r['programs']} programs, compile {r['compile_s']:.1f}s, "
                     f"padding +{r['padded_gflop'] / r['useful_gflop'] - 1:.0%}, "
                     f"tracking {r['tracking_s']:.1f}s"))
    print(table(rows, (f"W2 ({args.trials} trials)", "seconds", "speed-up", "best CV acc",
                       "detail")))
    print(f"\nlarge float32 matmul in this run: {peak:.1f} GFLOP/s")
    print(f"targets: >= 3x (warm): {base_s / warm_s:.2f}x, (cold): {base_s / cold_s:.2f}x; "
          f"accuracy within 0.005: {warm['best_value'] >= base['best_cv_accuracy'] - 0.005}")
    print(f"\nsame work: scikit-learn trained our {replay['configs']} configurations in "
          f"{replay_s:.1f}s (best {replay['best_cv_accuracy']:.4f}): warm {replay_s / warm_s:.2f}x "
          f"(target >= 3x), cold {replay_s / cold_s:.2f}x (target >= 1.5x); padding "
          f"+{warm['padded_gflop'] / warm['useful_gflop'] - 1:.0%} (target < 30%)")


def write_configs(storage: str, study: str, path: str) -> None:
    """The configurations a finished sweep trained, for the same-work replay."""
    import json

    import optuna

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{storage}")
    fixed = {"epochs": 30, "momentum": 0.9}
    with open(path, "w") as fh:
        json.dump([{**fixed, **t.params} for t in loaded.trials if t.state.is_finished()], fh)


if __name__ == "__main__":
    main()
