"""Run a batch of trial configurations as few compiled programs as pays off.

Configs that must differ in program shape (normalisation, batch size, linear vs
hidden) are split apart. Within such a partition, widths are padded to a bucket
(unit masks), depths to a maximum (pass-through layers) and epochs to a maximum
(frozen lanes); activations, optimizers, inits and schedules are per-lane selectors
over the choices of the whole search space, so the program does not change from one
batch to the next. The remaining choice - where to cut the partition into width/depth
buckets - trades compile time against padded compute: ``plan_groups`` picks the cuts
that minimise (estimated compile seconds of programs not yet built) + (estimated
seconds of padded training).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Sequence

import jax
import numpy as np
from optuna.trial import TrialState

from models import FitResult, FoldStack, ProgramCache, Signature, TrialConfig
from models.hparams import (
    ACTIVATIONS, CHOICE_DEFAULTS, INITS, OPTIMIZER_FAMILIES, OPTIMIZER_FAMILY, SCHEDULES,
    canonical_init, lane_hparams, signature_for,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Choices:
    """The categorical choices a whole sweep can ask for (selector sets of every program)."""

    activations: tuple[str, ...]
    optimizers: tuple[str, ...]   # families
    inits: tuple[str, ...]
    schedules: tuple[str, ...]


@dataclasses.dataclass
class TrialOutcome:
    """What one config's training gave. curves: name -> [F, epochs] per fold."""

    config: TrialConfig
    state: TrialState               # COMPLETE or FAIL
    value: float | None
    value_std: float | None
    fold_values: list[float] | None
    curves: dict[str, np.ndarray]
    fail_reason: str | None = None


@dataclasses.dataclass
class ExecutorStats:
    programs_compiled: int = 0   # training programs built (compiled or loaded from cache)
    cache_hits: int = 0          # programs loaded from the persistent compilation cache
    compile_seconds: float = 0.0  # trace + lower + compile (or load) of those programs
    train_seconds: float = 0.0
    useful_flops: float = 0.0
    padded_flops: float = 0.0

    @property
    def padding_overhead(self) -> float:
        """Padded compute as a fraction of useful compute."""
        return self.padded_flops / self.useful_flops - 1.0 if self.useful_flops else 0.0


def lane_flops(sig_width: int, sig_depth: int, n_features: int, n_outputs: int,
               rows: int, epochs: int) -> float:
    """Rough training FLOPs of one lane (forward + backward = 3x the forward matmuls)."""
    if sig_depth == 0:
        per_row = n_features * n_outputs
    else:
        per_row = (n_features * sig_width + (sig_depth - 1) * sig_width ** 2
                   + sig_width * n_outputs)
    return 2.0 * 3.0 * per_row * rows * epochs


