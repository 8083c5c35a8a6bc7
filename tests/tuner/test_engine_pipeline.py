"""The engine writes a program's trials to MLflow while the next program trains, and
tells Optuna only after every trial of the batch is logged."""

from __future__ import annotations

import threading

import tuner
from e2e import iris_spec, load_study, mlflow_client
from tuner.execution.executor import Executor
from tuner.tracking import SweepTracker


def test_trials_are_logged_while_the_next_program_trains(results_dir, monkeypatch):
    events: list[tuple[str, tuple[int, ...]]] = []
    first_logged = threading.Event()
    log_trials, run_group = SweepTracker.log_trials, Executor._run_group

    def logging(self, records, **kwargs):
        out = log_trials(self, records, **kwargs)
        events.append(("logged", tuple(r.number for r in records)))
        first_logged.set()
        return out

    def training(self, members, *args):
        if any(kind == "trained" for kind, _ in events):
            # A later program: the first program's trials are written meanwhile. Done
            # after all training instead, this wait would time out.
            assert first_logged.wait(120), "the first program's trials were not logged"
        out = run_group(self, members, *args)
        events.append(("trained", tuple(c.batch_size for c in members)))
        return out

    monkeypatch.setattr(SweepTracker, "log_trials", logging)
    monkeypatch.setattr(Executor, "_run_group", training)
    # Two batch sizes in one batch of trials: two programs.
    spec = iris_spec("iris-pipeline", space={"batch_size": [16, 32]}, batch=2)
    del spec["fixed"]["batch_size"]
    result = tuner.tune(spec, refit=False)

    kinds = [kind for kind, _ in events]
    assert kinds == ["trained", "logged", "trained", "logged"]
    study = load_study(results_dir, "iris-pipeline")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = mlflow_client(results_dir)
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["cv_accuracy"] == t.value
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(3))
    assert result.best_value == study.best_value
