"""Helpers of the scale-out tests (imported by the tests and by conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

# The tiny sweep every test starts from: iris, 3 folds, one network shape, so that one
# compiled program (per lane count) serves the whole session.
BASE_SPEC = {
    "data": {"source": "sklearn:iris"},
    "cv": {"folds": 3, "stratified": True, "shuffle": True, "seed": 0},
    "search": {"method": "random", "trials": 6, "batch": 2, "seed": 0},
    "metric": "accuracy",
    "fixed": {"epochs": 5, "depth": 1, "width": 8, "batch_size": 3,
              "activation": "relu", "optimizer": "adam"},
    "space": {
        "learning_rate": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
        "l2": {"low": 1.0e-6, "high": 1.0e-3, "log": True},
    },
}

TAG_TRIAL = "optuna.trial_number"
TAG_PARENT = "mlflow.parentRunId"
TAG_RETRY_OF = "retry_of_trial"


def unique(name: str) -> str:
    """A study (and MLflow experiment) name that no other test or session uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(base.get(k), dict) and k != "space"
        out[k] = _merge(base[k], v) if nested else v
    return out


def spec_file(folder: Path, name: str, **over) -> Path:
    """Write a tiny spec (BASE_SPEC with ``over`` merged in; ``space`` is replaced)."""
    spec = _merge({**BASE_SPEC, "name": name}, over)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- processes
TUNER = [sys.executable, "-c", "from tuner.cli import console_main; console_main()"]
# The same, but it imports first, says so (``<dir>/<pid>.ready``) and then waits for
# ``<dir>/go``: processes started this way begin their work at the same moment.
TUNER_SYNCED = [sys.executable, "-c", """
import os, sys, time
import tuner.cli, tuner.execution.sweep
folder = sys.argv.pop(1)
open(os.path.join(folder, f"{os.getpid()}.ready"), "w").close()
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.01)
tuner.cli.console_main()
"""]


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """End a process group this session started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Tuner:
    """Starts ``tuner`` subprocesses in one folder and ends them all in ``close``.

    Each process writes ``<name>.out`` / ``<name>.err`` there (``output``, ``describe``).
    """

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = Path(cwd), dict(env)
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, env: dict[str, str] | None = None, name: str | None = None,
              synced: bool = False) -> subprocess.Popen:
        """Start ``tuner ARGS``. ``synced``: it imports, then waits for ``release``."""
        name = name or f"p{len(self.procs)}"
        cmd = [*TUNER, *map(str, args)]
        if synced:
            self.barrier.mkdir(exist_ok=True)
            cmd = [*TUNER_SYNCED, str(self.barrier), *map(str, args)]
        with open(self.cwd / f"{name}.out", "wb") as fo, \
                open(self.cwd / f"{name}.err", "wb") as fe:
            proc = subprocess.Popen(cmd, cwd=self.cwd,
                                    env={**self.env, **(env or {})}, stdout=fo, stderr=fe,
                                    start_new_session=True)
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @property
    def barrier(self) -> Path:
        return self.cwd / "barrier"

    def release(self, procs: list[subprocess.Popen], timeout: float = 120) -> None:
        """Once every one of ``procs`` (started ``synced``) has imported, let them all go."""
        wait_for("the processes to import",
                 lambda: all((self.barrier / f"{p.pid}.ready").exists() for p in procs),
                 timeout, interval=0.05, procs=tuple((self, p) for p in procs))
        (self.barrier / "go").touch()

    def run(self, *args, env: dict[str, str] | None = None, timeout: float = 120,
            name: str | None = None) -> subprocess.CompletedProcess:
        """Run ``tuner ARGS`` to its end -> returncode, stdout, stderr."""
        proc = self.start(*args, env=env, name=name)
        self.wait(proc, timeout)
        out, err = self.output(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def wait(self, proc: subprocess.Popen, timeout: float = 120) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            pytest.fail(f"{proc.name} did not end within {timeout:.0f}s\n" + self.describe(proc))

    def output(self, proc: subprocess.Popen) -> tuple[str, str]:
        out, err = ((self.cwd / f"{proc.name}.{s}").read_text(errors="replace")
                    for s in ("out", "err"))
        return out, err

    def describe(self, proc: subprocess.Popen) -> str:
        out, err = self.output(proc)
        return (f"[{proc.name}: exit {proc.returncode}]\n--- stdout\n{out[-2000:]}\n"
                f"--- stderr\n{err[-4000:]}")

    def close(self) -> None:
        for proc in self.procs:
            stop(proc, timeout=5)


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.2,
             procs: tuple[tuple[Tuner, subprocess.Popen], ...] = ()):
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` s or
    as soon as one of ``procs`` has ended (with its output)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for t, p in procs:
            if p.poll() is not None:
                pytest.fail(f"waiting for {what}: {p.name} ended\n" + t.describe(p))
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                        + "\n".join(t.describe(p) for t, p in procs))
        time.sleep(interval)


def one_error_line(result, secret: str | None = None) -> str:
    """The command failed with exit 2 and exactly one line on stderr (no traceback)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    if secret is not None:
        assert secret not in result.stderr + result.stdout
    return lines[0]


# --------------------------------------------------------------------------- reading back
def create_study(spec_path: Path, storage_url: str):
    """Create a spec's study the way ``tuner run`` does (spec, data fingerprint), in this
    process and without training, so that processes can join it from their start."""
    from tuner.inputs.data import load_data
    from tuner.inputs.spec import load_spec
    from tuner.fidelity.pruners import make_pruner
    from tuner.search.samplers import make_sampler
    from tuner.search.study import create_or_load_study, open_storage

    spec = load_spec(spec_path)
    dataset = load_data(spec.data)
    spec = spec.with_task(dataset.task)
    storage = open_storage(storage_url)
    return create_or_load_study(storage, spec.name, spec, dataset.fingerprint(),
                                make_sampler(spec), make_pruner(spec))


def load_study(storage_url: str, name: str):
    import optuna

    from tuner.search.study import normalise_url

    return optuna.load_study(study_name=name, storage=normalise_url(storage_url))


def study_exists(storage_url: str, name: str) -> bool:
    import optuna

    from tuner.search.study import normalise_url

    try:
        return name in optuna.get_all_study_names(normalise_url(storage_url))
    except Exception:  # noqa: BLE001 - tables not created yet
        return False


def mlflow_client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_runs(client, name: str) -> list:
    """Every run of the experiment ``name`` (parents and trials); [] if it does not exist."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trial_runs(runs) -> list:
    return [r for r in runs if TAG_TRIAL in r.data.tags]


def parent_runs(runs) -> list:
    return [r for r in runs if TAG_TRIAL not in r.data.tags]
