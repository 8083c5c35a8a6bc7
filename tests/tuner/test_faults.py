"""Faults: stop signals and SIGKILL at any moment, on the default sqlite stores.

- SIGTERM and SIGHUP stop ``tuner run`` as the first Ctrl-C does: the work in flight is
  finished, nothing is left RUNNING in either store, exit 128 + signal.
- The fault-injection test SIGKILLs one sweep over and over, at hooks placed at each
  step of a trial's and a sweep's life (``TUNER_KILL_AT``) and at random moments,
  resuming after each kill. At the end Optuna and MLflow agree trial by trial, no
  trial is lost or counted twice, and the budget is exact.

Results are read back with Optuna's and MLflow's own clients.
"""

from __future__ import annotations

import math
import random
import re
import signal
import subprocess
import time
from collections import Counter

import optuna
import pytest
from e2e import (
    iris_spec, load_study, mlflow_client, optuna_url, parent_runs, runs_of,
    start_cli, trial_runs, write_spec,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
          TrialState.FAIL: "FAILED"}
EPOCHS = 8
HALVING = {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2}


def _spec(name: str, trials: int) -> dict:
    """Pruned in segments (more moments to die in), on the session's one recipe."""
    spec = iris_spec(name, method="random", trials=trials, batch=4,
                     fixed={"epochs": EPOCHS}, space={"learning_rate": {
                         "low": 1e-3, "high": 0.5, "log": True}})
    spec["search"]["pruner"] = HALVING
    return spec


def _running_runs(directory, name) -> list[str]:
    return [r.info.run_id for r in runs_of(directory, name) if r.info.status == "RUNNING"]


def _wait_for_a_result(proc, directory, name: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            study = load_study(directory, name)
        except KeyError:  # not created yet
            study = None
        if study is not None and study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED)):
            return
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    pytest.fail(f"no finished trial before the sweep ended (rc {proc.poll()}): {err[-2000:]}")


# --------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_the_first_ctrl_c(sig, results_dir, e2e_env):
    name = f"iris-{sig.name.lower()}"
    path = write_spec(results_dir / "s.yaml",
                      iris_spec(name, method="random", trials=40, batch=2))
    optuna.storages.RDBStorage(optuna_url(results_dir))  # the schema exists before polling
    proc = start_cli(["run", path], results_dir, e2e_env)
    try:
        _wait_for_a_result(proc, results_dir, name)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"{sig.name}: stopping after the work in flight" in err
    study = load_study(results_dir, name)
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}  # finished, not dropped
    assert 1 <= len(study.trials) < 40
    assert _running_runs(results_dir, name) == []
    assert [r.info.status for r in parent_runs(runs_of(results_dir, name))] == ["KILLED"]


# --------------------------------------------------------------------------- SIGKILL
# Hooks at every step: asking a trial, creating its MLflow runs, training a segment,
# logging a trial (after its metrics, before its run is closed), telling Optuna (after
# MLflow holds the results), and after the budget: the summary, the refit, the model.
# "point:n" dies the n-th time the point is reached in that process.
TRIAL_HOOKS = ["ask:1", "runs:1", "train:1", "log:1", "tell:1", "ask:2", "runs:2",
               "train:2", "log:2", "tell:2", "log:3", "tell:3"]
SUMMARY_HOOKS = ["finish:1", "refit:1", "model:1"]
RANDOM_KILLS = 5
BUDGET = 48


