"""End to end through the ``tuner`` command line, on iris with a few epochs.

One real ``tuner run`` subprocess makes a grid sweep that most tests here read back
(with ``optuna.load_study`` and ``mlflow.MlflowClient``, never with the project's code);
the checks of bad input and of other commands run ``tuner.cli.main`` in this process,
plus a couple of real subprocesses to see the exact stderr of a process.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris

from e2e import (
    EPOCHS, FOLDS, GRID_SPACE, db_files, invoke, iris_spec, load_study, mlflow_client,
    mlflow_uri, parent_runs, run_cli, runs_of, stderr_lines, tracking_uri, trial_runs,
    write_spec,
)

GRID_NAME = "iris-grid"


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, e2e_env):
    """``tuner run`` of a 2 x 2 grid in a fresh directory (nothing seeded: the stores are
    created by the command itself)."""
    work = tmp_path_factory.mktemp("grid")
    spec = iris_spec(GRID_NAME, method="grid")
    spec_path = write_spec(work / "grid.yaml", spec)
    proc = run_cli(["run", spec_path], cwd=work, env=e2e_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc, spec


def _fixed_params(spec: dict) -> dict:
    return dict(spec["fixed"])


# --------------------------------------------------------------------------- tuner run
def test_run_grid_prints_table_and_ui_link(grid_run):
    work, proc, _ = grid_run
    exp = mlflow_client(work).get_experiment_by_name(GRID_NAME)
    assert f"best trials of {GRID_NAME} (accuracy)" in proc.stdout
    assert "learning_rate" in proc.stdout and "l2" in proc.stdout
    assert "trials: 4 complete" in proc.stdout
    assert (f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
            in proc.stdout)
    assert "mlflow ui --backend-store-uri" in proc.stdout
    assert sorted(p.name for p in (work / "mlruns").glob("*.db")) == ["mlflow.db", "optuna.db"]
    (parent,) = parent_runs(runs_of(work, GRID_NAME))
    assert f"parent run: {parent.info.run_id}" in proc.stdout
    assert f"model:      runs:/{parent.info.run_id}/model" in proc.stdout


def test_run_grid_optuna_trials(grid_run):
    work, _, _ = grid_run
    study = load_study(work, GRID_NAME)
    trials = study.trials
    assert len(trials) == 4
    assert all(t.state.name == "COMPLETE" for t in trials)
    points = [(t.params["learning_rate"], t.params["l2"]) for t in trials]
    assert sorted(points) == sorted(itertools.product(GRID_SPACE["learning_rate"],
                                                      GRID_SPACE["l2"]))
    assert all(t.user_attrs.get("mlflow_run_id") for t in trials)
    assert len({t.user_attrs["mlflow_run_id"] for t in trials}) == 4
    assert study.direction.name == "MAXIMIZE"
    assert all(0.0 <= t.value <= 1.0 for t in trials)


def test_run_grid_mlflow_trial_runs(grid_run):
    work, _, spec = grid_run
    client = mlflow_client(work)
    exp = client.get_experiment_by_name(GRID_NAME)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = runs_of(work, GRID_NAME)
    parents = parent_runs(runs)
    assert len(parents) == 1
    parent = parents[0]
    study = load_study(work, GRID_NAME)
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    nested = trial_runs(runs)
    assert len(nested) == 4
    assert {r.info.run_id for r in nested} == set(by_run)
    for run in nested:
        t = by_run[run.info.run_id]
        assert run.info.run_name == f"trial-{t.number}"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        expected = {k: str(v) for k, v in {**_fixed_params(spec), **t.params}.items()}
        assert run.data.params == expected
        assert run.data.metrics["cv_accuracy"] == pytest.approx(t.value, abs=1e-12)
        assert "cv_accuracy_std" in run.data.metrics
        curves = ["train_loss", "val_loss", "val_accuracy"] + [
            f"fold{k}_{name}" for k in range(FOLDS)
            for name in ("val_loss", "val_accuracy")]
        for key in curves:
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(EPOCHS)), key
            assert all(math.isfinite(m.value) for m in history), key
        assert f"fold{FOLDS}_val_loss" not in run.data.metrics
        # the fold means are the mean of the folds' curves
        last = [client.get_metric_history(run.info.run_id, f"fold{k}_val_accuracy")
                for k in range(FOLDS)]
        final = np.mean([max(h, key=lambda m: m.step).value for h in last])
        assert final == pytest.approx(t.value, abs=1e-6)


def test_run_grid_parent_run_artifacts_and_model(grid_run, tmp_path):
    work, _, _ = grid_run
    client = mlflow_client(work)
    (parent,) = parent_runs(runs_of(work, GRID_NAME))
    study = load_study(work, GRID_NAME)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_accuracy"] == pytest.approx(study.best_value, abs=1e-12)
    root = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "trials.csv", "plots"} <= root  # MLflow 3 keeps models apart
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots and all(p.endswith(".png") for p in plots)
    assert "plots/optimization_history.png" in plots
    assert "plots/best_trial_curves.png" in plots

    local = Path(client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path)))
    assert yaml.safe_load(local.read_text())["name"] == GRID_NAME
    import pandas as pd

    csv = Path(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    table = pd.read_csv(csv)
    assert len(table) == 4 and set(table["state"]) == {"COMPLETE"}

    import mlflow

    # The signature names the data's own columns: the rows as scikit-learn gives them.
    X = load_iris(as_frame=True).data
    with tracking_uri(mlflow_uri(work)):
        model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
        pred = np.asarray(model.predict(X.astype(np.float32)))
    assert pred.shape == (150,)
    assert set(pred.tolist()) <= set(load_iris().target_names.tolist())


# --------------------------------------------------------------------------- same name
def test_different_spec_same_study_is_refused(grid_run, monkeypatch, capsys):
    work, _, _ = grid_run
    monkeypatch.chdir(work)
    before = len(runs_of(work, GRID_NAME))
    changed = iris_spec(GRID_NAME, method="grid",
                        space={"learning_rate": [0.05, 0.3], "l2": GRID_SPACE["l2"]})
    path = write_spec(work / "changed.yaml", changed)
    capsys.readouterr()
    assert invoke(["run", path]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert "space.learning_rate" in err[0] and "--study" in err[0]
    assert len(load_study(work, GRID_NAME).trials) == 4
    assert len(runs_of(work, GRID_NAME)) == before  # nothing was logged

    assert invoke(["run", path, "--study", "iris-grid-other", "--no-refit"]) == 0
    other = load_study(work, "iris-grid-other")
    assert len(other.trials) == 4 and all(t.state.name == "COMPLETE" for t in other.trials)
    assert {t.params["learning_rate"] for t in other.trials} == {0.05, 0.3}
    assert len(trial_runs(runs_of(work, "iris-grid-other"))) == 4
    assert len(load_study(work, GRID_NAME).trials) == 4


# --------------------------------------------------------------------------- tuner show
def test_show_prints_best_trials(grid_run, monkeypatch, capsys):
    work, _, _ = grid_run
    monkeypatch.chdir(work)
    study = load_study(work, GRID_NAME)
    capsys.readouterr()
    assert invoke(["show", GRID_NAME]) == 0
    out = capsys.readouterr().out
    assert f"best trials of {GRID_NAME} (accuracy)" in out
    assert f"{study.best_value:.4f}" in out
    assert "learning_rate" in out


def test_show_missing_study(grid_run, monkeypatch, capsys):
    work, _, _ = grid_run
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert invoke(["show", "missing"]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and "missing" in err[0], err


def test_show_without_database_creates_nothing(tmp_path, monkeypatch, capsys, e2e_env):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke(["show", "missing"]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad input
def _csv(tmp: Path, text: str) -> dict:
    """A csv data section; the file sits next to the spec (relative path)."""
    (tmp / "specs").mkdir(exist_ok=True)
    (tmp / "specs" / "data.csv").write_text(text)
    return {"source": "csv:data.csv", "target": "label"}


def _rows(n: int, label=lambda i: "ab"[i % 2], extra=lambda i: "") -> str:
    return "".join(f"{i * 0.1:.1f},{(i * 7) % 5}.0{extra(i)},{label(i)}\n" for i in range(n))


def _bad_case(case: str, tmp: Path) -> tuple[dict, tuple[str, ...]]:
    """(spec mapping, substrings the one error line must contain)."""
    spec = iris_spec("bad", method="random", trials=2)
    if case == "unknown_hparam":
        spec["space"]["learnig_rate"] = spec["space"].pop("learning_rate")
        return spec, ("space.learnig_rate", "did you mean 'learning_rate'")
    if case == "low_gt_high":
        spec["space"]["learning_rate"] = {"low": 0.5, "high": 0.1}
        return spec, ("space.learning_rate", "low")
    if case == "log_touches_zero":
        spec["space"]["l2"] = {"low": 0.0, "high": 0.1, "log": True}
        return spec, ("space.l2", "log")
    if case == "nan_bound":
        spec["space"]["learning_rate"] = {"low": float("nan"), "high": 0.1}
        return spec, ("space.learning_rate.low", "finite")
    if case == "empty_list":
        spec["space"]["width"] = []
        spec["fixed"].pop("width")
        return spec, ("space.width", "empty")
    if case == "optimizer_typo":
        spec["fixed"]["optimizer"] = "adamm"
        return spec, ("fixed.optimizer", "adamm", "did you mean")
    if case == "grid_continuous":
        spec["search"]["method"] = "grid"
        return spec, ("space.learning_rate", "grid")
    if case == "metric_task":
        spec["metric"] = "r2"
        return spec, ("metric", "r2", "multiclass")
    if case == "csv_inf_feature":
        spec["data"] = _csv(tmp, "petal,sepal,label\n" + _rows(30).replace("0.3,", "inf,", 1))
        return spec, ("petal", "infinite")
    if case == "csv_unknown_feature":
        spec["data"] = {**_csv(tmp, "petal,sepal,label\n" + _rows(30)), "drop": ["colour"]}
        return spec, ("data.drop", "colour")
    if case == "epochs_past_int32":  # once: validate passed, then every trial overflowed
        spec["fixed"]["epochs"] = 1_000_000_000_000
        return spec, ("fixed.epochs", "must be in [1, 100000]", "got 1000000000000")
    if case == "negative_seed":
        spec["search"]["seed"] = -1
        return spec, ("search.seed", "must be in [0, 4294967295]", "got -1")
    if case == "markup_in_a_key":  # repeated in the message, not read as rich markup
        spec["space"]["[/x]"] = [1]
        return spec, ("space.[/x]", "unknown hyperparameter")
    if case == "class_smaller_than_folds":
        spec["data"] = _csv(tmp, "petal,sepal,label\n"
                            + _rows(30, label=lambda i: "c" if i < 2 else "ab"[i % 2]))
        return spec, ("cv.folds", "'c'")
    if case == "single_class":
        spec["data"] = _csv(tmp, "petal,sepal,label\n" + _rows(30, label=lambda i: "a"))
        return spec, ("single class",)
    raise AssertionError(case)


BAD_CASES = ["unknown_hparam", "low_gt_high", "log_touches_zero", "nan_bound", "empty_list",
             "optimizer_typo", "grid_continuous", "metric_task", "csv_inf_feature",
             "csv_unknown_feature", "epochs_past_int32", "negative_seed", "markup_in_a_key",
             "class_smaller_than_folds", "single_class"]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exit_2_one_line_nothing_created(case, command, tmp_path, monkeypatch,
                                                   capsys, e2e_env):
    spec, needles = _bad_case(case, tmp_path)
    (tmp_path / "specs").mkdir(exist_ok=True)
    path = write_spec(tmp_path / "specs" / "bad.yaml", spec)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke([command, path]) == 2
    captured = capsys.readouterr()
    err = stderr_lines(captured.err)
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert db_files(tmp_path) == []
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("command, case", [("run", "unknown_hparam"),
                                           ("validate", "csv_unknown_feature")])
def test_bad_input_in_a_real_process(command, case, tmp_path, e2e_env):
    spec, needles = _bad_case(case, tmp_path)
    (tmp_path / "specs").mkdir(exist_ok=True)
    path = write_spec(tmp_path / "specs" / "bad.yaml", spec)
    proc = run_cli([command, path], cwd=tmp_path, env=e2e_env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = stderr_lines(proc.stderr)
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    for needle in needles:
        assert needle in err[0]
    assert proc.stdout == ""
    assert not (tmp_path / "mlruns").exists()


def test_validate_ok(tmp_path, monkeypatch, capsys, e2e_env):
    path = write_spec(tmp_path / "ok.yaml", iris_spec("ok-grid", method="grid"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke(["validate", path]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ok: ok-grid" in out and "150 rows x 4 features" in out and "4 points" in out
    assert not (tmp_path / "mlruns").exists()


# --------------------------------------------------------------------------- divergence
def test_diverging_trial_fails_alone(results_dir, capsys):
    spec = iris_spec("iris-diverge", method="grid",
                     space={"learning_rate": [0.1, 1.0e6]})
    path = write_spec(results_dir / "diverge.yaml", spec)
    capsys.readouterr()
    assert invoke(["run", path, "--no-refit"]) == 0
    out = capsys.readouterr().out
    study = load_study(results_dir, "iris-diverge")
    by_lr = {t.params["learning_rate"]: t for t in study.trials}
    assert len(study.trials) == 2
    bad, good = by_lr[1.0e6], by_lr[0.1]
    assert bad.state.name == "FAIL"
    assert bad.user_attrs["fail_reason"].startswith("diverged")
    # The summary counts failures by reason and gives each failed trial's reason.
    assert "trials: 1 complete, 1 fail" in out
    assert "failed: 1 diverged" in out
    assert f"  trial {bad.number}: {bad.user_attrs['fail_reason']}" in out
    assert good.state.name == "COMPLETE" and 0.0 <= good.value <= 1.0
    client = mlflow_client(results_dir)
    bad_run = client.get_run(bad.user_attrs["mlflow_run_id"])
    good_run = client.get_run(good.user_attrs["mlflow_run_id"])
    assert bad_run.info.status == "FAILED"
    assert bad_run.data.tags["fail_reason"].startswith("diverged")
    assert "cv_accuracy" not in bad_run.data.metrics
    assert good_run.info.status == "FINISHED"
    assert good_run.data.metrics["cv_accuracy"] == pytest.approx(good.value, abs=1e-12)
    for run in client.search_runs([bad_run.info.experiment_id]):
        assert run.info.status != "RUNNING"
