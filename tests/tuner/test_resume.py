"""Continuing a stored sweep: more trials, grid points not run twice, Ctrl-C.

The interrupt test runs ``tuner run`` as a real subprocess and sends it SIGINT once a
trial is COMPLETE in the Optuna database.
"""

from __future__ import annotations

import itertools
import signal
import time

import optuna
import pytest

from e2e import (
    GRID_SPACE, invoke, iris_spec, load_study, mlflow_client, optuna_url, parent_runs,
    runs_of, start_cli, trial_runs, write_spec,
)


def _snapshot(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state.name, t.params, t.value, t.datetime_start,
             t.user_attrs.get("mlflow_run_id")) for t in study.trials]


def test_more_trials_continue_the_sweep(results_dir):
    path = write_spec(results_dir / "tpe.yaml", iris_spec("iris-resume", method="tpe"))
    assert invoke(["run", path, "--trials", "3", "--no-refit"]) == 0
    first = _snapshot(load_study(results_dir, "iris-resume"))
    assert len(first) == 3

    assert invoke(["run", path, "--trials", "5", "--no-refit"]) == 0
    study = load_study(results_dir, "iris-resume")
    after = _snapshot(study)
    assert len(after) == 5
    assert after[:3] == first  # the earlier trials are untouched
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 5  # nothing ran twice

    runs = runs_of(results_dir, "iris-resume")
    assert len(parent_runs(runs)) == 2  # one per invocation
    nested = trial_runs(runs)
    assert len(nested) == 5
    assert {r.info.run_id for r in nested} == {t.user_attrs["mlflow_run_id"]
                                                for t in study.trials}
    assert sorted(r.data.tags["optuna.trial_number"] for r in nested) == list("01234")

    # Asked for the budget it already has: nothing more is run.
    assert invoke(["run", path, "--trials", "5", "--no-refit"]) == 0
    assert _snapshot(load_study(results_dir, "iris-resume")) == after


def test_grid_resume_skips_done_points(results_dir):
    path = write_spec(results_dir / "grid.yaml", iris_spec("iris-grid-resume", method="grid"))
    assert invoke(["run", path, "--trials", "2", "--no-refit"]) == 0
    first = _snapshot(load_study(results_dir, "iris-grid-resume"))
    assert len(first) == 2

    # More than the grid holds: capped at its 4 points.
    assert invoke(["run", path, "--trials", "10", "--no-refit"]) == 0
    study = load_study(results_dir, "iris-grid-resume")
    done = _snapshot(study)
    assert len(done) == 4 and done[:2] == first
    points = sorted((t.params["learning_rate"], t.params["l2"]) for t in study.trials)
    assert points == sorted(itertools.product(GRID_SPACE["learning_rate"], GRID_SPACE["l2"]))
    assert all(t.state.name == "COMPLETE" for t in study.trials)

    # A finished grid: running it again adds no trial and no trial run.
    n_runs = len(trial_runs(runs_of(results_dir, "iris-grid-resume")))
    assert invoke(["run", path, "--no-refit"]) == 0
    assert invoke(["run", path, "--trials", "10", "--no-refit"]) == 0
    assert _snapshot(load_study(results_dir, "iris-grid-resume")) == done
    assert len(trial_runs(runs_of(results_dir, "iris-grid-resume"))) == n_runs == 4


