"""A server the CLI starts (the MLflow UI), and everything it starts in turn, stopped as one.

``mlflow ui`` starts uvicorn and its workers, a job runner and huey consumers: a dozen
processes that hold the port. A signal that ends ``tuner ui`` reaches none of them, so
they outlived it. Here the server runs in a process group of its own, and a stop signal
(SIGINT, SIGTERM, SIGHUP) stops that whole group: SIGTERM, a grace period
(``TUNER_UI_GRACE_S``, default 10 s; a second stop signal cuts it short), SIGKILL for
whatever is left, and a wait until none of it runs. The group gets SIGTERM whichever
signal came: it is the one every part of the server takes as "stop" (a huey consumer
takes SIGHUP as "restart").

The exit code is the shell's for a process ended by the signal (128 + its number: 130
SIGINT, 143 SIGTERM, 129 SIGHUP), or the server's own when it exits by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
GRACE_S = 10.0
KILL_WAIT_S = 5.0  # after SIGKILL: the kernel ends them at once, unless stuck in I/O
POLL_S = 0.1


def serve(cmd: list[str], grace_s: float | None = None) -> int:
    """Run ``cmd`` in a new session (so a new process group) until it exits or a stop
    signal arrives; then stop its whole group. Returns the exit code (module doc)."""
    if grace_s is None:
        grace_s = float(os.environ.get("TUNER_UI_GRACE_S", GRACE_S))
    received: list[int] = []
    previous = _catch(received)
    try:
        # Handled signals return to their defaults in the child at exec; ignored ones
        # stay ignored, as they should for a server started under nohup.
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL)
        while not received and proc.poll() is None:
            time.sleep(POLL_S)  # a signal sets `received`; sleep resumes, the loop sees it
        # Stop the group either way: a server that exits by itself can leave its
        # workers running.
        stop_group(proc, grace_s, received)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code  # -N: the server was ended by signal N


def stop_group(proc: subprocess.Popen, grace_s: float, received: list[int]) -> None:
    """SIGTERM to the group led by ``proc``, SIGKILL to what still runs after ``grace_s``
    (or at a further stop signal), then wait until nothing of it runs."""
    group = proc.pid  # a new session's leader: its pid is the group id
    _signal_group(group, signal.SIGTERM)
    signals_seen = len(received)
    deadline = time.monotonic() + grace_s
    while _group_running(proc):
        if time.monotonic() >= deadline or len(received) > signals_seen:
            _signal_group(group, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT_S
            while _group_running(proc) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            return
        time.sleep(POLL_S)


def _catch(received: list[int]) -> dict:
    """Record stop signals in ``received``; returns the handlers to restore. A signal
    ignored now (nohup's SIGHUP, a background job's SIGINT) stays ignored."""

    def on_signal(signum, frame):  # noqa: ARG001
        received.append(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, on_signal)
    return previous


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:  # nothing of it left
        pass


def _group_running(proc: subprocess.Popen) -> bool:
    """Whether a process of ``proc``'s group still runs. ``proc`` is collected as it
    exits; a zombie of the group counts as ended (it holds no port, no memory, only an
    exit status that its parent, or init, collects)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member this user may not signal: it still runs
        return True
    return _runs_in_group(proc.pid)


def _runs_in_group(group: int) -> bool:
    """Linux: whether /proc shows a process of ``group`` that is not a zombie. Elsewhere
    (no /proc) True, as ``killpg(group, 0)`` found one."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False
