"""``tuner ui``: a stop signal stops the MLflow server and every process it started.

``tuner ui`` runs as a real process in a temporary folder. While it serves, every
descendant is recorded (from /proc: parent chains, and the server's process group);
after the signal, the test checks the exit code (130 SIGINT, 143 SIGTERM, 129 SIGHUP),
that none of those processes runs and that the port is free.

MLflow's own server (uvicorn workers, job runner, huey consumers: ~15 processes) takes
20-40 s to answer on two busy cores, so it runs once, for SIGTERM, the signal of the
report (``TUNER_TEST_UI_SIGNALS=all`` runs it for SIGINT and SIGHUP too). Every signal,
the SIGKILL escalation and a server that exits by itself also run against a stand-in
``mlflow`` package put first on PYTHONPATH: a small HTTP server with children and a
grandchild, started by the very same ``tuner ui`` code in a second or two.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import e2e

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the process tree from /proc")

EXPECTED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
ALL_SIGNALS = os.environ.get("TUNER_TEST_UI_SIGNALS") == "all"

# A stand-in for ``python -m mlflow ui ... --port P``: answers /health on P, starts two
# children (one with a grandchild) and, by FAKE_MLFLOW, ignores SIGTERM in a child
# ("stubborn": only SIGKILL ends it) or exits with 3 after its first /health ("exit").
FAKE_MLFLOW = textwrap.dedent('''
    import http.server, os, signal, subprocess, sys, threading, time

    mode = os.environ.get("FAKE_MLFLOW", "")
    port = int(sys.argv[sys.argv.index("--port") + 1])
    sleeper = "import time; print('ready', flush=True); time.sleep(600)"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \\
               "print('ready', flush=True); time.sleep(600)"
    parent = f"import subprocess; p = subprocess.Popen([{sys.executable!r}, '-c', " \\
             f"{sleeper!r}]); p.wait()"
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
                for code in (parent, stubborn if mode == "stubborn" else sleeper)]
    for child in children:  # the grandchild runs, SIGTERM is ignored: then /health answers
        child.stdout.readline()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            if mode == "exit":
                threading.Timer(0.3, os._exit, (3,)).start()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
''')


# --------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])


def _all_processes() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            out[int(name)] = st
    return out


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below ``root`` (by parent chains), and of
    every process in the process groups of those (a process whose parent exited is
    no longer on a chain, but stays in its group)."""
    procs = _all_processes()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (_, ppid, _, start) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    groups = {procs[pid][2] for pid in found if pid in procs}
    found.update({pid: st[3] for pid, st in procs.items() if st[2] in groups and pid != root})
    return found


def _running(pid: int, start: int) -> bool:
    """Whether that process (not a later one with its pid) runs; a zombie has ended."""
    st = _stat(pid)
    return st is not None and st[3] == start and st[0] not in ("Z", "X")


# --------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    """Whether a new server could listen on ``port``: no socket listens there. (With
    SO_REUSEADDR, as servers bind: the closed connections of the last one may wait in
    TIME_WAIT for a minute, and they hold nothing.)"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _start_ui(cwd: Path, env: dict, port: int) -> subprocess.Popen:
    """``tuner ui --port PORT`` in ``cwd`` as ``e2e.start_cli`` starts it (SIGINT at its
    default), its output in files: the server inherits them, and a pipe would fill up
    or, held open by a leftover process, never end."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(cwd / "ui.out", "w") as out, open(cwd / "ui.err", "w") as err:
            proc = subprocess.Popen(e2e.tuner_command() + ["ui", "--port", str(port)],
                                    cwd=cwd, env=env, stdout=out, stderr=err)
    finally:
        signal.signal(signal.SIGINT, previous)
    proc.err_path = cwd / "ui.err"
    return proc


def _stderr(proc) -> str:
    return proc.err_path.read_text()[-3000:]


def _serve_until_healthy(proc, port: int, timeout: float) -> dict[int, int]:
    """Wait for the server to answer; the descendants seen meanwhile (pid -> start)."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tuner ui exited early ({proc.returncode}): " \
                                    f"{_stderr(proc)}"
        seen.update(_descendants(proc.pid))
        if _healthy(port):
            seen.update(_descendants(proc.pid))
            return seen
        time.sleep(0.25)
    raise AssertionError(f"no answer on port {port} within {timeout} s")


