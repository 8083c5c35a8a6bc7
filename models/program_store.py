"""Training programs kept on disk as ``jax.export`` artifacts.

JAX's persistent compilation cache saves the XLA compile, but to find a program in it
a process must first trace and lower the program again: about 2 s for a training
program on a 2-core CPU, several times the cost of loading the compiled executable.
A ``ProgramStore`` keeps each program exported and serialized under one directory;
later processes deserialize it in milliseconds and call it, and the XLA compile of
that call is the one the persistent cache holds, so a warm process neither traces,
lowers nor compiles.

A program's file name is a hash of everything that shapes it: the caller's key (the
Signature, argument shapes and dtypes, device count), the JAX version, the backend and
the source of ``models/``, so an edited model never runs a stale program. Writes are
atomic (temporary file, then rename), so concurrent workers at worst export the same
program twice. An unreadable file is exported again and replaced.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
from jax import export

log = logging.getLogger(__name__)


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


class ProgramStore:
    """Exported programs under ``directory`` (created on the first write)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(os.path.abspath(directory))

    def __repr__(self) -> str:
        return f"ProgramStore({str(self.directory)!r})"

    def path(self, key: str) -> Path:
        return self.directory / f"{program_digest(key)}.jaxexport"

    def has(self, key: str) -> bool:
        """Whether a process would load this program instead of tracing it."""
        return self.path(key).is_file()

    def load(self, key: str) -> export.Exported | None:
        """The stored program, or None (absent, or unreadable: it will be rebuilt)."""
        path = self.path(key)
        try:
            return export.deserialize(bytearray(path.read_bytes()))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged file is rebuilt, not fatal
            log.warning("stored program %s is unreadable (%s); exporting it again",
                        path.name, exc)
            return None

    def export_and_save(self, key: str, jitted: Callable, args: tuple[Any, ...]
                        ) -> export.Exported:
        """Export ``jitted`` (which carries its input shardings) for ``args``; save it."""
        exported = export.export(jitted, platforms=[jax.default_backend()])(*args)
        self._write_atomic(self.path(key), exported.serialize())
        return exported

    @staticmethod
    def _write_atomic(path: Path, blob: bytes | bytearray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jaxexport")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only or full disk only costs the next process time
            log.warning("could not store program %s: %s", path.name, exc)
