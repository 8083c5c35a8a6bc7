"""The ``tuner`` process: start-up and exit, stop signals, and crash hooks.

(Start-up and exit tricks are the console script's alone, never the API's; stop signals
and ``uninterruptible`` storage writes serve every front.)

A sweep process imports JAX, MLflow, Optuna, scikit-learn and matplotlib: hundreds of
thousands of long-lived objects. Two costs of CPython's defaults follow, measured on a
2-core machine (see docs/decisions.md):

- the cyclic garbage collector runs over and over while those modules import (about
  0.5 s of 3 s of imports); ``pause_gc`` turns it off until ``resume_gc``, which first
  freezes what was imported so that later collections skip it;
- interpreter teardown then destroys every one of those objects, module by module (about
  1 s), after all the work is done and saved. ``exit_now`` does what a normal exit does
  that matters (waits for non-daemon threads, runs the atexit handlers, flushes the
  standard streams) and ends the process without that teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator


_paused = False


def pause_gc() -> None:
    global _paused
    _paused = True
    gc.disable()


def resume_gc() -> None:
    """After ``pause_gc``: move everything alive now (the imported libraries) out of the
    collector's sight, then turn it back on for the objects the sweep itself creates.
    A no-op otherwise (a process that never paused it keeps its own settings)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def exit_code(exc: SystemExit) -> int:
    """The status ``sys.exit(code)`` would give (a message is printed, as Python does)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> None:
    """End the process with ``code`` after a normal exit's observable steps, skipping
    only the teardown of the interpreter's objects."""
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: exit the ordinary way
        sys.exit(code)
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to write
            pass
    os._exit(code)


# --------------------------------------------------------------------------- signals
# SIGINT (Ctrl-C), SIGTERM (Kubernetes, Slurm, docker stop, systemd) and SIGHUP (a
# closed terminal) all stop a sweep the same way: the first lets the work in flight
# finish and leaves nothing RUNNING; a second stops at once. Exit code: 128 + signal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_lock = threading.Lock()
_depth = 0                  # storage writes in progress on the main thread
_pending: int | None = None  # a second signal that arrived inside one


class Interrupted(KeyboardInterrupt):
    """A stop signal that ends the work at once (the second one, or an API caller's)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """A storage write (an Optuna commit, an MLflow run update): a second stop signal
    that arrives inside it is raised when it ends, never in the middle (a
    KeyboardInterrupt inside a SQLAlchemy commit left sqlite locked, or exit 1)."""
    global _depth, _pending
    main = threading.current_thread() is threading.main_thread()
    if main:
        with _lock:
            _depth += 1
    try:
        yield
    finally:
        if main:
            with _lock:
                _depth -= 1
                signum = _pending if _depth == 0 else None
                if signum is not None:
                    _pending = None
            if signum is not None:
                raise Interrupted(signum)


def uninterrupted(fn):
    """``uninterruptible()`` around a function (storage writers)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with uninterruptible():
            return fn(*args, **kwargs)
    return wrapper


class StopSignals:
    """Within the block, the first stop signal sets ``stop`` (and ``signum``) and says
    so on ``announce``; a second raises ``Interrupted`` at once (after the storage write
    in progress, if any). Installed only on the main thread, and never over a handler
    someone else set (SIGINT ignored, as in a background job, stays ignored)."""

    def __init__(self, announce=None) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._announce = announce
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.default_int_handler, signal.SIG_DFL):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002
        global _pending
        if not self.stop.is_set():
            self.signum = signum
            self.stop.set()
            if self._announce is not None:
                self._announce(signum)
            return
        with _lock:
            if _depth > 0:
                _pending = signum
                return
        raise Interrupted(signum)

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum


# --------------------------------------------------------------------------- fault hooks
# TUNER_KILL_AT="point:n" SIGKILLs this process the n-th time it reaches ``point`` (the
# fault-injection test's hooks; unset, they cost a dictionary lookup).
_KILL_AT = os.environ.get("TUNER_KILL_AT", "")
_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    """A moment a crash can happen at: ask, runs, train, log, tell, finish, refit, model."""
    if not _KILL_AT:
        return
    point, _, count = _KILL_AT.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
