"""Train a group of trials for a segment of epochs, as few compiled programs as pays off.

Configs that must differ in program shape (batch size, linear vs hidden) or that are
cheaper apart (normalisation) are split. Within such a partition, widths are padded to a bucket
(unit masks) and depths to a maximum (pass-through layers); activations, inits and
schedules are per-lane selectors over the choices of the whole search space, and every
optimizer is one rule with per-lane coefficients,
so the program does not change from one batch to the next. The remaining choice -
where to cut the partition into width/depth buckets - trades compile time against
padded compute: ``plan_groups`` picks the cuts that minimise (estimated compile seconds
of programs not yet built) + (estimated seconds of padded training).

Lane counts come from a small fixed set (powers of two up to the sweep's batch, times
the device count), so a program compiled for one batch serves every later batch,
compacted survivors of a rung included.

A segment starts every trial of the group at the same epoch (fresh trials at 0, or
paused ones with the state the last segment returned) and trains ``n_epochs``; the
outcome per trial is its curves over the segment and its state after it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Sequence

import jax
import numpy as np

from models import FoldStack, ProgramCache, Signature, TrialConfig
from models.hparams import (
    ACTIVATIONS, CHOICE_DEFAULTS, INITS, SCHEDULES, canonical_init, lane_hparams,
    signature_for,
)
from models.train import SEGMENT_EPOCHS, TrainState, blank_state, lane_state, resize_state

log = logging.getLogger(__name__)

LaneState = TrainState  # one trial's training state: host arrays, leading axis [F]


@dataclasses.dataclass(frozen=True)
class Choices:
    """The categorical choices a whole sweep can ask for (selector sets of every program)."""

    activations: tuple[str, ...]
    inits: tuple[str, ...]
    schedules: tuple[str, ...]


@dataclasses.dataclass
class SegmentOutcome:
    """One trial's segment. curves: name -> [F, n_epochs] per fold (train_loss,
    val_loss, val_<metric>); diverged_epoch [F]: absolute epoch, -1 if none; state: the
    trial's state after the segment (None when its program failed, with ``error``)."""

    config: TrialConfig
    curves: dict[str, np.ndarray]
    diverged_epoch: np.ndarray
    state: LaneState | None
    error: str | None = None


@dataclasses.dataclass
class ExecutorStats:
    programs_compiled: int = 0   # training programs built (compiled or loaded from cache)
    cache_hits: int = 0          # programs loaded from the persistent compilation cache
    compile_seconds: float = 0.0  # trace + lower + compile (or load) of those programs
    train_seconds: float = 0.0
    useful_flops: float = 0.0
    padded_flops: float = 0.0
    segments: int = 0            # program calls
    trial_epochs: int = 0        # epochs trained, summed over trials (not padding lanes)

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


