"""Compiled training programs: built once per shape, optionally kept on disk.

A ``ProgramCache`` is the process-level state of training that used to be module
globals: which programs it has built, the program store on disk (if any), the devices
the trial axis is split over, and what building cost (compiles, seconds, cache hits).
The executor holds one per sweep, so two sweeps in one process count apart.

``ProgramCache.fit(sig, hp, folds, seed)`` compiles once per ``sig`` and shapes (P, F,
rows); call it with the same P to reuse the program (the executor pads the trial axis).
With several local devices (GPUs, TPU cores, or CPU devices from ``jax_num_cpu_devices``)
and P a multiple of their count, the trial axis is split across them (``shard_map``:
each device trains its own lanes, with no communication) and the folds are replicated;
results are the same as on one device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.compile_cache import CompileStats, counting_compiles
from models.folds import FoldStack
from models.hparams import LaneHparams, Signature
from models.program_store import ProgramStore
from models.train import FitResult, fit_program

# Exported programs name their argument and result types; register them once.
for _cls in (LaneHparams, FoldStack, FitResult):
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
    return jax.jit(fit_program, static_argnames=("sig", "mesh"),
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
    def fit(self, sig: Signature, hp: LaneHparams, folds: FoldStack, seed: int = 0
            ) -> FitResult:
        """Train every trial of ``hp`` (arrays [P]) on every fold of ``folds``."""
        n_trials = int(np.shape(hp.learning_rate)[0])
        mesh = self._mesh(n_trials)
        if mesh is not None:
            hp = jax.device_put(LaneHparams(*(jnp.asarray(v) for v in hp)),
                                NamedSharding(mesh, PartitionSpec("lanes")))
            folds = jax.device_put(FoldStack(*(jnp.asarray(v) for v in folds)),
                                   NamedSharding(mesh, PartitionSpec()))
        else:
            hp = LaneHparams(*(jnp.asarray(v) for v in hp))
            folds = FoldStack(*(jnp.asarray(v) for v in folds))
        seed = jnp.asarray(seed, jnp.uint32)
        key = program_key(sig, n_trials, folds, 1 if mesh is None else mesh.devices.size)
        with counting_compiles(self.stats):
            program = self._built.get(key)
            if program is None:
                program = self._build(key, sig, mesh, (hp, folds, seed))
                self._built[key] = program
                self.stats.programs += 1
            return program(hp, folds, seed)

    def _build(self, key: str, sig: Signature, mesh: Mesh | None, args: tuple) -> Callable:
        if self.store is None:
            jitted = _jitted_program()
            return lambda h, f, s: jitted(sig, h, f, s, mesh)
        exported = self.store.load(key)
        if exported is not None:
            self.stats.loaded += 1
        else:
            shardings = None
            if mesh is not None:
                shardings = (NamedSharding(mesh, PartitionSpec("lanes")),
                             NamedSharding(mesh, PartitionSpec()),
                             NamedSharding(mesh, PartitionSpec()))
            jitted = jax.jit(lambda h, f, s: fit_program(sig, h, f, s, mesh),
                             in_shardings=shardings)
            exported = self.store.export_and_save(key, jitted, args)
            self.stats.exported += 1
        # Either way the exported program runs, so it is compiled once, not twice.
        return jax.jit(exported.call, compiler_options=compiler_options())
