"""Training programs kept on disk as ``jax.export`` artifacts.

JAX's persistent compilation cache saves the XLA compile, but to find a program in it
a process must first trace and lower the program again: about 2 s for a training
program on a 2-core CPU, several times the cost of loading the compiled executable.
With a directory set (``set_directory``; ``compile_cache.enable_persistent_cache`` sets
``<cache>/programs``), each program is exported once, serialized, and later processes
deserialize it in milliseconds and call it; the XLA compile of that call is the one the
persistent cache holds, so a warm process neither traces, lowers nor compiles.

A program's file name is a hash of everything that shapes it: the caller's key (the
Signature, argument shapes and dtypes, device count), the JAX version, the backend and
the source of ``models/``, so an edited model never runs a stale program. Writes are
atomic (temporary file, then rename), so concurrent workers at worst export the same
program twice. An unreadable file is exported again and replaced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import jax
from jax import export

log = logging.getLogger(__name__)

_directory: str | None = None
_lock = threading.Lock()


@dataclasses.dataclass
class StoreStats:
    exported: int = 0   # programs traced, exported and written this process
    loaded: int = 0     # programs read back from disk (no trace, no lowering)


STATS = StoreStats()


def set_directory(path: str | os.PathLike | None) -> None:
    """Keep exported programs under ``path`` (created on first write); None turns it off."""
    global _directory
    _directory = os.path.abspath(path) if path is not None else None


def directory() -> str | None:
    return _directory


@functools.cache
def _models_source_digest() -> str:
    """Hash of the models/ package source: an edited model invalidates stored programs."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def program_digest(key: str) -> str:
    """File stem of the program ``key`` on this JAX version, backend and models/ source."""
    h = hashlib.sha256()
    for part in (key, jax.__version__, jax.default_backend(), _models_source_digest()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:40]


def _path(key: str) -> Path:
    assert _directory is not None
    return Path(_directory) / f"{program_digest(key)}.jaxexport"


def is_stored(key: str) -> bool:
    """Whether a process would load this program instead of tracing it."""
    return _directory is not None and _path(key).is_file()


def load_or_export(key: str, jitted: Callable, args: tuple[Any, ...],
                   compiler_options: dict[str, Any] | None = None) -> Callable:
    """A callable running ``jitted`` on arguments shaped like ``args``.

    Read from the store when it is there; otherwise exported from ``jitted`` (which
    must carry its input shardings), written to the store, and returned. Either way the
    caller runs the exported program, so a program is compiled once, not twice, with
    ``compiler_options``.
    """
    path = _path(key)
    try:
        exported = export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
        exported = None
    except Exception as exc:  # noqa: BLE001 - a damaged file is rebuilt, not fatal
        log.warning("stored program %s is unreadable (%s); exporting it again", path.name, exc)
        exported = None
    if exported is not None:
        with _lock:
            STATS.loaded += 1
        return jax.jit(exported.call, compiler_options=compiler_options)
    exported = export.export(jitted, platforms=[jax.default_backend()])(*args)
    _write_atomic(path, exported.serialize())
    with _lock:
        STATS.exported += 1
    return jax.jit(exported.call, compiler_options=compiler_options)


def _write_atomic(path: Path, blob: bytes | bytearray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jaxexport")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full disk only costs the next process time
        log.warning("could not store program %s: %s", path.name, exc)
