"""What per-lane selectors cost: one program with one activation and one optimizer
against programs whose lanes mix activations and/or optimizer families (every lane then
computes each choice and selects its own), in one run.

12 lanes, width 128, depth 2, 5 folds of digits-sized random data, 5 epochs; the time of
a warm call (compile excluded), best of 3, and the ratio to the single-choice program.

    python benchmarks/mixed_programs.py
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from models.compile_cache import use_cpu_cores_as_devices

use_cpu_cores_as_devices()

from models import ProgramCache  # noqa: E402
from models.folds import FoldStack  # noqa: E402
from models.hparams import TrialConfig, lane_hparams, signature_for  # noqa: E402

RNG = np.random.default_rng(0)
PROGRAMS = ProgramCache()
F, N_TRAIN, N_VAL, D = 5, 1438, 360, 64
FOLDS = FoldStack(
    x_train=RNG.normal(size=(F, N_TRAIN, D)).astype(np.float32),
    y_train=RNG.integers(0, 10, (F, N_TRAIN)).astype(np.int32),
    w_train=np.ones((F, N_TRAIN), np.float32),
    x_val=RNG.normal(size=(F, N_VAL, D)).astype(np.float32),
    y_val=RNG.integers(0, 10, (F, N_VAL)).astype(np.int32),
    w_val=np.ones((F, N_VAL), np.float32),
    y_shift=np.zeros((F, 1), np.float32), y_scale=np.ones((F, 1), np.float32))
VARIANTS = {
    "one activation, one optimizer": (["relu"], ["adam"]),
    "two optimizer families": (["relu"], ["adam", "momentum"]),
    "three activations": (["relu", "tanh", "sigmoid"], ["adam"]),
    "both": (["relu", "tanh", "sigmoid"], ["adam", "momentum"]),
}


def seconds(activations: list[str], optimizers: list[str]) -> float:
    configs = [TrialConfig.from_dict({
        "learning_rate": 1e-3, "l2": 1e-4, "width": 128, "depth": 2, "batch_size": 64,
        "epochs": 5, "activation": activations[i % len(activations)],
        "optimizer": optimizers[i % len(optimizers)]}, trial=i) for i in range(12)]
    sig = dataclasses.replace(signature_for(configs, "multiclass", D, 10, N_TRAIN),
                              metrics=("accuracy",))
    hp = lane_hparams(configs, sig)
    jax.block_until_ready(PROGRAMS.fit(sig, hp, FOLDS))  # compile
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(PROGRAMS.fit(sig, hp, FOLDS))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    base = None
    for label, (activations, optimizers) in VARIANTS.items():
        secs = seconds(activations, optimizers)
        base = base or secs
        print(f"{label:32s} {secs:6.2f} s  {secs / base:5.2f}x")


if __name__ == "__main__":
    main()
