"""Compiled training programs: built once per shape, optionally kept on disk.

A ``ProgramCache`` is the process-level state of training that used to be module
globals: which programs it has built, the program store on disk (if any), the devices
the trial axis is split over, and what building cost (compiles, seconds, cache hits).
The executor holds one per sweep, so two sweeps in one process count apart.

``ProgramCache.run_segment(sig, hp, folds, seed, state, fresh, start, n)`` compiles once
per ``sig`` and shapes (P, F, rows) and trains a segment of epochs from a state;
``ProgramCache.fit`` trains from scratch to the end. Call them with the same P to reuse
the program (the executor pads the trial axis).
With several local devices (GPUs, TPU cores, or CPU devices from ``jax_num_cpu_devices``)
and P a multiple of their count, the trial axis is split across them (``shard_map``:
each device trains its own lanes, with no communication) and the folds are replicated;
results are the same as on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax import export
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.compile_cache import CompileStats, counting_compiles
from models.folds import FoldStack
from models.hparams import LaneHparams, Signature
from models.program_store import ProgramStore
from models.train import (
    SEGMENT_EPOCHS, FitResult, SegmentResult, blank_state, fit_segment, state_layout,
)

# Exported programs name their argument and result types; register them once.
for _cls in (LaneHparams, FoldStack, SegmentResult):
    export.register_namedtuple_serialization(_cls, serialized_name=f"models.{_cls.__name__}")


def compiler_options() -> dict[str, str]:
    """XLA options of the training programs. On CPU, LLVM at optimisation level 1
    compiles a training program about a quarter faster than the default level 2 with
    the same run time (the matrix products are library calls; what LLVM compiles is
    simple elementwise loops). Other backends keep their defaults."""
    return {"xla_backend_optimization_level": "1"} if jax.default_backend() == "cpu" else {}


@functools.cache
def _jitted_program() -> Callable:
    # Module level and shared: JAX's own in-memory cache holds the executables, keyed on
    # the static (sig, mesh); a ProgramCache only accounts for the ones it asked for.
    return jax.jit(fit_segment, static_argnames=("sig", "mesh"),
                   compiler_options=compiler_options())


@dataclasses.dataclass
class ProgramStats(CompileStats):
    programs: int = 0   # distinct training programs built (traced, or loaded from the store)
    exported: int = 0   # programs traced, exported and written to the store
    loaded: int = 0     # programs read back from the store (no trace, no lowering)


def program_key(sig: Signature, n_trials: int, folds: FoldStack, n_devices: int) -> str:
    """Everything besides models/ itself that shapes a training program."""
    shapes = tuple((tuple(np.shape(a)), str(jax.dtypes.canonicalize_dtype(a.dtype)))
                   for a in folds)
    return repr((sig, n_trials, shapes, n_devices, bool(jax.config.jax_enable_x64)))


def available_bytes(device: jax.Device) -> int | None:
    """Memory a device can still take: an accelerator's own count, a CPU device's the
    machine's available physical memory (None when neither is known)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def data_bytes(n_rows: int, n_features: int, n_targets: int, n_folds: int) -> int:
    """Bytes a FoldStack of this size holds: the table once, two row indices and
    weights per fold and row, the per-fold transforms."""
    return 4 * (n_rows * (n_features + n_targets) + 2 * n_folds * n_rows
                + 3 * n_folds * n_features + 2 * n_folds * n_targets)


