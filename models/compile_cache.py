"""JAX's persistent compilation cache, compile accounting, and CPU cores as devices.

``enable_persistent_cache`` makes a second process load compiled training programs
from disk instead of compiling them again. JAX skips programs that compile in under a
second unless the minimum compile time is 0, so it is set to 0 here.

``counting_compiles(stats)`` adds the XLA compilations, their seconds and the
persistent-cache hits that happen on the calling thread inside the block to ``stats``
(from JAX's own monitoring events), so two sweeps in one process keep their own counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator

import jax
from jax import monitoring

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"


@dataclasses.dataclass
class CompileStats:
    compiles: int = 0             # backend compilations (cache hits pass here too)
    compile_seconds: float = 0.0  # tracing + lowering + backend compile/cache load
    cache_hits: int = 0
    cache_misses: int = 0

    def snapshot(self) -> "CompileStats":
        return dataclasses.replace(self)


_collectors = threading.local()  # per thread: the stats objects counting right now
_install_lock = threading.Lock()
_installed = False


def _active() -> list[CompileStats]:
    return getattr(_collectors, "stack", [])


def _on_duration(event: str, seconds: float, **_: object) -> None:
    for stats in _active():
        if event == _BACKEND_COMPILE:
            stats.compiles += 1
            stats.compile_seconds += seconds
        elif event in (_TRACE, _LOWER):
            stats.compile_seconds += seconds


def _on_event(event: str, **_: object) -> None:
    for stats in _active():
        if event == _CACHE_HIT:
            stats.cache_hits += 1
        elif event == _CACHE_MISS:
            stats.cache_misses += 1


def _install_listeners() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            monitoring.register_event_duration_secs_listener(_on_duration)
            monitoring.register_event_listener(_on_event)
            _installed = True


@contextlib.contextmanager
def counting_compiles(stats: CompileStats) -> Iterator[CompileStats]:
    """Count into ``stats`` what JAX compiles on this thread inside the block."""
    _install_listeners()
    stack = _active()
    _collectors.stack = [*stack, stats]
    try:
        yield stats
    finally:
        _collectors.stack = stack


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "tuner", "jax")


def enable_persistent_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache at ``path`` (created if missing);
    returns the absolute path (``<path>/programs`` is the place for a ProgramStore)."""
    path = os.path.abspath(path or default_cache_dir())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def use_cpu_cores_as_devices(n: int | None = None) -> int:
    """Expose the CPU as ``n`` JAX devices (default: the cores this process may use).

    The trial axis is sharded over local devices; on a CPU machine separate devices run
    their shards in parallel threads, which keeps every core busy through the many
    small elementwise ops of a training step (matmuls alone would multithread anyway).
    Must run before JAX initialises its backends; only the CPU backend is affected, so a
    GPU or TPU machine still shards over its accelerators. Returns the count set, or 0
    when the backends were already up.
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, min(int(n or 1), 64))
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # backends already initialised: keep what is there
        return 0
    return n
