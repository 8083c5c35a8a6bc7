"""Pruning and early stopping end to end: trials trained in segments, pruned trials
stopped, the stores agreeing. Read back through Optuna's and MLflow's own clients."""

from __future__ import annotations

import threading

import numpy as np
import optuna
from optuna.trial import TrialState

import tuner
from e2e import iris_spec, load_study, mlflow_client, parent_runs, runs_of, trial_runs
from tuner.execution import sweep as sweep_module
from tuner.execution.session import open_sweep
from tuner.inputs.resolve import resolve_inputs

EPOCHS = 8
HALVING = {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2}


def pruning_spec(name, **search):
    spec = iris_spec(name, method="random", trials=8, batch=4,
                     fixed={"epochs": EPOCHS}, space={"learning_rate": {
                         "low": 1e-3, "high": 0.5, "log": True}})
    spec["search"].update({"pruner": HALVING, **search})
    return spec


def history(client, run_id, key):
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_pruned_trials_stop_and_both_stores_agree(results_dir):
    seen = []
    spec, dataset = resolve_inputs(pruning_spec("iris-prune"))
    sweep = open_sweep(spec, dataset)
    outcome = sweep.run(progress=seen.append)
    sweep.finish(outcome, refit=False)

    study = load_study(results_dir, "iris-prune")
    client = mlflow_client(results_dir)
    states = [t.state for t in study.trials]
    assert len(states) == 8 and TrialState.RUNNING not in states
    assert states.count(TrialState.PRUNED) >= 2 and TrialState.COMPLETE in states
    assert seen[-1].pruned == states.count(TrialState.PRUNED)

    trained = 0
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        curve = history(client, run.info.run_id, "val_accuracy")
        # Optuna's intermediate values are the MLflow points, step for step.
        assert curve.keys() == t.intermediate_values.keys()
        for step, value in t.intermediate_values.items():
            assert abs(curve[step] - value) < 1e-6
        if t.state == TrialState.PRUNED:
            assert run.info.status == "KILLED" and len(curve) < EPOCHS
            assert max(curve) == max(t.intermediate_values)  # ends where it was pruned
        else:
            assert run.info.status == "FINISHED" and sorted(curve) == list(range(EPOCHS))
            assert t.value == run.data.metrics["cv_accuracy"] == curve[EPOCHS - 1]
        trained += len(curve)

    parent = parent_runs(runs_of(results_dir, "iris-prune"))[0].data.metrics
    # A pruned trial trains no further epoch: every epoch trained is on some curve.
    assert parent["trial_epochs_trained"] == trained < parent["trial_epochs_unpruned"]
    assert parent["trial_epochs_unpruned"] == 8 * EPOCHS


def test_early_stopping_stops_at_its_epoch_and_refits_that_long(results_dir):
    # No epoch beats the first by 10: every trial stops after epoch 1, its value is
    # epoch 0's, and the refit trains 1 epoch.
    spec = iris_spec("iris-early", fixed={"epochs": EPOCHS})
    spec["search"]["early_stopping"] = {"patience": 1, "min_delta": 10.0}
    result = tuner.tune(spec)
    study = load_study(results_dir, "iris-early")
    client = mlflow_client(results_dir)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["refit_epochs"] == 1
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        curve = history(client, run.info.run_id, "val_accuracy")
        assert sorted(curve) == [0, 1]
        assert abs(t.value - curve[0]) < 1e-6
        assert run.data.tags["best_epoch"] == "0"
        assert run.data.tags["early_stopped_at_epoch"] == "1"
    parent = parent_runs(runs_of(results_dir, "iris-early"))[0].data.metrics
    assert parent["trial_epochs_trained"] == 2 * len(study.trials)
    assert result.best_model is not None


def test_a_sweep_interrupted_between_rungs_resumes(results_dir, monkeypatch):
    stop = threading.Event()
    original = sweep_module.Sweep._run_segment

    def one_segment_then_stop(self, *args):
        original(self, *args)
        stop.set()  # as the first Ctrl-C or SIGTERM does

    monkeypatch.setattr(sweep_module.Sweep, "_run_segment", one_segment_then_stop)
    spec, dataset = resolve_inputs(pruning_spec("iris-rungs"))
    first = open_sweep(spec, dataset)
    first.finish(first.run(stop=stop), refit=False)
    study = load_study(results_dir, "iris-rungs")
    lost = [t for t in study.trials if "lost" in t.user_attrs]
    assert lost and all(t.state == TrialState.FAIL for t in lost)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(len(t.intermediate_values) == 2 for t in lost)  # stopped after one rung

    monkeypatch.setattr(sweep_module.Sweep, "_run_segment", original)
    second = open_sweep(spec, dataset)
    second.finish(second.run(), refit=False)

    study = load_study(results_dir, "iris-rungs")
    lost_numbers = {t.number for t in lost}
    counted = [t for t in study.trials if t.number not in lost_numbers]
    assert len(counted) == 8 and all(t.state.is_finished() for t in counted)
    # A retry trains with its lost trial's keys: the same curve, step for step.
    by_origin = {t.system_attrs["failed_trial"]: t for t in counted
                 if "failed_trial" in t.system_attrs}
    for t in lost:
        retry = by_origin[t.number]
        for step, value in t.intermediate_values.items():
            assert abs(retry.intermediate_values[step] - value) < 1e-6
    client = mlflow_client(results_dir)
    runs = trial_runs(runs_of(results_dir, "iris-rungs"))
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    for t in counted:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == {TrialState.COMPLETE: "FINISHED",
                                   TrialState.PRUNED: "KILLED"}.get(t.state, "FAILED")
    assert len(finished) == sum(t.state == TrialState.COMPLETE for t in counted)
    assert np.isfinite(optuna.load_study(study_name="iris-rungs",
                                         storage=study._storage).best_value)
