"""Three processes share one study on PostgreSQL and an mlflow server; one of them is
killed with SIGKILL in the middle of a batch. The sweep still ends with exactly the
requested trials, the killed worker's trials are failed as stale and retried, nothing is
left RUNNING, and Optuna and MLflow agree trial by trial.

The scenario runs once (module fixture ``killed``); the tests below read its result.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections import Counter

import optuna
import pytest
from dist_helpers import (
    TAG_PARENT, TAG_RETRY_OF, TAG_TRIAL, Tuner, create_study, experiment_runs, load_study,
    mlflow_client, parent_runs, spec_file, trial_runs, unique, wait_for,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

from tuner.search.lifecycle import budget_state

# Optuna marks the heartbeat and retry APIs experimental; they are what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

TRIALS = 12
KILLED_BATCH = 3  # the killed worker's --batch; its parent run's "batch" param finds it
STATUS = {TrialState.COMPLETE: {"FINISHED"}, TrialState.PRUNED: {"KILLED"},
          TrialState.FAIL: {"FAILED", "KILLED"}}


@dataclasses.dataclass
class Killed:
    name: str
    study: optuna.Study
    runs: list            # every MLflow run of the experiment
    killed: list[int]     # numbers of the trials the killed worker was training
    killed_parent: str    # its parent run
    tracking_uri: str


@pytest.fixture(scope="module")
def killed(storage_url, mlflow_server, tuner_env, tmp_path_factory) -> Killed:
    folder = tmp_path_factory.mktemp("killed-worker")
    t = Tuner(folder, tuner_env)
    name = unique("killed")
    spec = spec_file(folder, name, search={"trials": TRIALS, "batch": 2})
    client = mlflow_client(mlflow_server)
    common = ["--storage", storage_url, "--tracking-uri", mlflow_server]
    try:
        create_study(spec, storage_url)
        # All three start work at the same moment. The victim asks for 3 trials and compiles
        # its 3-lane program without the persistent cache, so its batch is in training for
        # seconds: that is when it is killed. The other two (2 lanes) go on.
        first = t.start("run", spec, "--trials", TRIALS, "--no-refit", *common,
                        synced=True, name="run")
        victim = t.start("worker", "--study", name, "--batch", KILLED_BATCH,
                         "--worker-id", 1, *common, env={"TUNER_JAX_CACHE": "off"},
                         synced=True, name="victim")
        other = t.start("worker", "--study", name, "--worker-id", 2, *common, synced=True,
                        name="other")
        t.release([first, victim, other])

        def victim_training():
            """The victim's trials, once all of its batch's runs exist and are recorded
            in Optuna (so it is past creating them and in training)."""
            # Optuna first: a run id recorded there means all runs of that batch exist.
            trials = {tr.number: tr for tr in load_study(storage_url, name).trials}
            runs = experiment_runs(client, name)
            parents = [r.info.run_id for r in parent_runs(runs)
                       if r.data.params.get("batch") == str(KILLED_BATCH)]
            if not parents:
                return None
            mine = {r.info.run_id: int(r.data.tags[TAG_TRIAL]) for r in trial_runs(runs)
                    if r.data.tags.get(TAG_PARENT) == parents[0]
                    and r.info.status == "RUNNING"}
            if not mine:
                return None
            if all(n in trials and trials[n].state == TrialState.RUNNING
                   and trials[n].user_attrs.get("mlflow_run_id") == rid
                   for rid, n in mine.items()):
                return parents[0], sorted(mine.values())
            return None

        parent, numbers = wait_for("the victim's batch in training", victim_training, 120,
                                   interval=0.1, procs=((t, victim),))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        for proc in (first, other):
            t.wait(proc, timeout=180)
            assert proc.returncode == 0, t.describe(proc)
        yield Killed(name, load_study(storage_url, name), experiment_runs(client, name),
                     numbers, parent, mlflow_server)
    finally:
        t.close()


def _trials(k: Killed) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in k.study.trials}


def test_exactly_the_requested_trials_complete(killed):
    states = Counter(t.state for t in killed.study.trials)
    assert states[TrialState.COMPLETE] == TRIALS, states
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    assert budget_state(killed.study) == (TRIALS, 0, 0)


def test_killed_trials_fail_as_stale_and_are_retried(killed):
    trials = _trials(killed)
    assert killed.killed, "the victim had no trial in training"
    retries = {Retry.retried_trial_number(t): t for t in trials.values()
               if Retry.retried_trial_number(t) is not None}
    client = mlflow_client(killed.tracking_uri)
    for n in killed.killed:
        assert trials[n].state == TrialState.FAIL
        retry = retries.get(n)
        assert retry is not None, f"trial {n} was not retried"
        assert Retry.retry_history(retry) == [n]  # the history is kept
        assert retry.state == TrialState.COMPLETE
        assert retry.params == trials[n].params  # the same point, trained again
        run = client.get_run(trials[n].user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED"
        assert "heartbeat" in run.data.tags.get("fail_reason", ""), run.data.tags
        assert run.data.tags[TAG_PARENT] == killed.killed_parent
    # Nothing but the killed worker's trials was lost.
    assert set(retries) == set(killed.killed)


def test_optuna_and_mlflow_agree_trial_by_trial(killed):
    trials = _trials(killed)
    runs = trial_runs(killed.runs)
    per_number = Counter(int(r.data.tags[TAG_TRIAL]) for r in runs)
    assert set(per_number) == set(trials), "trials and trial runs differ"
    assert max(per_number.values()) == 1, f"a trial has several runs: {per_number}"
    by_id = {r.info.run_id: r for r in runs}
    parents = {r.info.run_id for r in parent_runs(killed.runs)}
    spec_fixed = {"epochs": "5", "depth": "1", "width": "8", "batch_size": "3"}
    for n, t in trials.items():
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags[TAG_TRIAL] == str(n)
        assert run.info.status in STATUS[t.state], (n, t.state, run.info.status)
        assert run.data.tags[TAG_PARENT] in parents
        assert run.info.run_name == f"trial-{n}"
        origin = Retry.retried_trial_number(t)
        if origin is None:
            assert TAG_RETRY_OF not in run.data.tags
        else:
            assert run.data.tags[TAG_RETRY_OF] == str(origin)
        if str(t.user_attrs.get("lost", "")).startswith("over budget"):
            continue  # closed before training: no params logged
        for key, value in t.params.items():
            assert run.data.params[key] == str(value), (n, key)
        for key, value in spec_fixed.items():
            assert run.data.params[key] == value
        if t.state == TrialState.COMPLETE:
            assert run.data.metrics["cv_accuracy"] == pytest.approx(t.value, abs=1e-12)


def test_no_trial_is_left_running_in_optuna_or_mlflow(killed):
    assert not [t.number for t in killed.study.trials if not t.state.is_finished()]
    running = [r.data.tags[TAG_TRIAL] for r in trial_runs(killed.runs)
               if r.info.status not in ("FINISHED", "FAILED", "KILLED")]
    assert not running
    # The survivors' sweep runs are closed too.
    survivors = [r for r in parent_runs(killed.runs) if r.info.run_id != killed.killed_parent]
    assert len(survivors) == 2 and all(r.info.status == "FINISHED" for r in survivors)


def test_killed_workers_sweep_run_is_closed(killed):
    run = next(r for r in parent_runs(killed.runs) if r.info.run_id == killed.killed_parent)
    assert run.info.status != "RUNNING"

