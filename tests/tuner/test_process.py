"""tuner.process: the CLI process's exit without teardown keeps a normal exit's effects."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest

from tuner import process

# A process that ends through exit_now: a non-daemon thread still writing, an atexit
# handler, buffered output on both streams, and a garbage-collected cycle in between.
SCRIPT = textwrap.dedent("""
    import atexit, gc, sys, threading, time
    from tuner import process

    process.pause_gc()
    assert not gc.isenabled()
    process.resume_gc()
    assert gc.isenabled() and gc.get_freeze_count() > 0

    def late_writer():
        time.sleep(0.3)
        print("thread finished", flush=False)

    threading.Thread(target=late_writer).start()
    atexit.register(lambda: print("atexit ran", file=sys.stderr))
    sys.stdout.write("buffered out")
    process.exit_now(int(sys.argv[1]))
    print("never printed")
""")


@pytest.mark.parametrize("code", [0, 2, 130])
def test_exit_now_waits_runs_handlers_flushes_and_keeps_the_code(code, tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(code)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == code
    assert "buffered out" in out.stdout and "thread finished" in out.stdout
    assert "never printed" not in out.stdout
    assert out.stderr.strip() == "atexit ran"


def test_exit_code_maps_like_sys_exit(capsys):
    assert process.exit_code(SystemExit()) == 0
    assert process.exit_code(SystemExit(None)) == 0
    assert process.exit_code(SystemExit(2)) == 2
    assert process.exit_code(SystemExit("bad thing")) == 1
    assert capsys.readouterr().err.strip() == "bad thing"


def test_resume_without_pause_leaves_the_collector_alone():
    frozen = gc.get_freeze_count()
    process.resume_gc()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