def _wait_for_complete(proc, directory, name: str, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            study = load_study(directory, name)
        except KeyError:  # not created yet
            study = None
        if study is not None:
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if done:
                return len(done)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    pytest.fail(f"no COMPLETE trial before the sweep ended or timed out "
                f"(rc {proc.poll()}): {err[-2000:]}")


def test_ctrl_c_keeps_state_and_resumes(results_dir, e2e_env):
    # A warm batch of 2 takes ~0.2 s, so 40 trials leave seconds to interrupt in.
    name, budget = "iris-interrupt", 40
    path = write_spec(results_dir / "long.yaml",
                      iris_spec(name, method="random", trials=budget, batch=2))
    optuna.storages.RDBStorage(optuna_url(results_dir))  # the schema exists before polling
    command = ["run", path]

    proc = start_cli(command, results_dir, e2e_env)
    try:
        _wait_for_complete(proc, results_dir, name)
        proc.send_signal(signal.SIGINT)  # as Ctrl-C does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err

    study = load_study(results_dir, name)
    states = {t.state.name for t in study.trials}
    assert states == {"COMPLETE"}  # the trials in flight were finished, not dropped
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 1 <= len(complete) < budget, "the interrupt came after the sweep had ended"
    kept = {t.number: (t.params, t.value) for t in complete}
    runs = runs_of(results_dir, name)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    assert parent_runs(runs)[0].info.status == "KILLED"

    # The same command again (in this process: a second interpreter start costs seconds).
    assert invoke(command) == 0
    study = load_study(results_dir, name)
    trials = study.trials
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    for number, (params, value) in kept.items():
        assert (trials[number].state.name, trials[number].params, trials[number].value) \
            == ("COMPLETE", params, value)
    lost = {t.number for t in trials if "lost" in t.user_attrs}
    counted = [t for t in trials if t.number not in lost]
    assert len(counted) == budget
    assert all(t.state.name == "COMPLETE" for t in counted)
    runs = runs_of(results_dir, name)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    finished = [r for r in trial_runs(runs) if r.info.status == "FINISHED"]
    assert {r.info.run_id for r in finished} >= {t.user_attrs["mlflow_run_id"] for t in counted}
    assert [r.info.status for r in parent_runs(runs)] == ["KILLED", "FINISHED"]


def test_interrupted_tune_keeps_state_and_resumes(results_dir, monkeypatch):
    """KeyboardInterrupt while a batch trains (the API's Ctrl-C): the batch's trials are
    lost (FAIL, retried later, not counted), their runs KILLED, the sweep resumable."""
    import tuner
    from tuner.execution.executor import Executor

    name, budget = "iris-api-interrupt", 6
    spec = iris_spec(name, method="random", trials=budget)
    train = Executor.train
    calls = []

    def interrupted_second_batch(self, configs, *args, **kwargs):
        calls.append(len(configs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, configs, *args, **kwargs)

    monkeypatch.setattr(Executor, "train", interrupted_second_batch)
    with pytest.raises(KeyboardInterrupt):
        tuner.tune(spec, refit=False)
    study = load_study(results_dir, name)
    by_state: dict[str, list] = {}
    for t in study.trials:
        by_state.setdefault(t.state.name, []).append(t)
    assert sorted(by_state) == ["COMPLETE", "FAIL", "WAITING"]
    assert len(by_state["COMPLETE"]) == 2
    lost = by_state["FAIL"]
    assert len(lost) == 2 and all(t.user_attrs["lost"].startswith("lost") for t in lost)
    assert sorted(t.params["learning_rate"] for t in by_state["WAITING"]) == \
        sorted(t.params["learning_rate"] for t in lost)  # queued again, same points
    client = mlflow_client(results_dir)
    for t in lost:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED"
        assert run.data.tags["fail_reason"].startswith("lost")
    runs = runs_of(results_dir, name)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    assert [r.info.status for r in parent_runs(runs)] == ["KILLED"]
    kept = {t.number: (t.params, t.value) for t in by_state["COMPLETE"]}

    monkeypatch.setattr(Executor, "run", train)
    result = tuner.tune(spec, refit=False)
    study = load_study(results_dir, name)
    counted = [t for t in study.trials if "lost" not in t.user_attrs]
    assert len(counted) == budget and all(t.state.name == "COMPLETE" for t in counted)
    for number, (params, value) in kept.items():
        assert (study.trials[number].params, study.trials[number].value) == (params, value)
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    assert result.best_value == study.best_value
