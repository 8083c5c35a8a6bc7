"""Shared set-up of the end-to-end tests (test_cli, test_api, test_resume).

Speed is the point here: the end-to-end files must stay well under a few minutes on two
cores. What costs time is compiling training programs (~10 s each on 2 cores) and
creating a fresh MLflow sqlite store (~3-4 s of schema migrations). So:

- every sweep uses one recipe (``FIXED``: sgd, relu, width 8, depth 1, batch size 16,
  3 epochs, l2 > 0, iris, 3 folds, 2 trials per batch), which is one compiled sweep
  program and one refit program for the whole session (the regression test adds one
  pair); the hyperparameters that vary (learning_rate, l2) are traced, so they never
  recompile;
- ``TUNER_JAX_CACHE`` points at one session-wide folder, so subprocesses and this
  process share compiled programs;
- ``results_dir`` seeds ``mlruns/mlflow.db`` with a copy of an empty, already migrated
  store (the CLI test of the full layout starts from nothing, so creation is covered).

Results are read back with ``optuna.load_study`` and ``mlflow.MlflowClient`` only, never
with the project's own readers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

# The test files import the helpers below as ``e2e``: the tests folders have no
# __init__.py, so this conftest has no importable package path of its own.
sys.modules.setdefault("e2e", sys.modules[__name__])

# One recipe for every sweep of these files: see the module docstring.
FIXED: dict[str, Any] = {"epochs": 3, "width": 8, "depth": 1, "batch_size": 16,
                         "optimizer": "sgd", "activation": "relu"}
EPOCHS = FIXED["epochs"]
FOLDS = 3
BATCH = 2
RANGE_SPACE = {"learning_rate": {"low": 0.01, "high": 0.5, "log": True},
               "l2": {"low": 1e-5, "high": 1e-2, "log": True}}
GRID_SPACE = {"learning_rate": [0.05, 0.2], "l2": [1e-4, 1e-3]}


def iris_spec(name: str, *, method: str = "grid", space: dict | None = None,
              trials: int | None = None, batch: int = BATCH, seed: int = 0,
              fixed: dict | None = None, **top: Any) -> dict:
    """A spec mapping in the YAML schema on iris with the session's one recipe."""
    space = dict(space if space is not None else
                 (GRID_SPACE if method == "grid" else RANGE_SPACE))
    fixed = {**FIXED, **(fixed or {})}
    if "l2" not in space:
        fixed.setdefault("l2", 1e-4)  # l2 on in every lane: the same compiled program
    search = {"method": method, "batch": batch, "seed": seed}
    if trials is not None:
        search["trials"] = trials
    spec = {"name": name, "data": {"source": "sklearn:iris"},
            "cv": {"folds": FOLDS, "stratified": True, "shuffle": True, "seed": 0},
            "search": search, "fixed": fixed, "space": space}
    spec.update(top)
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- environment
@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture(scope="session")
def e2e_env(jax_cache_dir):
    """The session's environment for sweeps, in this process and in subprocesses."""
    import jax
    from jax._src import compilation_cache

    prev_dir = jax.config.jax_compilation_cache_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNER_JAX_CACHE", str(jax_cache_dir))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from tests
        mp.setenv("GIT_PYTHON_REFRESH", "quiet")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("TUNER_DEBUG", raising=False)
        mp.delenv("TUNER_STATS_JSON", raising=False)
        # JAX opens its persistent cache once per process: if an earlier test opened one
        # elsewhere (e.g. the default ~/.cache/tuner/jax), start over with this one.
        from tuner.runtime import setup_compilation_cache

        setup_compilation_cache()
        compilation_cache.reset_cache()
        yield dict(os.environ)
    jax.config.update("jax_compilation_cache_dir", prev_dir)
    compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory, e2e_env) -> Path:
    """An empty MLflow sqlite store with its schema migrated (made once)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def results_dir(tmp_path, mlflow_template, monkeypatch) -> Path:
    """A working directory whose ``mlruns/mlflow.db`` is a fresh empty store; cwd."""
    seed_results(tmp_path, mlflow_template)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def seed_results(directory: Path, template: Path) -> Path:
    """``directory/mlruns/mlflow.db`` as a copy of the empty template store."""
    (directory / "mlruns").mkdir(parents=True, exist_ok=True)
    shutil.copy(template, directory / "mlruns" / "mlflow.db")
    return directory


# --------------------------------------------------------------------------- stores
def optuna_url(directory: Path) -> str:
    return f"sqlite:///{(directory / 'mlruns' / 'optuna.db').resolve()}"


def mlflow_uri(directory: Path) -> str:
    return f"sqlite:///{(directory / 'mlruns' / 'mlflow.db').resolve()}"


def load_study(directory: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=optuna_url(directory))


def mlflow_client(directory: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri(directory))


def runs_of(directory: Path, experiment: str) -> list:
    """Every run of the experiment (parent and trials), oldest first."""
    client = mlflow_client(directory)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000,
                              order_by=["attributes.start_time ASC"])
    return runs


def trial_runs(runs) -> list:
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def parent_runs(runs) -> list:
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def db_files(directory: Path) -> list[str]:
    """Database files under ``directory/mlruns`` (there must be none after bad input)."""
    root = directory / "mlruns"
    return sorted(str(p.relative_to(directory)) for p in root.rglob("*.db")) \
        if root.exists() else []


# --------------------------------------------------------------------------- the CLI
def tuner_command() -> list[str]:
    """The installed console script of this interpreter (not a pyenv shim)."""
    script = Path(sys.executable).with_name("tuner")
    if script.exists():
        return [str(script)]
    found = shutil.which("tuner")
    if found:
        return [found]
    return [sys.executable, "-c", "from tuner.cli import console_main; console_main()"]


def run_cli(args: list[str], cwd: Path, env: dict, timeout: float = 240,
            ) -> subprocess.CompletedProcess:
    """``tuner ARGS`` as a real subprocess in ``cwd``."""
    return subprocess.run(tuner_command() + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """``tuner ARGS`` started in ``cwd``, with SIGINT (Ctrl-C) at its default.

    A shell without job control starts background commands with SIGINT ignored, a child
    inherits that, and Python keeps an ignored SIGINT ignored. A handled signal is reset
    to the default by exec, so SIGINT is handled here while the child starts.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(tuner_command() + [str(a) for a in args], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def invoke(args: list[str]) -> int:
    """``tuner ARGS`` in this process (cwd as it is); returns the exit code."""
    from tuner.cli import main

    with mock.patch.object(sys, "argv", ["tuner", *[str(a) for a in args]]):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
            return 0 if code is None else code if isinstance(code, int) else 1
    return 0


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def tracking_uri(uri: str):
    """MLflow's global tracking URI set for the block, then restored (env var too)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    prev = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(prev)  # None also unsets MLFLOW_TRACKING_URI

