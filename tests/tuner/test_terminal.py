"""What a user sees in an 80-column terminal (issue 14): the summary of a sweep over 14
hyperparameters, where its results are, honest resumes, inferred tasks, data problems.

One real ``tuner run`` subprocess (COLUMNS=80, output piped) makes a 3-trial sweep of 14
hyperparameters on iris; the other checks run ``tuner.cli.main`` in this process. Results
are read back with ``optuna`` and ``mlflow`` only.
"""

from __future__ import annotations

import re

import numpy as np
import optuna
import pandas as pd
import pytest
from rich.console import Console
from rich.measure import Measurement

from e2e import (
    invoke, iris_spec, load_study, mlflow_client, mlflow_uri, parent_runs, run_cli, runs_of,
    stderr_lines, tracking_uri, write_spec,
)

NAME = "iris-wide"
# 14 hyperparameters; the categorical ones are per-lane selectors or single values, so
# the sweep is one compiled program (plus the refit's).
WIDE_SPACE = {
    "learning_rate": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
    "l1": {"low": 1.0e-7, "high": 1.0e-3, "log": True},
    "l2": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
    "weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "momentum": {"low": 0.5, "high": 0.99},
    "optimizer": ["sgd", "adam"],
    "activation": ["relu", "tanh"],
    "init": ["xavier", "kaiming"],
    "schedule": ["constant", "cosine"],
    "depth": [1],
    "width": [8],
    "batch_size": [16],
    "norm": ["none"],
}
POINTER_PREFIXES = ("study:", "parent run:", "model:", "MLflow UI:", "then open:",
                    "  every column:")


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory, mlflow_template, e2e_env):
    from e2e import seed_results

    work = seed_results(tmp_path_factory.mktemp("wide"), mlflow_template)
    spec = iris_spec(NAME, method="tpe", trials=3, batch=3, space=WIDE_SPACE,
                     fixed={"epochs": 2})
    for key in ("width", "depth", "batch_size", "optimizer", "activation"):
        spec["fixed"].pop(key)  # searched here
    path = write_spec(work / "wide.yaml", spec)
    env = {**e2e_env, "COLUMNS": "80"}
    proc = run_cli(["run", path], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, path, proc


def _pointer(text: str, label: str) -> str:
    m = re.search(rf"^{re.escape(label)}\s+(\S+)", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return m.group(1)


def test_summary_at_80_columns_shows_the_best_trial_whole(wide_run):
    work, _, proc = wide_run
    out = proc.stdout
    study = load_study(work, NAME)
    best = study.best_trial
    assert len(best.params) == 14
    assert f"best trial {best.number}: accuracy = {study.best_value:.4f}" in out
    for name, value in best.params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        assert re.search(rf"^  {name} +=\s{re.escape(shown)}$", out, re.M), (name, shown)
    # The table fits: only the pointer lines (never wrapped, to copy) may be longer.
    for line in out.splitlines():
        if not line.startswith(POINTER_PREFIXES):
            assert len(line) <= 80, line
    assert re.search(r"^\d+ columns left out to fit: ", out, re.M)
    assert f"tuner show {NAME} --all" in out
    assert "trials: 3 complete" in out
    # The table keeps the metric column, with every listed value whole.
    header = next(line for line in out.splitlines() if line.lstrip().startswith("trial "))
    assert "accuracy" in header
    for t in study.trials:
        assert re.search(rf"^\s+{t.number}\s+{t.value:.4f}\s", out, re.M)


def test_pointers_are_real_and_whole(wide_run):
    work, _, proc = wide_run
    out = proc.stdout
    client = mlflow_client(work)
    exp = client.get_experiment_by_name(NAME)
    run_id = _pointer(out, "parent run:")
    run = client.get_run(run_id)
    assert run.info.experiment_id == exp.experiment_id
    assert "mlflow.parentRunId" not in run.data.tags and run.info.status == "FINISHED"
    assert [r.info.run_id for r in parent_runs(runs_of(work, NAME))] == [run_id]
    assert _pointer(out, "study:") == NAME
    uri = _pointer(out, "model:")
    assert uri == f"runs:/{run_id}/model"
    import mlflow
    from sklearn.datasets import load_iris

    with tracking_uri(mlflow_uri(work)):
        model = mlflow.pyfunc.load_model(uri)
    X = load_iris(as_frame=True).data.head(5)
    assert len(model.predict(X)) == 5
    ui = next(line for line in out.splitlines() if line.startswith("MLflow UI:"))
    assert ui.endswith(f"mlflow ui --backend-store-uri {mlflow_uri(work)} --host 127.0.0.1 "
                       "--port 5000")
    assert (f"then open:  http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
            "?workflowType=machine_learning") in out
    # Progress and notices on stderr: the start says what is new; no library warnings.
    assert f"{NAME}: 0 trials done, 3 new" in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_a_finished_sweep_rerun_makes_no_new_parent_run(wide_run, monkeypatch, capsys):
    work, path, proc = wide_run
    monkeypatch.chdir(work)
    before = runs_of(work, NAME)
    capsys.readouterr()
    assert invoke(["run", path]) == 0
    captured = capsys.readouterr()
    assert f"{NAME}: all 3 trials are done" in captured.err
    assert "no new parent run, no refit (--refit" in captured.err
    assert len(runs_of(work, NAME)) == len(before)
    # ... and still says where the results are: the same run and model.
    assert _pointer(captured.out, "parent run:") == _pointer(proc.stdout, "parent run:")
    assert _pointer(captured.out, "model:") == _pointer(proc.stdout, "model:")

    assert invoke(["run", path, "--trials", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 trials asked for, but 3 are already done: no new trial is run" in err
    assert len(runs_of(work, NAME)) == len(before)
    assert len(load_study(work, NAME).trials) == 3


def test_show_prints_the_pointers_and_every_column_on_request(wide_run, monkeypatch,
                                                              capsys):
    work, _, proc = wide_run
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert invoke(["show", NAME]) == 0
    out = capsys.readouterr().out
    for label in ("parent run:", "model:"):
        assert _pointer(out, label) == _pointer(proc.stdout, label)
    assert "mlflow ui --backend-store-uri" in out
    assert invoke(["show", NAME, "--all"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("trial "))
    assert all(name in header for name in WIDE_SPACE)
    assert "left out" not in out


def test_show_without_a_database_says_how_to_point_at_one(tmp_path, monkeypatch, capsys,
                                                          e2e_env):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke(["show", "anything"]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no study database at" in err[0] and "--storage" in err[0]


# --------------------------------------------------------------------------- the table
def test_top_table_fits_the_width_and_names_what_it_left_out():
    from tuner.summary.report import top_table

    study = optuna.create_study(direction="maximize", study_name="s")
    dists = {f"parameter_{i:02d}": optuna.distributions.FloatDistribution(1e-6, 1.0,
                                                                          log=True)
             for i in range(14)}
    rng = np.random.default_rng(0)
    for _ in range(4):
        params = {k: float(rng.uniform(1e-6, 1e-3)) for k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(rng.uniform())))
    console = Console(width=10_000)
    for width in (60, 80, 120):
        table, left_out = top_table(study, "accuracy", width)
        measured = Measurement.get(console, console.options, table).maximum
        assert measured <= width
        assert [c.header for c in table.columns][:2] == ["trial", "accuracy"]
        assert len(table.columns) - 2 + len(left_out) == 14
    assert top_table(study, "accuracy", None)[1] == []


# --------------------------------------------------------------------------- data
def test_integer_regression_target_is_inferred_and_said(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    frame["price"] = (frame.a * 100 + 300).round().astype(int)  # ~100 distinct integers
    frame.to_csv(tmp_path / "prices.csv", index=False)
    spec = {"name": "prices", "data": {"source": "csv:prices.csv", "target": "price"},
            "cv": {"folds": 3}, "search": {"method": "random", "trials": 2},
            "fixed": {"epochs": 2}, "space": {"learning_rate": [0.01, 0.1]}}
    path = write_spec(tmp_path / "prices.yaml", spec)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke(["validate", path]) == 0
    captured = capsys.readouterr()
    assert "ok: prices: regression" in captured.out
    assert "task regression inferred (integer target with" in captured.err
    assert "task:" in captured.err  # how to override it


@pytest.mark.parametrize("n, distinct, task", [(40, 25, "regression"),
                                                (1000, 31, "regression"),
                                                (1000, 30, "multiclass"),
                                                (8, 5, "multiclass")])
def test_integer_target_inference_thresholds(n, distinct, task):
    from tuner.inputs.data import from_arrays

    y = np.arange(n) % distinct
    assert from_arrays(np.random.default_rng(0).normal(size=(n, 2)), y).task == task


def test_a_csv_with_three_problems_reports_all_three(tmp_path, monkeypatch, capsys):
    # A column named in the spec that is not there, a column without values, and a
    # column with an infinite value.
    rows = ["a,empty,big,y"] + [f"{i},,{'inf' if i == 3 else i},{i % 2}" for i in range(10)]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    spec = {"name": "bad", "data": {"source": "csv:bad.csv", "target": "y",
                                    "drop": ["nope"]},
            "search": {"method": "random", "trials": 2}, "space": {"learning_rate": [0.1]}}
    path = write_spec(tmp_path / "bad.yaml", spec)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert invoke(["validate", path]) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert all(line.startswith("error: ") for line in err), err
    text = "\n".join(err)
    assert "data.drop: column 'nope' not in" in text
    assert "column 'empty' has no values" in text
    assert "column 'big' has 1 infinite values" in text
    assert len(err) == 3, err


def test_api_dtype_errors_name_columns_and_dtypes():
    from tuner.errors import DataError
    from tuner.inputs.data import from_arrays

    X = pd.DataFrame({"x": np.arange(6.0), "wait": pd.to_timedelta(np.arange(6), "s")})
    with pytest.raises(DataError, match=r"column 'wait' has dtype timedelta64"):
        from_arrays(X, [0, 1] * 3)
    y = pd.Series(pd.Categorical(["a", "b"] * 3))
    with pytest.raises(DataError, match=r"regression needs a numeric target, got dtype "
                                        r"category"):
        from_arrays(np.arange(12.0).reshape(6, 2), y, task="regression")
    X = np.array([["a", 1.0], ["b", 2.0]], dtype=object)
    with pytest.raises(DataError, match=r"'x0' \(object\)"):
        from_arrays(X, [0, 1])