class ProgramCache:
    """Training programs of one sweep: built once, counted, optionally stored on disk.

    store: where exported programs are kept between processes (None: trace in-process).
    devices: the local devices the trial axis is split over (default: all of them).
    """

    def __init__(self, store: ProgramStore | None = None,
                 devices: Sequence[jax.Device] | None = None) -> None:
        self.store = store
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.stats = ProgramStats()
        self._built: dict[str, Callable] = {}  # program key -> callable
        self._folds: dict[tuple, tuple] = {}   # the folds already on the devices

    def __repr__(self) -> str:
        return (f"ProgramCache(store={self.store!r}, devices={len(self.devices)}, "
                f"programs={len(self._built)})")

    # ------------------------------------------------------------------ shapes
    def lane_multiple(self) -> int:
        """Trial-axis sizes should be multiples of this to use every device."""
        return len(self.devices)

    def _mesh(self, n_trials: int) -> Mesh | None:
        if len(self.devices) > 1 and n_trials % len(self.devices) == 0:
            return Mesh(np.asarray(self.devices), ("lanes",))
        return None

    def key(self, sig: Signature, n_trials: int, folds: FoldStack) -> str:
        mesh = self._mesh(n_trials)
        return program_key(sig, n_trials, folds, 1 if mesh is None else mesh.devices.size)

    def is_built(self, sig: Signature, n_trials: int, folds: FoldStack) -> bool:
        """Built by this cache already: running it costs no compile or load."""
        return self.key(sig, n_trials, folds) in self._built

    def is_stored(self, sig: Signature, n_trials: int, folds: FoldStack) -> bool:
        """In the program store: building it costs a load, not a trace and compile."""
        return self.store is not None and self.store.has(self.key(sig, n_trials, folds))

    # ------------------------------------------------------------------ running
    def run_segment(self, sig: Signature, hp: LaneHparams, folds: FoldStack, seed: int,
                    state: Sequence, fresh, start_epoch: int, n_epochs: int) -> SegmentResult:
        """Train the lanes of ``hp`` (arrays [P]) for ``n_epochs`` (<= SEGMENT_EPOCHS)
        epochs from ``start_epoch`` (see ``models.train.fit_segment``); device arrays."""
        if not 0 <= n_epochs <= SEGMENT_EPOCHS:
            raise ValueError(f"a segment trains 0..{SEGMENT_EPOCHS} epochs, got {n_epochs}")
        n_trials = int(np.shape(hp.learning_rate)[0])
        mesh = self._mesh(n_trials)
        # numpy in, one device_put: jnp.asarray would compile a small program per shape.
        args = (LaneHparams(*(np.asarray(v) for v in hp)), None,
                np.asarray(seed, np.uint32),
                tuple(np.asarray(v) for v in state),
                np.asarray(fresh, bool),
                np.asarray(start_epoch, np.int32), np.asarray(n_epochs, np.int32))
        args = jax.device_put(args, None if mesh is None else self._shardings(mesh))
        args = (args[0], self._resident(folds, mesh), *args[2:])
        key = program_key(sig, n_trials, folds, 1 if mesh is None else mesh.devices.size)
        with counting_compiles(self.stats):
            program = self._built.get(key)
            if program is None:
                program = self._build(key, sig, mesh, args)
                self._built[key] = program
                self.stats.programs += 1
            return program(*args)

    def fit(self, sig: Signature, hp: LaneHparams, folds: FoldStack, seed: int = 0,
            until: int | None = None) -> FitResult:
        """Train every lane from scratch to its own ``epochs`` (host arrays): segments of
        one program, run back to back. ``until`` stops every lane after that many epochs
        (an early-stopped trial's refit: its schedule still spans its ``epochs``)."""
        n_trials, n_folds = int(np.shape(hp.learning_rate)[0]), folds.n_folds
        total = int(np.max(hp.epochs)) if until is None else int(until)
        state = blank_state(sig, n_trials, n_folds)
        fresh = np.ones(n_trials, bool)
        parts = []
        for start in range(0, total, SEGMENT_EPOCHS):
            n = min(SEGMENT_EPOCHS, total - start)
            seg = self.run_segment(sig, hp, folds, seed, state, fresh, start, n)
            state, fresh = seg.state, np.zeros(n_trials, bool)
            parts.append(jax.device_get((seg.train_loss[..., :n], seg.val_loss[..., :n],
                                         {k: v[..., :n] for k, v in seg.val_metrics.items()})))
        train_loss = np.concatenate([p[0] for p in parts], axis=-1)
        val_loss = np.concatenate([p[1] for p in parts], axis=-1)
        metrics = {k: np.concatenate([p[2][k] for p in parts], axis=-1) for k in parts[0][2]}
        treedef, _ = state_layout(sig)
        final = jax.tree_util.tree_unflatten(treedef, list(jax.device_get(state)))
        return FitResult(train_loss, val_loss, metrics, np.asarray(final.diverged_at),
                         final.params, final.norm_state)

    def _resident(self, folds: FoldStack, mesh: Mesh | None) -> FoldStack:
        """The folds on the device(s), put there once per layout (not per segment)."""
        key = (id(folds), mesh is not None)
        placed = self._folds.get(key)
        if placed is None or placed[0] is not folds:
            sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec())
            placed = (folds, jax.device_put(FoldStack(*(np.asarray(v) for v in folds)),
                                            sharding))
            self._folds[key] = placed
        return placed[1]

    @staticmethod
    def _shardings(mesh: Mesh) -> tuple:
        lanes, every = NamedSharding(mesh, PartitionSpec("lanes")), NamedSharding(mesh, PartitionSpec())
        return (lanes, every, every, lanes, lanes, every, every)

    def _build(self, key: str, sig: Signature, mesh: Mesh | None, args: tuple) -> Callable:
        if self.store is None:
            jitted = _jitted_program()
            return lambda *a: jitted(sig, *a, mesh=mesh)
        exported = self.store.load(key)
        if exported is not None:
            self.stats.loaded += 1
        else:
            shardings = None if mesh is None else self._shardings(mesh)
            jitted = jax.jit(lambda *a: fit_segment(sig, *a, mesh=mesh), in_shardings=shardings)
            exported = self.store.export_and_save(key, jitted, args)
            self.stats.exported += 1
        # Either way the exported program runs, so it is compiled once, not twice.
        return jax.jit(exported.call, compiler_options=compiler_options())
