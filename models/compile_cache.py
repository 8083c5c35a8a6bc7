"""Persistent compilation cache and compile accounting.

``enable_persistent_cache`` makes a second process load compiled training programs
from disk instead of compiling them again. JAX skips programs that compile in under a
second unless the minimum compile time is 0, so it is set to 0 here.

``COMPILE_STATS`` counts, process-wide, XLA compilations, their seconds and the
persistent-cache hits, from JAX's own monitoring events.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import jax
from jax import monitoring

from models import program_store

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"


@dataclasses.dataclass
class CompileStats:
    compiles: int = 0           # backend compilations (cache hits included: they pass here too)
    compile_seconds: float = 0.0  # tracing + lowering + backend compile/cache load
    cache_hits: int = 0
    cache_misses: int = 0

    def snapshot(self) -> "CompileStats":
        return dataclasses.replace(self)


COMPILE_STATS = CompileStats()
_lock = threading.Lock()
_installed = False


def _on_duration(event: str, seconds: float, **_: object) -> None:
    with _lock:
        if event == _BACKEND_COMPILE:
            COMPILE_STATS.compiles += 1
            COMPILE_STATS.compile_seconds += seconds
        elif event in (_TRACE, _LOWER):
            COMPILE_STATS.compile_seconds += seconds


def _on_event(event: str, **_: object) -> None:
    with _lock:
        if event == _CACHE_HIT:
            COMPILE_STATS.cache_hits += 1
        elif event == _CACHE_MISS:
            COMPILE_STATS.cache_misses += 1


def install_listeners() -> None:
    """Start counting (idempotent)."""
    global _installed
    if not _installed:
        monitoring.register_event_duration_secs_listener(_on_duration)
        monitoring.register_event_listener(_on_event)
        _installed = True


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "tuner", "jax")


def enable_persistent_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache at ``path`` (created if missing), and
    keep exported training programs under ``path/programs`` (see program_store)."""
    path = os.path.abspath(path or default_cache_dir())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    program_store.set_directory(os.path.join(path, "programs"))
    install_listeners()
    return path


install_listeners()


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
