"""tuner.runtime: background preloading of the summary's libraries and work."""

from __future__ import annotations

import sys

from tuner import runtime
from tuner.summary import plots


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

    code = ("import sys, tuner.tracking, tuner.summary.plots; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert "matplotlib.figure" in plots.PRELOAD_MODULES


def test_preload_calls_each_function_once_after_the_imports(monkeypatch):
    monkeypatch.setattr(runtime, "_preloaded", set())
    calls = []

    def ready():
        calls.append("colorsys" in sys.modules)

    def broken():
        raise RuntimeError("a failure is only logged")

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    thread = runtime.preload_in_background(("colorsys",), then=(broken, ready))
    thread.join(30)
    assert calls == [True]  # ran, after the import, despite the one before it failing
    assert runtime.preload_in_background(("colorsys",), then=(broken, ready)) is None
    assert calls == [True]


def test_model_logging_preparation_fills_mlflows_package_map(monkeypatch):
    # The head start relies on a private MLflow helper and its cache: if either moves,
    # this fails and says so (log_best_model itself still works, only slower).
    from mlflow.utils import requirements_utils

    from tuner.summary import model

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    model.prepare_model_logging()
    assert "numpy" in requirements_utils._MODULES_TO_PACKAGES