def lane_buckets(batch: int, multiple: int) -> tuple[int, ...]:
    """The lane counts programs are compiled for: ``multiple`` x powers of two, up to
    the batch (rounded up to ``multiple``), and the batch itself."""
    top = -(-max(batch, 1) // multiple) * multiple
    sizes = {top}
    k = multiple
    while k < top:
        sizes.add(k)
        k *= 2
    return tuple(sorted(sizes))


class Executor:
    """Trains groups of configs on one FoldStack; remembers what it compiled.

    batch: the largest group the sweep trains at once (sets the lane-count buckets).
    """

    def __init__(self, folds: FoldStack, task: str, n_outputs: int, metric: str,
                 choices: Choices, seed: int = 0, *, programs: ProgramCache | None = None,
                 batch: int = 16, compile_estimate_s: float = 4.0,
                 load_estimate_s: float = 0.5, flops_per_s: float = 3e10):
        self.folds = folds
        self.programs = programs if programs is not None else ProgramCache()
        self.task = task
        self.n_outputs = n_outputs
        self.metric = metric
        self.choices = choices
        self.seed = seed
        self.stats = ExecutorStats()
        self.buckets = lane_buckets(batch, self.programs.lane_multiple())
        self._compiled: dict[Signature, set[int]] = {}  # signature -> lane counts built
        self._compile_estimate_s = compile_estimate_s
        self._load_estimate_s = load_estimate_s  # a program in the program store
        self._flops_per_s = flops_per_s
        self._n_train_real = float((np.asarray(folds.w_train) > 0).sum(axis=1).mean())
        # Told what starts before each program: "compiling program 1 of 2" (progress).
        self.on_phase: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ planning
    def signature(self, configs: Sequence[TrialConfig]) -> Signature:
        base = signature_for(list(configs), self.task, self.folds.n_features,
                             self.n_outputs, self.folds.n_train)
        return dataclasses.replace(
            base,
            activations=self.choices.activations,
            inits=self.choices.inits,
            schedules=self.choices.schedules,
            metrics=(self.metric,),
        )

    def _lane_seconds(self, sig: Signature, epochs: int) -> float:
        return lane_flops(sig.width, sig.depth, sig.n_features, sig.n_outputs,
                          self._n_train_real * self.folds.n_folds, epochs) / self._flops_per_s

    def _bucket(self, n: int) -> int:
        for size in self.buckets:
            if size >= n:
                return size
        multiple = self.programs.lane_multiple()
        return -(-n // multiple) * multiple  # more than a batch: exactly that many

    def _lanes_and_cost(self, sig: Signature, n: int, epochs: int) -> tuple[int, float]:
        """How many lanes to run ``n`` trials in, and the estimated seconds.

        A program already compiled for more lanes may serve (padding lanes cost compute);
        otherwise a program of the bucket of ``n`` lanes is built.
        """
        per_lane = self._lane_seconds(sig, epochs)
        n = self._bucket(n)
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

    def _cost(self, configs: Sequence[TrialConfig], epochs: int) -> float:
        return self._lanes_and_cost(self.signature(configs), len(configs), epochs)[1]

    def plan_groups(self, configs: Sequence[TrialConfig], epochs: int | None = None
                    ) -> list[list[int]]:
        """Indices of ``configs`` grouped into programs (see the module docstring);
        ``epochs`` is the segment length the cost is weighed for (default: the
        configs' own epochs)."""
        if epochs is None:
            epochs = max((c.epochs for c in configs), default=1)
        partitions: dict[tuple, list[int]] = {}
        for i, c in enumerate(configs):
            batch = "full" if c.optimizer == "gd" else min(c.batch_size, self.folds.n_train)
            # Normalisation could be a per-lane selector, but computing batch and layer
            # norm for every lane cost 19-39% on digits programs: a program per norm.
            partitions.setdefault((c.norm, batch, c.depth == 0), []).append(i)
        groups = []
        for idx in partitions.values():
            # Sort by size so that a contiguous cut is a width/depth bucket; then an
            # O(n^2) dynamic programme over the cut points.
            idx = sorted(idx, key=lambda i: (configs[i].width, configs[i].depth))
            n = len(idx)
            best = [0.0] + [math.inf] * n
            cut = [0] * (n + 1)
            for end in range(1, n + 1):
                for start in range(end):
                    cost = best[start] + self._cost([configs[i] for i in idx[start:end]],
                                                    epochs)
                    if cost < best[end]:
                        best[end], cut[end] = cost, start
            end = n
            while end > 0:
                groups.append(idx[cut[end]:end])
                end = cut[end]
        return groups

    # ------------------------------------------------------------------ running
    def train(self, configs: Sequence[TrialConfig], states: Sequence[LaneState | None],
              start_epoch: int, n_epochs: int,
              on_group: Callable[[list[int], list[SegmentOutcome]], None] | None = None
              ) -> list[SegmentOutcome]:
        """Train each config from ``start_epoch`` for ``n_epochs`` epochs, starting from
        its state (None: from its initialisation); one outcome per config, in order.

        An exception inside one program fails that program's trials with the reason;
        the other programs still run. ``on_group(indices, outcomes)`` is called after
        each program, so a caller can record its trials while the next one trains.
        """
        if not 0 < n_epochs <= SEGMENT_EPOCHS:
            raise ValueError(f"a segment trains 1..{SEGMENT_EPOCHS} epochs, got {n_epochs}")
        outcomes: list[SegmentOutcome | None] = [None] * len(configs)
        groups = self.plan_groups(configs, n_epochs)
        for k, group in enumerate(groups, 1):
            members = [configs[i] for i in group]
            if self.on_phase is not None:
                self.on_phase(f"{self._step(members, n_epochs)} program {k} of {len(groups)}")
            try:
                results = self._run_group(members, [states[i] for i in group],
                                          start_epoch, n_epochs)
            except Exception as exc:  # noqa: BLE001 - one bad program must not end the sweep
                log.exception("training program failed")
                reason = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:500]
                results = [SegmentOutcome(c, {}, np.full(self.folds.n_folds, -1), None, reason)
                           for c in members]
            for i, r in zip(group, results):
                outcomes[i] = r
            if on_group is not None:
                on_group(list(group), results)
        return outcomes  # type: ignore[return-value]

    def _step(self, members: Sequence[TrialConfig], n_epochs: int) -> str:
        """What running these members' program starts with: compiling, loading (from
        the program store) or training."""
        sig = self.signature(members)
        n_lanes, _ = self._lanes_and_cost(sig, len(members), n_epochs)
        if n_lanes in self._compiled.get(sig, ()):
            return "training"
        return "compiling" if self._needs_compile(sig, n_lanes) else "loading"

    def run(self, configs: Sequence[TrialConfig],
            on_group: Callable[[list[int], list[SegmentOutcome]], None] | None = None
            ) -> list[SegmentOutcome]:
        """Train every config from scratch to its own epochs (one segment when they fit
        in one, else back-to-back segments); curves cover every epoch trained."""
        total = max(c.epochs for c in configs)
        states: list[LaneState | None] = [None] * len(configs)
        parts: list[list[SegmentOutcome]] = []
        for start in range(0, total, SEGMENT_EPOCHS):
            n = min(SEGMENT_EPOCHS, total - start)
            last = start + n >= total
            seg = self.train(configs, states, start, n, on_group if last else None)
            states = [o.state for o in seg]
            parts.append(seg)
        if len(parts) == 1:
            return parts[0]
        return [dataclasses.replace(
            per[-1], curves={k: np.concatenate([o.curves[k] for o in per], axis=-1)
                             for k in per[-1].curves})
                for per in zip(*parts)]

    def _run_group(self, members: list[TrialConfig], states: list[LaneState | None],
                   start_epoch: int, n_epochs: int) -> list[SegmentOutcome]:
        sig = self.signature(members)
        n_lanes, _ = self._lanes_and_cost(sig, len(members), n_epochs)
        n_folds = self.folds.n_folds
        # Padding lanes repeat the first member (config and state); their results are
        # dropped.
        pad = n_lanes - len(members)
        lanes = members + [members[0]] * pad
        hp = lane_hparams(lanes, sig)
        fresh = np.array([s is None for s in states] + [states[0] is None] * pad)
        # Each lane's state in this program's layout (its bucket may differ from the
        # last segment's); fresh lanes read zeros and are initialised in the program.
        blank = tuple(b[0] for b in blank_state(sig, 1, n_folds))
        flat = [blank if s is None else resize_state(s, sig) for s in states]
        flat += [flat[0]] * pad
        leaves = [np.stack([lane[k] for lane in flat]) for k in range(len(blank))]
        fresh_compile = self._needs_compile(sig, n_lanes)

        before = dataclasses.replace(self.programs.stats)
        start = time.perf_counter()
        seg = self.programs.run_segment(sig, hp, self.folds, self.seed, leaves, fresh,
                                        start_epoch, n_epochs)
        curves = jax.device_get((seg.train_loss, seg.val_loss, seg.val_metrics))
        state = jax.device_get(seg.state)
        after = self.programs.stats
        compile_s = after.compile_seconds - before.compile_seconds
        elapsed = time.perf_counter() - start - compile_s
        self.stats.compile_seconds += compile_s
        self.stats.programs_compiled += after.programs - before.programs
        self.stats.cache_hits += after.cache_hits - before.cache_hits
        if fresh_compile and compile_s > 0.05:  # learn what a compile costs here
            self._compile_estimate_s = 0.5 * self._compile_estimate_s + 0.5 * compile_s
        self._compiled.setdefault(sig, set()).add(n_lanes)
        self.stats.train_seconds += elapsed
        self.stats.segments += 1
        self.stats.trial_epochs += len(members) * n_epochs

        rows = self._n_train_real * n_folds
        padded = n_lanes * lane_flops(sig.width, sig.depth, sig.n_features, sig.n_outputs,
                                      rows, n_epochs)
        useful = sum(lane_flops(c.width, c.depth, sig.n_features, sig.n_outputs, rows,
                                n_epochs) for c in members)
        self.stats.padded_flops += padded
        self.stats.useful_flops += useful
        if elapsed > 0:  # learn the achieved speed for the next plan
            self._flops_per_s = 0.5 * self._flops_per_s + 0.5 * padded / elapsed

        train_loss, val_loss, metrics = curves
        diverged = state[-1]  # TrainState.diverged_at, the last leaf: [P, F]
        out = []
        for lane, c in enumerate(members):
            lane_curves = {"train_loss": train_loss[lane, :, :n_epochs],
                           "val_loss": val_loss[lane, :, :n_epochs]}
            for name, values in metrics.items():
                lane_curves[f"val_{name}"] = values[lane, :, :n_epochs]
            out.append(SegmentOutcome(c, lane_curves, np.asarray(diverged[lane]),
                                      lane_state(sig, state, lane)))
        return out


def choices_for_space(categorical: dict[str, Sequence[str]], fixed: dict) -> Choices:
    """Selector sets from the categorical values a sweep can produce."""
    def values(name: str, default: str) -> tuple[str, ...]:
        if name in categorical:
            return tuple(dict.fromkeys(categorical[name]))
        return (fixed.get(name, default),)

    acts = values("activation", CHOICE_DEFAULTS["activation"])
    inits = tuple(canonical_init(i) for i in values("init", CHOICE_DEFAULTS["init"]))
    scheds = values("schedule", CHOICE_DEFAULTS["schedule"])
    return Choices(
        activations=tuple(a for a in ACTIVATIONS if a in acts),
        inits=tuple(i for i in INITS if i in inits),
        schedules=tuple(s for s in SCHEDULES if s in scheds),
    )
