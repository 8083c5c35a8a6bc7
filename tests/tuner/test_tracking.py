"""tuner.tracking: the MLflow layout contract, read back through MlflowClient."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tuner.stores import default_artifact_location, default_tracking_uri
from tuner.tracking import SweepTracker, TrialRecord
from tuner.tracking.records import batches as pack_batches

F, E = 3, 8
PNG = b"\x89PNG\r\n\x1a\n"


def curves(seed: int, folds: int = F, epochs: int = E) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(epochs) / 4.0)
    return {
        "train_loss": decay + 0.1 * rng.random((folds, epochs)),
        "val_loss": decay + 0.2 * rng.random((folds, epochs)),
        "val_accuracy": 1 - decay / 2 + 0.05 * rng.random((folds, epochs)),
    }


def make_study(n_complete: int, params: tuple[str, ...] = ("learning_rate", "width")):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for _ in range(n_complete):
        t = study.ask()
        x = t.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        if "width" in params:
            t.suggest_categorical("width", [32, 64, 128])
        study.tell(t, 1.0 - abs(np.log10(x) + 2) / 3)
    return study


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "mlruns"
    return default_tracking_uri(root), default_artifact_location(root)


@pytest.fixture(scope="module")
def client(store):
    return MlflowClient(tracking_uri=store[0])


def tracker(store, name: str, metric: str = "accuracy") -> SweepTracker:
    return SweepTracker(store[0], name, metric, artifact_location=store[1])


@pytest.fixture(scope="module")
def sweep(store):
    """One whole sweep: COMPLETE, FAIL (diverged), PRUNED and a retry, then finish."""
    tr = tracker(store, "contract")
    spec = "name: contract\nsearch: {method: tpe, trials: 4}\n"
    parent = tr.start_sweep(spec, {"method": "tpe", "trials": 4, "batch": 2},
                            {"tuner.spec_hash": "abc123"}, run_name="sweep-1")
    diverged = curves(2)
    diverged["val_loss"][1, 5:] = np.nan  # fold 1 diverges at epoch 5
    diverged["train_loss"][1, 5:] = np.inf
    diverged["val_accuracy"][1, 5:] = np.nan
    pruned = {k: v[:, :4] for k, v in curves(3).items()}  # stopped after 4 epochs
    records = [
        TrialRecord(0, {"learning_rate": 0.01, "width": 64, "epochs": E}, TrialState.COMPLETE,
                    0.91, 0.02, curves(0), extra_tags={"tuner.batch": "0"}),
        TrialRecord(1, {"learning_rate": 0.003, "width": 128, "epochs": E}, TrialState.COMPLETE,
                    0.87, 0.03, curves(1)),
        TrialRecord(2, {"learning_rate": 0.9, "width": 32, "epochs": E}, TrialState.FAIL, None, None,
                    diverged, fail_reason="diverged: loss nan at epoch 5"),
        TrialRecord(3, {"learning_rate": 0.05, "width": 64, "epochs": E}, TrialState.PRUNED, None, None,
                    pruned),
        TrialRecord(4, {"learning_rate": 0.02, "width": 64, "epochs": E}, TrialState.COMPLETE,
                    0.89, 0.01, curves(4), retry_of=1),
    ]
    ids = tr.log_trials(records[:2])
    ids |= tr.log_trials(records[2:])
    df = pd.DataFrame({"number": [r.number for r in records],
                       "value": [r.value for r in records],
                       "state": [r.state for r in records]})
    tr.finish_sweep(df, records[0], make_study(6))
    return tr, parent, ids, records


def test_experiment_is_tagged_and_stores_artifacts_under_root(sweep, client, store):
    tr, *_ = sweep
    exp = client.get_experiment(tr.experiment_id)
    assert exp.name == "contract"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == store[1]
    assert client.get_experiment_by_name("contract").experiment_id == tr.experiment_id
    # a second tracker on the same name reuses the experiment
    assert tracker(store, "contract").experiment_id == tr.experiment_id


def test_trial_runs_are_nested_with_contract_names_tags_params(sweep, client):
    tr, parent, ids, records = sweep
    runs = client.search_runs([tr.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in runs} == set(ids.values())
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert set(by_number) == {0, 1, 2, 3, 4}
    for n, run in by_number.items():
        assert run.info.run_name == f"trial-{n}"
        assert run.data.params == {k: str(v) for k, v in records[n].params.items()}
        assert ids[n] == run.info.run_id
    assert by_number[4].data.tags["retry_of_trial"] == "1"
    assert "retry_of_trial" not in by_number[0].data.tags
    assert by_number[0].data.tags["tuner.batch"] == "0"


def test_statuses_fail_reason_and_cv_metrics(sweep, client):
    _, _, ids, _ = sweep
    status = {n: client.get_run(r).info.status for n, r in ids.items()}
    assert status == {0: "FINISHED", 1: "FINISHED", 2: "FAILED", 3: "KILLED", 4: "FINISHED"}
    failed = client.get_run(ids[2])
    assert failed.data.tags["fail_reason"] == "diverged: loss nan at epoch 5"
    assert "fail_reason" not in client.get_run(ids[0]).data.tags
    done = client.get_run(ids[0]).data.metrics
    assert done["cv_accuracy"] == pytest.approx(0.91)
    assert done["cv_accuracy_std"] == pytest.approx(0.02)
    for n in (2, 3):  # no cv metrics for FAIL / PRUNED
        assert "cv_accuracy" not in client.get_run(ids[n]).data.metrics


def test_one_point_per_epoch_fold_means_and_fold_curves(sweep, client):
    _, _, ids, records = sweep
    run_id, c = ids[0], records[0].curves
    for key in ("train_loss", "val_loss", "val_accuracy"):
        hist = client.get_metric_history(run_id, key)
        assert [m.step for m in hist] == list(range(E))
        np.testing.assert_allclose([m.value for m in hist], c[key].mean(axis=0))
    for k in range(F):
        for key in ("val_loss", "val_accuracy"):
            hist = client.get_metric_history(run_id, f"fold{k}_{key}")
            assert [m.step for m in hist] == list(range(E))
            np.testing.assert_allclose([m.value for m in hist], c[key][k])
    keys = set(client.get_run(run_id).data.metrics)
    assert f"fold{F}_val_loss" not in keys and "fold0_train_loss" not in keys


def test_diverged_curves_stop_at_last_finite_point(sweep, client):
    _, _, ids, _ = sweep
    steps = lambda key: [m.step for m in client.get_metric_history(ids[2], key)]  # noqa: E731
    assert steps("fold0_val_loss") == list(range(E))
    assert steps("fold1_val_loss") == list(range(5))
    assert steps("val_loss") == steps("train_loss") == steps("val_accuracy") == list(range(5))
    assert steps("fold1_val_accuracy") == list(range(5))
    # a pruned trial logs the epochs it ran
    assert [m.step for m in client.get_metric_history(ids[3], "val_loss")] == list(range(4))


def test_parent_run_params_artifacts_plots(sweep, client, tmp_path):
    tr, parent, _, _ = sweep
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.info.run_name == "sweep-1"
    assert run.data.params == {"method": "tpe", "trials": "4", "batch": "2"}
    assert run.data.tags["tuner.spec_hash"] == "abc123"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.metrics["best_accuracy"] == pytest.approx(0.91)
    assert run.data.tags["best_trial_number"] == "0"
    top = {a.path for a in client.list_artifacts(parent)}
    assert top == {"spec.yaml", "trials.csv", "plots"}
    pngs = {a.path for a in client.list_artifacts(parent, "plots")}
    assert pngs == {"plots/optimization_history.png", "plots/param_importances.png",
                    "plots/best_trial_curves.png"}
    local = client.download_artifacts(parent, "", str(tmp_path))
    with open(os.path.join(local, "spec.yaml")) as fh:
        assert fh.read().startswith("name: contract")
    df = pd.read_csv(os.path.join(local, "trials.csv"))
    assert list(df["number"]) == [0, 1, 2, 3, 4] and list(df.columns) == ["number", "value", "state"]
    for p in pngs:
        with open(os.path.join(local, p), "rb") as fh:
            assert fh.read(8) == PNG
    # artifacts live under the store's root, not in the cwd
    assert run.info.artifact_uri.startswith(tr.artifact_location + "/")


def test_more_than_1000_values_in_one_trial_are_chunked(store, client, monkeypatch):
    tr = tracker(store, "chunking")
    tr.start_sweep("name: chunking\n", {}, {})
    calls = []
    real = tr.client.log_batch

    def spy(run_id, metrics=(), params=(), tags=()):
        calls.append((len(metrics), len(params), len(tags)))
        return real(run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(tr.client, "log_batch", spy)
    folds, epochs = 10, 60
    params = {f"p{i}": i for i in range(150)}  # > 100 params per call too
    rec = TrialRecord(0, params, TrialState.COMPLETE, 0.5, 0.1, curves(9, folds, epochs))
    run_id = tr.log_trials([rec])[0]
    expected = 2 + 3 * epochs + 2 * folds * epochs  # cv_* + means + per-fold curves = 1382
    assert sum(c[0] for c in calls) == expected and sum(c[1] for c in calls) == 150
    assert all(m <= 1000 and p <= 100 and t <= 100 and m + p + t <= 1000 for m, p, t in calls)
    assert len(calls) == 2  # as few calls as the limits allow
    for k in (0, 9):
        hist = client.get_metric_history(run_id, f"fold{k}_val_accuracy")
        assert [m.step for m in hist] == list(range(epochs))
    assert len(client.get_run(run_id).data.params) == 150


def test_batches_respect_every_limit():
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric("m", 1.0, 0, i) for i in range(2500)]
    params = [Param(f"p{i}", "x" * 6000) for i in range(250)]
    tags = [RunTag(f"t{i}", "y") for i in range(120)]
    batches = list(pack_batches(metrics, params, tags))
    assert sum(len(b[0]) for b in batches) == 2500
    assert sum(len(b[1]) for b in batches) == 250
    assert sum(len(b[2]) for b in batches) == 120
    for m, p, t in batches:
        assert len(m) <= 1000 and len(p) <= 100 and len(t) <= 100 and len(m) + len(p) + len(t) <= 1000
        size = sum(len(x.key) + len(x.value) for x in p + t) + 100 * len(m)
        assert size < 1_000_000  # the REST request limit, in bytes of JSON
    assert list(pack_batches([], [], [])) == []


def test_long_param_values_are_cut_whatever_the_env(store, client, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # MLflow would raise
    tr = tracker(store, "long-values")
    rec = TrialRecord(0, {"layers": "x" * 7000}, TrialState.FAIL, None, None, {},
                      fail_reason="boom " * 3000)
    run = client.get_run(tr.log_trials([rec])[0])
    assert run.data.params["layers"] == "x" * 6000
    assert len(run.data.tags["fail_reason"]) == 8000 and run.info.status == "FAILED"


def test_bad_state_writes_nothing(store, client):
    tr = tracker(store, "bad-state")
    good = TrialRecord(0, {}, TrialState.COMPLETE, 1.0, 0.0, {})
    with pytest.raises(ValueError, match="state"):
        tr.log_trials([good, TrialRecord(1, {}, "RUNNING", None, None, {})])
    assert client.search_runs([tr.experiment_id]) == []


def test_close_runs_kills_only_running_ones(store, client):
    tr = tracker(store, "close")
    lost = client.create_run(tr.experiment_id, run_name="trial-7").info.run_id
    done = tr.log_trials([TrialRecord(8, {}, TrialState.COMPLETE, 1.0, 0.0, {})])[8]
    tr.close_runs([lost, done], reason="worker lost")
    assert client.get_run(lost).info.status == "KILLED"
    assert client.get_run(lost).data.tags["fail_reason"] == "worker lost"
    assert client.get_run(done).info.status == "FINISHED"
    assert "fail_reason" not in client.get_run(done).data.tags
    with pytest.raises(ValueError):
        tr.close_runs([lost], status="RUNNING")


def test_plots_are_skipped_with_a_warning_not_an_error(store, client, caplog):
    tr = tracker(store, "few-trials")
    parent = tr.start_sweep("name: few-trials\n", {"trials": 1}, {})
    best = TrialRecord(0, {"learning_rate": 0.01}, TrialState.COMPLETE, 0.5, 0.0, {})  # no curves
    with caplog.at_level(logging.WARNING, logger="tuner"):
        tr.finish_sweep(pd.DataFrame({"number": [0]}), best, make_study(1, ("learning_rate",)),
                        status="KILLED")
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3, skipped
    assert client.list_artifacts(parent, "plots") == []
    assert client.get_run(parent).info.status == "KILLED"
    # one varying param: history drawn, importances skipped
    tr2 = tracker(store, "one-param")
    parent2 = tr2.start_sweep("name: one-param\n", {}, {})
    tr2.finish_sweep(pd.DataFrame(), None, make_study(5, ("learning_rate",)))
    assert {a.path for a in client.list_artifacts(parent2, "plots")} == {
        "plots/optimization_history.png"}


def test_model_logger_runs_inside_parent_run_and_restores_globals(store, client, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    tr = tracker(store, "model")
    parent = tr.start_sweep("name: model\n", {}, {})
    seen = []

    def logger(run_id):
        seen.append((run_id, mlflow.active_run().info.run_id, mlflow.get_tracking_uri()))
        mlflow.log_text("weights", "model/weights.txt")

    tr.finish_sweep(None, None, None, model_logger=logger)
    assert seen == [(parent, parent, store[0])]
    assert {a.path for a in client.list_artifacts(parent, "model")} == {"model/weights.txt"}
    assert client.get_run(parent).info.status == "FINISHED"
    assert mlflow.active_run() is None
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ

    # an error in the logger still terminates the run, then propagates
    parent = tr.start_sweep("name: model\n", {}, {})
    with pytest.raises(RuntimeError, match="no model"):
        tr.finish_sweep(None, None, None, status="FINISHED",
                        model_logger=lambda _: (_ for _ in ()).throw(RuntimeError("no model")))
    assert client.get_run(parent).info.status == "FINISHED"
    assert mlflow.get_tracking_uri() == before


def test_deleted_experiment_is_restored(store, client):
    eid = tracker(store, "deleted").experiment_id
    client.delete_experiment(eid)
    assert tracker(store, "deleted").experiment_id == eid
    assert client.get_experiment(eid).lifecycle_stage == "active"


def test_concurrent_trackers_create_one_experiment_threads(tmp_path):
    root = tmp_path / "mlruns"  # a fresh store: creation races with schema creation too
    uri = default_tracking_uri(root)
    ids, errors = [], []
    barrier = threading.Barrier(4)

    def create():
        try:
            barrier.wait()
            ids.append(SweepTracker(uri, "race", "accuracy",
                                    artifact_location=default_artifact_location(root)).experiment_id)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 4 and len(set(ids)) == 1
    exps = [e for e in MlflowClient(uri).search_experiments() if e.name == "race"]
    assert len(exps) == 1 and exps[0].tags["mlflow.experimentKind"] == "custom_model_development"


def _create_in_process(uri: str, artifacts: str, q) -> None:
    try:
        q.put(SweepTracker(uri, "race", "accuracy", artifact_location=artifacts).experiment_id)
    except Exception as e:  # noqa: BLE001
        q.put(f"error: {type(e).__name__}: {e}")


def test_concurrent_trackers_on_a_fresh_store_processes(tmp_path):
    """Without the init lock, two processes migrating a fresh sqlite store both fail."""
    root = tmp_path / "mlruns"
    args = (default_tracking_uri(root), default_artifact_location(root))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_create_in_process, args=(*args, q)) for _ in range(2)]
    for p in procs:
        p.start()
    out = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(not str(o).startswith("error") for o in out), out
    assert len(set(out)) == 1


def test_default_artifact_location_sits_next_to_the_sqlite_file(store, client):
    tr = SweepTracker(store[0], "defaults", "mse")  # no artifact_location given
    assert tr.artifact_location == store[1]  # <root>/artifacts, never ./mlartifacts
    assert client.get_experiment(tr.experiment_id).artifact_location == store[1]
    assert repr(tr).startswith("SweepTracker(")
