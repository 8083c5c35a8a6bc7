"""The process that runs a sqlite study (one process per sqlite study): who it is, and
whether it is gone."""

from __future__ import annotations

import os
import socket


def this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_is_dead(owner: dict | None) -> bool:
    """The process recorded as running a sqlite study is gone (same host, no such pid).
    A pid reused since, or another host, reads as alive: the caller then waits for the
    heartbeats to go stale."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        return False
    return int(owner["pid"]) == os.getpid()  # this process: a new run in the same one