def _run_until_killed(args, directory, env, kill_at: str | None, after_s: float | None):
    """One ``tuner run``: killed by a hook or after ``after_s``; (exit code, stderr)."""
    env = {k: v for k, v in env.items() if k != "TUNER_KILL_AT"}
    if kill_at:
        env["TUNER_KILL_AT"] = kill_at
    proc = start_cli(args, directory, env)
    try:
        _, err = proc.communicate(timeout=after_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _matches(run, trial: optuna.trial.FrozenTrial) -> bool:
    for key, value in trial.params.items():
        logged = run.data.params.get(key)
        if logged is None:
            return False
        if isinstance(value, float):
            if not math.isclose(float(logged), value, rel_tol=1e-12):
                return False
        elif logged != str(value):
            return False
    return True


def test_sigkill_at_any_moment_loses_and_duplicates_nothing(results_dir, e2e_env):
    name = "iris-faults"
    path = write_spec(results_dir / "faults.yaml", _spec(name, BUDGET))
    args = ["run", path]
    rng = random.Random(0)
    # The hooks first (each leaves little progress), then random moments (a process
    # started ~3-4 s ago is in its first trials by then, and trains fast afterwards).
    plan: list[tuple[str | None, float | None]] = [(h, None) for h in TRIAL_HOOKS]
    plan += [(None, rng.uniform(3.5, 6.5)) for _ in range(RANDOM_KILLS)]
    kills, recoveries, recover_s = Counter(), Counter(), []
    for kill_at, after_s in plan:
        code, err = _run_until_killed(args, results_dir, e2e_env, kill_at, after_s)
        assert code in (0, -signal.SIGKILL), err[-3000:]
        if code == -signal.SIGKILL:
            kills[kill_at.split(":")[0] if kill_at else "random"] += 1
        for seconds, told, lost in re.findall(
                r"recovered from an earlier stop in ([\d.]+)s: (\d+) trial\(s\) told .*?"
                r"(\d+) lost", err):
            recover_s.append(float(seconds))
            recoveries["told"] += int(told)
            recoveries["lost"] += int(lost)
    # The budget is reached. --refit: summarise again even if the last run above got to
    # finish its summary (a finished sweep rerun otherwise makes no new parent run).
    for hook in SUMMARY_HOOKS:
        code, err = _run_until_killed(args + ["--refit"], results_dir, e2e_env, hook, None)
        assert code == -signal.SIGKILL, err[-3000:]
        kills[hook.split(":")[0]] += 1
    # Without --refit: the last parent run was killed inside the summary, so it is redone.
    code, err = _run_until_killed(args, results_dir, e2e_env, None, None)
    assert code == 0, err[-3000:]
    assert "is complete: no new parent run" not in err

    assert sum(kills.values()) >= 20, kills
    assert set(kills) >= {"ask", "runs", "train", "log", "tell", "finish", "refit", "model"}
    _assert_stores_agree(results_dir, name)
    # Trials logged whole before the kill were told from MLflow, not trained again.
    assert recoveries["told"] >= 1 and recoveries["lost"] >= 1, recoveries
    print(f"\nkills {dict(kills)}; recovered {dict(recoveries)}; recovery "
          f"{max(recover_s):.2f}s at most")


def _assert_stores_agree(directory, name: str) -> None:
    study = load_study(directory, name)
    trials = study.trials
    runs = runs_of(directory, name)
    assert _running_runs(directory, name) == []
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING,
                                                        TrialState.WAITING)]
    lost = {t.number for t in trials if "lost" in t.user_attrs}
    for t in trials:
        lost.update(t.system_attrs.get("retry_history", []))
    counted = [t for t in trials if t.number not in lost]
    assert len(counted) == BUDGET  # the budget is exact
    assert all(t.state != TrialState.FAIL for t in counted)  # nothing here fails
    by_number: dict[int, list] = {}
    for r in trial_runs(runs):
        by_number.setdefault(int(r.data.tags["optuna.trial_number"]), []).append(r)
    for t in counted:
        # One run per counted trial: the one Optuna points at.
        assert [r.info.run_id for r in by_number[t.number]] == [t.user_attrs["mlflow_run_id"]]
        run = by_number[t.number][0]
        assert run.info.status == STATUS[t.state], (t.number, t.state, run.info.status)
        assert _matches(run, t), (t.number, t.params, run.data.params)
        if t.state == TrialState.COMPLETE:
            assert run.data.metrics["cv_accuracy"] == pytest.approx(t.value, abs=1e-9)
        curve = {m.step: m.value for m in
                 mlflow_client(directory).get_metric_history(run.info.run_id, "val_accuracy")}
        assert curve.keys() == t.intermediate_values.keys()  # also for the recovered ones
    for t in trials:
        if t.state == TrialState.FAIL:  # lost: no run of it holds a result
            assert not [r for r in by_number.get(t.number, [])
                        if r.info.status == "FINISHED"], t.number
    # A trial told from MLflow is not retried; a retried one was lost.
    retried = {Retry.retried_trial_number(t) for t in trials} - {None}
    assert retried <= lost
    recovered = [t for t in counted if "recovered" in t.user_attrs]
    assert not {t.number for t in recovered} & retried
    # The last invocation finished the summary; every killed one is closed KILLED.
    statuses = [r.info.status for r in parent_runs(runs)]
    assert statuses[-1] == "FINISHED" and set(statuses[:-1]) <= {"KILLED", "FINISHED"}


# --------------------------------------------------------------------------- sqlite owner
def _held_study(tmp_path, owner: dict):
    """A sqlite study with one RUNNING trial that has a fresh heartbeat, recorded as run
    by ``owner``; and a lifecycle on it."""
    from tuner.search import lifecycle as lc

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'held.db'}",
                                         heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="held")
    study.set_user_attr(lc.ATTR_OWNER, owner)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    closed = []
    life = lc.SingleProcessLifecycle(lambda run_id, reason: closed.append(run_id))
    life.storage, life.study = storage, study
    return life, trial, lc


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_study_another_live_process_runs_is_refused_after_the_grace_period(
        tmp_path, monkeypatch):
    life, trial, lc = _held_study(tmp_path, {"host": "elsewhere", "pid": 1})
    monkeypatch.setattr(lc, "GRACE_PERIOD_S", 2)
    monkeypatch.setattr(lc, "HEARTBEAT_INTERVAL_S", 1)
    beat = lc.Heartbeat(life.storage, 0.5)  # the other process, beating
    beat.watch([trial])
    started = time.monotonic()
    try:
        with pytest.raises(lc.StorageError, match="being run by another process"):
            life.recover_orphans()
    finally:
        beat.stop()
    assert 2 <= time.monotonic() - started < 10  # it waited for the beats to go stale
    assert life.study.trials[0].state == TrialState.RUNNING  # untouched


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_dead_owner_on_this_host_is_not_waited_for(tmp_path, monkeypatch):
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    life, trial, lc = _held_study(tmp_path, {"host": socket.gethostname(), "pid": dead.pid})
    monkeypatch.setattr(lc, "GRACE_PERIOD_S", 30)
    life.storage.record_heartbeat(trial._trial_id)  # fresh: killed a moment ago
    started = time.monotonic()
    life.recover_orphans()
    assert time.monotonic() - started < 5
    states = [t.state for t in life.study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # lost, and queued again
