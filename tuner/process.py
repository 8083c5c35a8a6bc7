"""Start-up and exit of the ``tuner`` command's own process (never used by the API).

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
import gc
import os
import sys
import threading


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
