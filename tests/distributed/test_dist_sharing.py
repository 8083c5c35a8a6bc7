"""Several processes on one study: a race on a fresh database, grid points trained once,
different proposals per worker, data checks, and credentials that never leak."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import optuna
import pandas as pd
import pytest
from dist_helpers import (
    TAG_PARENT, TAG_TRIAL, create_study, experiment_runs, load_study, mlflow_client,
    one_error_line, parent_runs, study_exists, trial_runs, unique, wait_for,
)
from optuna.trial import TrialState
from sklearn.datasets import load_iris

from tuner.search.study import normalise_url

# Optuna marks the heartbeat and retry APIs experimental; they are what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _trained(runs) -> list:
    """Trial runs that trained (closed FINISHED)."""
    return [r for r in trial_runs(runs) if r.info.status == "FINISHED"]


def _point(run, names) -> tuple:
    return tuple(run.data.params[n] for n in names)


def _contributors(runs) -> Counter:
    """Trained trials per sweep (parent) run, i.e. per process."""
    return Counter(r.data.tags[TAG_PARENT] for r in _trained(runs))


# --------------------------------------------------------------------------- race
def test_two_processes_starting_together_on_a_fresh_database(tuner, write_spec, fresh_db,
                                                              mlflow_server):
    """Both create tables and the study at the same moment: both succeed, one study."""
    url = fresh_db("race")
    name = unique("race")
    spec = write_spec(name, search={"trials": 4, "batch": 2})
    procs = [tuner.start("run", spec, "--storage", url, "--tracking-uri", mlflow_server,
                         "--no-refit", synced=True, name=f"run{i}") for i in range(2)]
    tuner.release(procs)
    for p in procs:
        tuner.wait(p, 150)
    for p in procs:
        assert p.returncode == 0, tuner.describe(p)
    assert optuna.get_all_study_names(normalise_url(url)) == [name]
    study = load_study(url, name)
    complete = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.user_attrs.get("lost", "").startswith("over budget") for t in others)
    runs = experiment_runs(mlflow_client(mlflow_server), name)
    assert len(parent_runs(runs)) == 2
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in _trained(runs)) == complete


# --------------------------------------------------------------------------- proposals
def test_grid_workers_never_train_a_point_twice(tuner, write_spec, storage_url,
                                                mlflow_server):
    name = unique("grid")
    lrs, l2s = [0.003, 0.01, 0.03], [1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]
    spec = write_spec(name, search={"method": "grid", "trials": 12, "batch": 2},
                      space={"learning_rate": lrs, "l2": l2s})
    create_study(spec, storage_url)
    common = ["--storage", storage_url, "--tracking-uri", mlflow_server]
    procs = [tuner.start("run", spec, "--no-refit", *common, synced=True, name="run")]
    procs += [tuner.start("worker", "--study", name, "--worker-id", i, *common, synced=True,
                          name=f"worker{i}") for i in (1, 2)]
    tuner.release(procs)
    for p in procs:
        tuner.wait(p, 150)
        assert p.returncode == 0, tuner.describe(p)

    study = load_study(storage_url, name)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    grid = {(lr, l2) for lr, l2 in itertools.product(lrs, l2s)}
    assert len(complete) == 12
    assert {(t.params["learning_rate"], t.params["l2"]) for t in complete} == grid
    runs = experiment_runs(mlflow_client(mlflow_server), name)
    trained = [_point(r, ("learning_rate", "l2")) for r in _trained(runs)]
    assert len(trained) == 12 and len(set(trained)) == 12, Counter(trained)
    assert len(_contributors(runs)) >= 2, "the workers did not share the grid"


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_workers_draw_different_proposals(tuner, write_spec, storage_url, mlflow_server,
                                          method):
    """Two processes start on one empty study at the same moment: with a seed per
    worker their first proposals differ (seeded alike, they would be the same)."""
    name = unique(method)
    spec = write_spec(name, search={"method": method, "trials": 8, "batch": 2})
    create_study(spec, storage_url)
    common = ["--storage", storage_url, "--tracking-uri", mlflow_server]
    procs = [tuner.start("run", spec, "--no-refit", *common, synced=True, name="run"),
             tuner.start("worker", "--study", name, "--worker-id", 1, *common, synced=True,
                         name="worker")]
    tuner.release(procs)
    for p in procs:
        tuner.wait(p, 150)
        assert p.returncode == 0, tuner.describe(p)
    runs = experiment_runs(mlflow_client(mlflow_server), name)
    assert len(_contributors(runs)) == 2, "one process trained nothing"
    points = [_point(r, ("learning_rate", "l2")) for r in _trained(runs)]
    assert len(points) == 8
    assert len(set(points)) == 8, f"workers proposed the same points: {Counter(points)}"
    study = load_study(storage_url, name)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 8


# --------------------------------------------------------------------------- data
def test_worker_with_different_data_is_refused(tuner, write_spec, tmp_path, storage_url,
                                               mlflow_server):
    X, y = load_iris(return_X_y=True, as_frame=True)
    csv = tmp_path / "iris.csv"
    X.assign(species=y).to_csv(csv, index=False)
    name = unique("data")
    spec = write_spec(name, data={"source": f"csv:{csv.name}", "target": "species"})
    create_study(spec, storage_url)  # stores the spec (with the CSV's path) and its data

    df = pd.read_csv(csv)
    df.iloc[0, 0] += 1.0  # the file changes under the study
    df.to_csv(csv, index=False)
    line = one_error_line(tuner.run("worker", "--study", name, "--storage", storage_url,
                                    "--tracking-uri", mlflow_server))
    assert "different data" in line and name in line
    # Refused before anything was written.
    assert mlflow_client(mlflow_server).get_experiment_by_name(name) is None
    assert load_study(storage_url, name).trials == []


# --------------------------------------------------------------------------- credentials
def test_credentials_never_printed_logged_or_stored(pg, tuner, write_spec, mlflow_server):
    """A storage URL with a password (trust auth ignores it; the URL still carries it) and
    a tracking URI with basic-auth credentials: neither secret shows on screen, in the
    study or in MLflow (params, tags, spec.yaml, trials.csv), for `run` and `worker`."""
    db_pw, http_pw = "s3cretDbPw", "t0kenHttpPw"
    role = pg.create_role("pw", db_pw)
    storage = pg.url(pg.create("pw", owner=role), userinfo=f"{role}:{db_pw}")
    tracking = mlflow_server.replace("http://", f"http://tuner:{http_pw}@")
    name = unique("secret")
    spec = write_spec(name, search={"trials": 4, "batch": 2})

    first = tuner.start("run", spec, "--storage", storage, "--tracking-uri", tracking,
                        "--no-refit", name="run")
    wait_for("the study", lambda: study_exists(storage, name), 90, procs=((tuner, first),))
    joined = tuner.start("worker", "--study", name, "--storage", storage,
                         "--tracking-uri", tracking, name="worker")
    for p in (first, joined):
        tuner.wait(p, 150)
        assert p.returncode == 0, tuner.describe(p)
        out, err = tuner.output(p)
        for secret in (db_pw, http_pw):
            assert secret not in out + err, f"{p.name} printed a password"
    assert "tuner:***@127.0.0.1" in tuner.output(first)[0]  # the link, redacted

    study = load_study(storage, name)
    study_system_attrs = study._storage.get_study_system_attrs(study._study_id)
    stored = json.dumps([study.user_attrs, study_system_attrs,
                         [(t.user_attrs, t.system_attrs) for t in study.trials]], default=str)
    client = mlflow_client(mlflow_server)
    runs = experiment_runs(client, name)
    assert len(parent_runs(runs)) == 2 and len(_trained(runs)) == 4
    logged = [client.get_experiment_by_name(name).tags]
    artifacts = 0
    for run in runs:
        logged += [run.data.params, run.data.tags, run.info.run_name]
        for art in client.list_artifacts(run.info.run_id):
            if art.path in ("spec.yaml", "trials.csv"):
                path = client.download_artifacts(run.info.run_id, art.path, str(tuner.cwd))
                logged.append(open(path).read())
                artifacts += 1
    assert artifacts >= 4  # both sweep runs: spec.yaml and trials.csv
    logged_text = json.dumps(logged, default=str)
    for secret in (db_pw, http_pw):
        assert secret not in stored
        assert secret not in logged_text


# --------------------------------------------------------------------------- pruning
def test_two_workers_with_hyperband_finish_the_exact_budget(tuner, write_spec, storage_url,
                                                            mlflow_server):
    """Hyperband's brackets live in the shared study (Optuna's trial attributes), so two
    processes prune against one another; together they finish exactly the budget, every
    counted trial with one closed run whose curve matches its intermediate values."""
    name = unique("hyperband")
    spec = write_spec(name, search={"method": "random", "trials": 10, "batch": 3,
                                    "pruner": {"kind": "hyperband", "min_resource": 1,
                                               "reduction_factor": 2}},
                      fixed={"epochs": 6})
    create_study(spec, storage_url)
    common = ["--storage", storage_url, "--tracking-uri", mlflow_server]
    procs = [tuner.start("run", spec, "--no-refit", *common, synced=True, name="run"),
             tuner.start("worker", "--study", name, "--worker-id", 1, *common, synced=True,
                         name="worker")]
    tuner.release(procs)
    for p in procs:
        tuner.wait(p, 180)
        assert p.returncode == 0, tuner.describe(p)

    study = load_study(storage_url, name)
    counted = [t for t in study.trials if "lost" not in t.user_attrs]
    assert len(counted) == 10 and all(t.state.is_finished() for t in counted)
    assert any(t.state == TrialState.PRUNED for t in counted)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    client = mlflow_client(mlflow_server)
    runs = experiment_runs(client, name)
    assert len({r.data.tags[TAG_PARENT] for r in trial_runs(runs)}) == 2  # both trained
    status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
              TrialState.FAIL: "FAILED"}
    for t in counted:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == status[t.state]
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                     "val_accuracy")}
        assert curve.keys() == t.intermediate_values.keys()