class Executor:
    """Trains batches of configs on one FoldStack; remembers what it compiled."""

    def __init__(self, folds: FoldStack, task: str, n_outputs: int, metric: str,
                 choices: Choices, seed: int = 0, *, programs: ProgramCache | None = None,
                 compile_estimate_s: float = 4.0, load_estimate_s: float = 0.5,
                 flops_per_s: float = 3e10):
        self.folds = folds
        self.programs = programs if programs is not None else ProgramCache()
        self.task = task
        self.n_outputs = n_outputs
        self.metric = metric
        self.choices = choices
        self.seed = seed
        self.stats = ExecutorStats()
        self._compiled: dict[Signature, set[int]] = {}  # signature -> lane counts built
        self._compile_estimate_s = compile_estimate_s
        self._load_estimate_s = load_estimate_s  # a program in the program store
        self._flops_per_s = flops_per_s
        self._n_train_real = float(np.asarray(folds.w_train).sum(axis=1).mean())

    # ------------------------------------------------------------------ planning
    def signature(self, configs: Sequence[TrialConfig]) -> Signature:
        base = signature_for(list(configs), self.task, self.folds.n_features,
                             self.n_outputs, self.folds.n_train)
        return dataclasses.replace(
            base,
            activations=self.choices.activations,
            optimizers=self.choices.optimizers,
            inits=self.choices.inits,
            schedules=self.choices.schedules,
            metrics=(self.metric,),
        )

    def _lane_seconds(self, sig: Signature) -> float:
        return lane_flops(sig.width, sig.depth, sig.n_features, sig.n_outputs,
                          self._n_train_real * self.folds.n_folds, sig.epochs) / self._flops_per_s

    def _lanes_and_cost(self, sig: Signature, n: int) -> tuple[int, float]:
        """How many lanes to run ``n`` trials in, and the estimated seconds.

        A program already compiled for more lanes may serve (padding lanes cost compute);
        otherwise a program of exactly ``n`` lanes is compiled.
        """
        per_lane = self._lane_seconds(sig)
        # Shard evenly over local devices (a no-op with one device).
        multiple = self.programs.lane_multiple()
        n = -(-n // multiple) * multiple
        options = [(n, self._build_seconds(sig, n))]
        options += [(m, 0.0) for m in self._compiled.get(sig, ()) if m > n]
        return min(((m, c + m * per_lane) for m, c in options), key=lambda mc: mc[1])

    def _build_seconds(self, sig: Signature, n_lanes: int) -> float:
        """Estimated seconds before a program of ``n_lanes`` lanes can run: nothing once
        built in this process, a load when a stored program exists, else a compile."""
        if n_lanes in self._compiled.get(sig, ()):
            return 0.0
        return self._compile_estimate_s if self._needs_compile(sig, n_lanes) \
            else self._load_estimate_s

    def _needs_compile(self, sig: Signature, n_lanes: int) -> bool:
        """Neither built in this process nor in the program store."""
        return (n_lanes not in self._compiled.get(sig, ())
                and not self.programs.is_stored(sig, n_lanes, self.folds))

    def _cost(self, configs: Sequence[TrialConfig]) -> float:
        return self._lanes_and_cost(self.signature(configs), len(configs))[1]

    def plan_groups(self, configs: Sequence[TrialConfig]) -> list[list[int]]:
        """Indices of ``configs`` grouped into programs (see the module docstring)."""
        partitions: dict[tuple, list[int]] = {}
        for i, c in enumerate(configs):
            batch = "full" if c.optimizer == "gd" else min(c.batch_size, self.folds.n_train)
            partitions.setdefault((c.norm, batch, c.depth == 0), []).append(i)
        groups = []
        for idx in partitions.values():
            # Sort by size so that a contiguous cut is a width/depth bucket; then an
            # O(n^2) dynamic programme over the cut points.
            idx = sorted(idx, key=lambda i: (configs[i].width, configs[i].depth,
                                             configs[i].epochs))
            n = len(idx)
            best = [0.0] + [math.inf] * n
            cut = [0] * (n + 1)
            for end in range(1, n + 1):
                for start in range(end):
                    cost = best[start] + self._cost([configs[i] for i in idx[start:end]])
                    if cost < best[end]:
                        best[end], cut[end] = cost, start
            end = n
            while end > 0:
                groups.append(idx[cut[end]:end])
                end = cut[end]
        return groups

    # ------------------------------------------------------------------ running
    def run(self, configs: Sequence[TrialConfig],
            on_group: Callable[[list[int], list[TrialOutcome]], None] | None = None
            ) -> list[TrialOutcome]:
        """Train every config on every fold; one outcome per config, in order.

        An exception inside one program fails that program's trials with the reason;
        the other programs still run. ``on_group(indices, outcomes)`` is called after each
        program, so a caller can record its trials while the next program trains.
        """
        outcomes: list[TrialOutcome | None] = [None] * len(configs)
        for group in self.plan_groups(configs):
            members = [configs[i] for i in group]
            try:
                results = self._run_group(members)
            except Exception as exc:  # noqa: BLE001 - one bad program must not end the sweep
                log.exception("training program failed")
                reason = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:500]
                results = [TrialOutcome(c, TrialState.FAIL, None, None, None, {}, reason)
                           for c in members]
            for i, r in zip(group, results):
                outcomes[i] = r
            if on_group is not None:
                on_group(list(group), results)
        return outcomes  # type: ignore[return-value]

    def _run_group(self, members: list[TrialConfig]) -> list[TrialOutcome]:
        sig = self.signature(members)
        n_lanes, _ = self._lanes_and_cost(sig, len(members))
        # Padding lanes repeat the first config; their results are dropped.
        lanes = members + [members[0]] * (n_lanes - len(members))
        hp = lane_hparams(lanes, sig)
        fresh = self._needs_compile(sig, n_lanes)

        before = dataclasses.replace(self.programs.stats)
        start = time.perf_counter()
        result = jax.device_get(self.programs.fit(sig, hp, self.folds, self.seed))
        after = self.programs.stats
        compile_s = after.compile_seconds - before.compile_seconds
        elapsed = time.perf_counter() - start - compile_s
        self.stats.compile_seconds += compile_s
        self.stats.programs_compiled += after.programs - before.programs
        self.stats.cache_hits += after.cache_hits - before.cache_hits
        if fresh and compile_s > 0.05:  # learn what a compile costs here
            self._compile_estimate_s = 0.5 * self._compile_estimate_s + 0.5 * compile_s
        self._compiled.setdefault(sig, set()).add(n_lanes)
        self.stats.train_seconds += elapsed

        rows = self._n_train_real * self.folds.n_folds
        padded = n_lanes * lane_flops(sig.width, sig.depth, sig.n_features, sig.n_outputs,
                                      rows, sig.epochs)
        useful = sum(lane_flops(c.width, c.depth, sig.n_features, sig.n_outputs, rows,
                                c.epochs) for c in members)
        self.stats.padded_flops += padded
        self.stats.useful_flops += useful
        if elapsed > 0:  # learn the achieved speed for the next plan
            self._flops_per_s = 0.5 * self._flops_per_s + 0.5 * padded / elapsed
        return [self._outcome(c, result, lane) for lane, c in enumerate(members)]

    def _outcome(self, config: TrialConfig, result: FitResult, lane: int
                 ) -> TrialOutcome:
        epochs = config.epochs
        curves = {"train_loss": result.train_loss[lane, :, :epochs],
                  "val_loss": result.val_loss[lane, :, :epochs]}
        for name, values in result.val_metrics.items():
            curves[f"val_{name}"] = values[lane, :, :epochs]
        diverged = result.diverged_epoch[lane]
        if (diverged >= 0).any():
            fold = int(np.argmax(diverged >= 0))
            epoch = int(diverged[fold])
            loss = result.train_loss[lane, fold, epoch]
            if np.isfinite(loss):
                loss = result.val_loss[lane, fold, epoch]
            reason = f"diverged: loss {loss} at epoch {epoch} (fold {fold})"
            return TrialOutcome(config, TrialState.FAIL, None, None, None, curves, reason)
        fold_values = curves[f"val_{self.metric}"][:, -1].astype(float)
        if not np.all(np.isfinite(fold_values)):
            return TrialOutcome(config, TrialState.FAIL, None, None, None, curves,
                                f"metric {self.metric} is not finite")
        return TrialOutcome(config, TrialState.COMPLETE, float(fold_values.mean()),
                            float(fold_values.std()), fold_values.tolist(), curves)


def choices_for_space(categorical: dict[str, Sequence[str]], fixed: dict) -> Choices:
    """Selector sets from the categorical values a sweep can produce."""
    def values(name: str, default: str) -> tuple[str, ...]:
        if name in categorical:
            return tuple(dict.fromkeys(categorical[name]))
        return (fixed.get(name, default),)

    acts = values("activation", CHOICE_DEFAULTS["activation"])
    opts = values("optimizer", CHOICE_DEFAULTS["optimizer"])
    inits = tuple(canonical_init(i) for i in values("init", CHOICE_DEFAULTS["init"]))
    scheds = values("schedule", CHOICE_DEFAULTS["schedule"])
    families = {OPTIMIZER_FAMILY[o] for o in opts}
    return Choices(
        activations=tuple(a for a in ACTIVATIONS if a in acts),
        optimizers=tuple(f for f in OPTIMIZER_FAMILIES if f in families),
        inits=tuple(i for i in INITS if i in inits),
        schedules=tuple(s for s in SCHEDULES if s in scheds),
    )
