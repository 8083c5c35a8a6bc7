"""Child process of w1_grid.py: the W1 grid trained with models/ (through the executor).

Prints one JSON line: wall seconds inside the process, best CV accuracy, training
seconds, compile seconds, programs compiled, training GFLOP.
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()

from sklearn.datasets import load_digits  # noqa: E402

from models import ProgramCache, ProgramStore, TrialConfig  # noqa: E402
from models.compile_cache import enable_persistent_cache, use_cpu_cores_as_devices  # noqa: E402
from tuner.inputs.cv import make_folds  # noqa: E402
from tuner.inputs.data import from_arrays  # noqa: E402
from tuner.execution.executor import Choices, Executor  # noqa: E402

W1_GRID = [(lr, l2, width) for lr in (1e-3, 3e-3, 1e-2) for l2 in (1e-5, 1e-4, 1e-3)
           for width in (64, 128)]


def main(cache_dir: str) -> None:
    if os.environ.get("TUNER_CPU_DEVICES") != "1":
        use_cpu_cores_as_devices()
    programs = ProgramCache(ProgramStore(os.path.join(enable_persistent_cache(cache_dir),
                                                      "programs")))
    X, y = load_digits(return_X_y=True)
    dataset = from_arrays(X, y, task="multiclass")
    folds, _ = make_folds(dataset, folds=5, stratified=True, shuffle=True, seed=0)
    configs = [
        TrialConfig.from_dict({"learning_rate": lr, "l2": l2, "width": w, "depth": 1,
                               "activation": "relu", "optimizer": "adam", "batch_size": 64,
                               "epochs": 30}, trial=i)
        for i, (lr, l2, w) in enumerate(W1_GRID)
    ]
    ex = Executor(folds, "multiclass", 10, "accuracy",
                  Choices(("relu",), ("glorot_uniform",), ("constant",)), seed=0,
                  programs=programs)
    outcomes = ex.run(configs)
    best = max(o.value for o in outcomes if o.value is not None)
    print(json.dumps({
        "wall_s": time.perf_counter() - T0,
        "best_cv_accuracy": best,
        "train_s": ex.stats.train_seconds,
        "compile_s": ex.stats.compile_seconds,
        "programs": ex.stats.programs_compiled,
        "cache_hits": ex.stats.cache_hits,
        "groups": len(ex.plan_groups(configs)),
        "padded_gflop": ex.stats.padded_flops / 1e9,
        "useful_gflop": ex.stats.useful_flops / 1e9,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
