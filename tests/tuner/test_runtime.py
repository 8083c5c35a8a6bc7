"""tuner.runtime: background preloading of the summary's libraries."""

from __future__ import annotations

import sys

from tuner import plots, runtime


def test_preload_imports_in_a_thread_once(monkeypatch):
    # Modules this process has not imported (stdlib, so always available).
    names = ("colorsys", "this_module_does_not_exist_anywhere", "graphlib")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(runtime, "_preloaded", set())
    thread = runtime.preload_in_background(names)
    assert thread is not None and thread.daemon
    thread.join(30)
    assert "colorsys" in sys.modules and "graphlib" in sys.modules  # a missing one is skipped
    assert runtime.preload_in_background(names) is None  # nothing left to load


def test_plots_do_not_import_matplotlib_until_drawn():
    import subprocess

    code = ("import sys, tuner.tracking, tuner.plots; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert "matplotlib.figure" in plots.PRELOAD_MODULES