def _stop_and_check(proc, port: int, seen: dict[int, int], sig: int | None,
                    expected: int, timeout: float = 60) -> None:
    if sig is not None:
        seen.update(_descendants(proc.pid))
        proc.send_signal(sig)
    proc.wait(timeout=timeout)  # on a timeout, the `start_ui` fixture cleans up
    err = _stderr(proc)
    assert proc.returncode == expected, err
    assert "Traceback" not in err, err
    assert seen, "the server started no process"
    left = [pid for pid, start in seen.items() if _running(pid, start)]
    assert left == [], [(pid, _stat(pid)) for pid in left]
    assert _port_is_free(port)


@pytest.fixture
def ui_env(tmp_path, mlflow_template):
    """A working folder with an empty migrated store, and the environment of the CLI."""
    e2e.seed_results(tmp_path, mlflow_template)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", GIT_PYTHON_REFRESH="quiet")
    env.pop("MLFLOW_TRACKING_URI", None)
    return tmp_path, env


@pytest.fixture
def fake_mlflow(tmp_path):
    """A folder with the stand-in ``mlflow`` package, to put first on PYTHONPATH."""
    folder = tmp_path / "fake" / "mlflow"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "__main__.py").write_text(FAKE_MLFLOW)
    return folder.parent


@pytest.fixture
def start_ui():
    """``_start_ui``; whatever a failed test left running is stopped at teardown (by
    ``tuner ui`` itself, else by SIGKILL to each process it had started)."""
    procs = []

    def start(cwd: Path, env: dict, port: int) -> subprocess.Popen:
        procs.append(_start_ui(cwd, env, port))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            left = _descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid, start_time in left.items():
                if _running(pid, start_time):
                    os.kill(pid, signal.SIGKILL)


def _with_fake(env: dict, fake: Path, mode: str = "") -> dict:
    path = os.pathsep.join(p for p in (str(fake), env.get("PYTHONPATH")) if p)
    return dict(env, PYTHONPATH=path, FAKE_MLFLOW=mode)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("sig", [
    signal.SIGTERM,
    pytest.param(signal.SIGINT, marks=pytest.mark.skipif(
        not ALL_SIGNALS, reason="slow: set TUNER_TEST_UI_SIGNALS=all")),
    pytest.param(signal.SIGHUP, marks=pytest.mark.skipif(
        not ALL_SIGNALS, reason="slow: set TUNER_TEST_UI_SIGNALS=all")),
], ids=lambda s: s.name)
@pytest.mark.timeout(240)
def test_signal_stops_the_mlflow_server_and_all_it_started(sig, ui_env, start_ui):
    cwd, env = ui_env
    port = _free_port()
    proc = start_ui(cwd, env, port)
    seen = _serve_until_healthy(proc, port, timeout=150)
    assert len(seen) >= 3  # at least the server, uvicorn and a worker
    _stop_and_check(proc, port, seen, sig, EXPECTED[sig])


@pytest.mark.parametrize("sig", list(EXPECTED), ids=lambda s: s.name)
def test_signal_stops_the_whole_process_tree(sig, ui_env, fake_mlflow, start_ui):
    cwd, env = ui_env
    port = _free_port()
    proc = start_ui(cwd, _with_fake(env, fake_mlflow), port)
    seen = _serve_until_healthy(proc, port, timeout=60)
    assert len(seen) >= 4  # the server, two children, a grandchild
    _stop_and_check(proc, port, seen, sig, EXPECTED[sig])


def test_what_ignores_sigterm_is_killed_after_the_grace(ui_env, fake_mlflow, start_ui):
    cwd, env = ui_env
    port = _free_port()
    env = dict(_with_fake(env, fake_mlflow, "stubborn"), TUNER_UI_GRACE_S="1")
    proc = start_ui(cwd, env, port)
    seen = _serve_until_healthy(proc, port, timeout=60)
    started = time.monotonic()
    _stop_and_check(proc, port, seen, signal.SIGTERM, 143)
    assert 1 <= time.monotonic() - started < 10  # the grace, then SIGKILL


def test_a_server_that_exits_leaves_nothing_and_gives_its_code(ui_env, fake_mlflow,
                                                              start_ui):
    cwd, env = ui_env
    port = _free_port()
    proc = start_ui(cwd, _with_fake(env, fake_mlflow, "exit"), port)
    seen = _serve_until_healthy(proc, port, timeout=60)  # the first /health: exit 3
    _stop_and_check(proc, port, seen, None, 3)
