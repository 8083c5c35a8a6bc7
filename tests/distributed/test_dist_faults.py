"""Faults with several workers on PostgreSQL and the mlflow server (issue 12).

One worker is SIGKILLed right after its first batch reached MLflow and before Optuna was
told (kill point ``tell``); another is stopped with SIGTERM while it trains. A third
worker finishes the study. Then: the SIGTERMed worker exited 143 having left nothing
RUNNING; the killed worker's logged trials were told from MLflow by the worker that
found them stale (not trained again); the budget is exact; every counted trial has
exactly one FINISHED run with its params and value; no FINISHED run belongs to a FAIL
trial; nothing is RUNNING in either store.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from dist_helpers import (
    TAG_PARENT, TAG_TRIAL, Tuner, create_study, experiment_runs, load_study, mlflow_client,
    parent_runs, spec_file, trial_runs, unique, wait_for,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

from tuner.search.counting import budget_state, lost_numbers

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

TRIALS = 10


def test_sigterm_and_sigkill_between_log_and_tell_with_shared_stores(
        storage_url, mlflow_server, tuner_env, tmp_path):
    t = Tuner(tmp_path, tuner_env)
    name = unique("faults")
    spec = spec_file(tmp_path, name, search={"trials": TRIALS, "batch": 2},
                     fixed={"epochs": 150})  # long enough to be stopped mid-training
    common = ["--storage", storage_url, "--tracking-uri", mlflow_server]
    client = mlflow_client(mlflow_server)
    try:
        create_study(spec, storage_url)
        # The victim dies at its first tell: its first batch is complete in MLflow only.
        victim = t.start("worker", "--study", name, "--worker-id", 1, *common,
                         env={"TUNER_KILL_AT": "tell:1"}, name="victim")
        t.wait(victim, timeout=180)
        assert victim.returncode == -9, t.describe(victim)
        logged = {int(r.data.tags[TAG_TRIAL]): r for r in trial_runs(experiment_runs(client, name))
                  if r.info.status == "FINISHED"}
        assert logged, "the victim logged nothing before its kill"

        victim_parents = {r.info.run_id for r in parent_runs(experiment_runs(client, name))}
        left_running = {tr.number for tr in load_study(storage_url, name).trials
                        if tr.state == TrialState.RUNNING}
        stopped = t.start("worker", "--study", name, "--worker-id", 2, *common, name="stopped")

        def training():
            study = load_study(storage_url, name)
            return any(tr.state == TrialState.RUNNING and "mlflow_run_id" in tr.user_attrs
                       and tr.number not in left_running for tr in study.trials)

        wait_for("the second worker's batch in training", training, 120, interval=0.1,
                 procs=((t, stopped),))
        stopped.send_signal(15)  # SIGTERM, as docker stop / Kubernetes send
        t.wait(stopped, timeout=120)
        assert stopped.returncode == 143, t.describe(stopped)
        assert "SIGTERM: stopping after the work in flight" in "".join(t.output(stopped))
        # The stopped worker left nothing RUNNING: its parent run and trial runs are
        # closed, and only the SIGKILLed victim's trials can still be RUNNING.
        runs = experiment_runs(client, name)
        mine = {r.info.run_id for r in parent_runs(runs)} - victim_parents
        assert mine and all(r.info.status != "RUNNING" for r in runs if r.info.run_id in mine)
        assert not [r.info.run_id for r in trial_runs(runs) if r.info.status == "RUNNING"
                    and r.data.tags.get(TAG_PARENT) in mine]
        assert {tr.number for tr in load_study(storage_url, name).trials
                if tr.state == TrialState.RUNNING} <= left_running

        finisher = t.run("worker", "--study", name, "--worker-id", 3, *common,
                         name="finisher", timeout=240)
        assert finisher.returncode == 0, finisher.stderr[-3000:]
    finally:
        t.close()

    study = load_study(storage_url, name)
    trials = {tr.number: tr for tr in study.trials}
    states = Counter(tr.state for tr in trials.values())
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    assert budget_state(study) == (TRIALS, 0, 0)

    # The victim's logged trials were told from MLflow, not lost and trained again.
    retried = {Retry.retried_trial_number(tr) for tr in trials.values()} - {None}
    for n, run in logged.items():
        assert trials[n].state == TrialState.COMPLETE, (n, trials[n].state)
        assert "recovered" in trials[n].user_attrs
        assert n not in retried
        assert math.isclose(trials[n].value, run.data.metrics["cv_accuracy"], abs_tol=1e-9)
        # Reported values as a trial told by its own worker has them (none without a pruner).
        told = next(tr for tr in trials.values()
                    if tr.state == TrialState.COMPLETE and "recovered" not in tr.user_attrs)
        assert trials[n].intermediate_values.keys() == told.intermediate_values.keys()

    runs = experiment_runs(client, name)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    per_trial = {}
    for r in trial_runs(runs):
        per_trial.setdefault(int(r.data.tags[TAG_TRIAL]), []).append(r)
    lost = lost_numbers(list(trials.values()))
    for n, tr in trials.items():
        finished = [r for r in per_trial.get(n, []) if r.info.status == "FINISHED"]
        if tr.state == TrialState.FAIL:
            assert not finished, f"FAIL trial {n} has a FINISHED run"
            continue
        assert n not in lost
        assert len(per_trial[n]) == 1 and len(finished) == 1, (n, per_trial.get(n))
        run = finished[0]
        assert run.info.run_id == tr.user_attrs["mlflow_run_id"]
        for key, value in tr.params.items():
            assert math.isclose(float(run.data.params[key]), float(value), rel_tol=1e-6)
        assert math.isclose(tr.value, run.data.metrics["cv_accuracy"], abs_tol=1e-9)
    assert all(p.info.status != "RUNNING" for p in parent_runs(runs))
