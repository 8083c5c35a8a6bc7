"""Real tables end to end: text, date and ID columns, missing cells, an imbalanced target;
imputation fit on training folds only; the logged model answering raw rows (through
pyfunc and a real `mlflow models serve` process); the API taking a DataFrame. Results
are read back with MLflow's and Optuna's own clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.utils.class_weight import compute_class_weight

import tuner
from e2e import (
    FIXED, load_study, mlflow_client, mlflow_uri, parent_runs, run_cli, runs_of, tracking_uri,
    write_spec,
)
from tuner.inputs.cv import make_folds
from tuner.inputs.data import load_data
from tuner.inputs.tables.columns import assign_roles


def churn_table(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """A small table of every kind of column, about 1 in 5 rows positive."""
    rng = np.random.default_rng(seed)
    calls = rng.poisson(1.5, n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    frame = pd.DataFrame({
        "customer_id": [f"C{1000 + i}" for i in range(n)],
        "signup": (pd.Timestamp("2022-01-01")
                   + pd.to_timedelta(rng.integers(0, 700, n), unit="D")).strftime("%Y-%m-%d"),
        "age": rng.normal(40, 10, n).round(),
        "plan": plan,
        "calls": calls,
        "churned": np.where(calls + (plan == "basic") + rng.normal(0, 0.7, n) > 3, "yes", "no"),
    })
    frame.loc[rng.choice(n, 12, replace=False), "age"] = np.nan
    frame.loc[rng.choice(n, 9, replace=False), "plan"] = np.nan
    return frame


def test_column_roles_dates_ids_and_text():
    table = churn_table().drop(columns="churned")
    roles = assign_roles(table, categorical=(), dates=())
    assert roles.numeric == ("age", "calls") and roles.categorical == ("plan",)
    assert dict(roles.dropped) == {"customer_id": "a different value on every row, like an ID",
                                   "signup": "a date column"}
    assert any("'signup' is left out" in n and "data.dates" in n for n in roles.notices)
    roles = assign_roles(table, categorical=("customer_id",), dates=("signup",))
    assert roles.dates == ("signup",) and "customer_id" in roles.categorical


def test_imputation_is_fit_on_training_folds_only(tmp_path):
    """Each fold's fill values are SimpleImputer's medians of its own training rows. The
    validation rows of fold 0 hold huge ages: a global median would move with them."""
    table = churn_table(n=120)
    table.loc[:39, "age"] = 1e6  # rows 0..39
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    ds = load_data({"source": f"csv:{path}", "target": "churned", "drop": ["customer_id"]})
    splits = [(np.arange(40, 120), np.arange(0, 40)), (np.arange(0, 80), np.arange(80, 120))]
    stack, _ = make_folds(ds, splits=splits)
    age = ds.feature_names.index("age")
    for f, (tr, _) in enumerate(splits):
        expected = SimpleImputer(strategy="median").fit(ds.X[tr][:, [age]]).statistics_[0]
        assert stack.x_fill[f, age] == pytest.approx(expected)
    assert stack.x_fill[0, age] < 100  # fold 0 never saw its validation rows' ages
    assert np.nanmedian(ds.X[:, age]) != pytest.approx(stack.x_fill[0, age])


def test_balanced_class_weights_per_training_fold():
    table = churn_table(n=200)
    ds = tuner.inputs.data.from_arrays(table[["age", "calls"]].to_numpy(),
                                       table["churned"].to_numpy(), class_weight="balanced")
    stack, splits = make_folds(ds, folds=4)
    for f, (tr, va) in enumerate(splits):
        y = ds.y[tr]
        per_class = compute_class_weight("balanced", classes=np.unique(y), y=y)
        np.testing.assert_allclose(stack.w_train[f, : len(tr)], per_class[y], rtol=1e-6)
        assert np.all(stack.w_val[f, : len(va)] == 1)  # scores stay unweighted


def test_unseen_categories_are_dropped_from_the_fold_that_never_saw_them(tmp_path):
    table = churn_table(n=60)
    table.loc[:9, "plan"] = "legacy"  # only in fold 0's validation rows
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    ds = load_data({"source": f"csv:{path}", "target": "churned", "drop": ["customer_id"]})
    stack, _ = make_folds(ds, splits=[(np.arange(10, 60), np.arange(0, 10)),
                                      (np.arange(0, 50), np.arange(50, 60))])
    legacy = ds.feature_names.index("plan_legacy")
    assert stack.x_inv_scale[0, legacy] == 0 and stack.x_inv_scale[1, legacy] != 0
    assert np.all(stack.fold_x(0, "val")[:10, legacy] == 0)


def _spec(tmp_path, frame: pd.DataFrame, **search) -> tuple:
    frame.to_csv(tmp_path / "churn.csv", index=False)
    # The same columns as the API's DataFrame below (the date is left out either way),
    # so both sweeps share their compiled programs.
    spec = {"name": "churn", "data": {"source": "csv:churn.csv", "target": "churned",
                                      "drop": ["customer_id"], "class_weight": "balanced"},
            "cv": {"folds": 3}, "search": {"method": "random", "trials": 2, "batch": 2,
                                           **search},
            "metric": "roc_auc", "fixed": {**FIXED, "l2": 1e-4, "epochs": 4},
            "space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}}}
    return write_spec(tmp_path / "churn.yaml", spec), spec


def test_cli_sweeps_a_raw_table_and_its_model_takes_raw_rows(results_dir, e2e_env):
    frame = churn_table()
    path, _ = _spec(results_dir, frame)
    done = run_cli(["run", path, "--register", "churn-model"], results_dir, e2e_env)
    assert done.returncode == 0, done.stderr
    assert "missing values imputed" in done.stderr and "age 12" in done.stderr
    assert "'signup' is left out: a date column" in done.stderr
    assert "learning curve:" in done.stdout

    (parent,) = parent_runs(runs_of(results_dir, "churn"))
    assert parent.info.run_name.startswith("churn ")  # a name that says which sweep
    assert {"size_val_roc_auc", "size_train_roc_auc"} <= set(parent.data.metrics)
    client = mlflow_client(results_dir)
    history = client.get_metric_history(parent.info.run_id, "size_val_roc_auc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [10, 20, 40, 70, 100]
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/learning_curve_size.png" in plots
    assert str(client.get_model_version("churn-model", "1").version) == "1"

    import mlflow

    rows = frame.drop(columns="churned").head(6).copy()
    rows.loc[0, "plan"] = "enterprise"          # a category never seen
    rows.loc[1, ["age", "plan"]] = [np.nan, None]  # missing cells
    rows["note"] = "extra column"              # ignored
    rows = rows[rows.columns[::-1]]            # any column order
    with tracking_uri(mlflow_uri(results_dir)):
        model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
        labels = model.predict(rows)
        proba = model.predict(rows, params={"predict_method": "predict_proba"})
        by_name = mlflow.pyfunc.load_model("models:/churn-model/1").predict(rows)
    assert set(np.asarray(labels).tolist()) <= {"yes", "no"} and len(labels) == 6
    assert np.asarray(proba).shape == (6, 2)
    np.testing.assert_allclose(np.asarray(proba).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(by_name), np.asarray(labels))
    signature = {c["name"]: c for c in model.metadata.signature.inputs.to_dict()}
    assert set(signature) == {"age", "plan", "calls"}  # the table's own columns kept
    assert signature["plan"]["type"] == "string" and signature["age"]["type"] == "double"


@pytest.fixture(scope="module")
def api_sweep(tmp_path_factory, mlflow_template):
    """One API sweep over a DataFrame (its working folder, its result)."""
    from e2e import seed_results

    folder = seed_results(tmp_path_factory.mktemp("api-frame"), mlflow_template)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        # "plan" as a pandas category: MLflow's schema has no such type, so the logged
        # input example must carry its values (it failed model logging before).
        result = tuner.tune(space={"learning_rate": [0.05, 0.2]},
                            data=churn_table().astype({"plan": "category"}),
                            target="churned", method="grid", fixed={**FIXED, "l2": 1e-4},
                            folds=3, batch=2, metric="roc_auc", name="api-frame")
    return folder, result


def test_the_api_takes_a_dataframe_with_its_target(api_sweep):
    folder, result = api_sweep
    frame = churn_table()
    assert result.best_model is not None
    predicted = result.best_model.predict(frame.drop(columns="churned"))
    assert set(predicted.tolist()) <= {"yes", "no"}
    assert load_study(folder, "api-frame").best_value == result.best_value


def test_dates_listed_are_expanded(tmp_path):
    path = tmp_path / "t.csv"
    churn_table().to_csv(path, index=False)
    ds = load_data({"source": f"csv:{path}", "target": "churned", "dates": ["signup"],
                    "drop": ["customer_id"]})
    parts = [n for n in ds.feature_names if n.startswith("signup_")]
    assert parts == ["signup_year", "signup_month", "signup_dayofweek", "signup_dayofyear"]
    year = ds.X[:, ds.feature_names.index("signup_year")]
    assert set(np.unique(year)) <= {2022.0, 2023.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_model_answers_raw_rows_over_http(api_sweep, e2e_env):
    """`mlflow models serve` (a real server process) answers POST /invocations with the
    table's own rows, in the table's labels."""
    results_dir, result = api_sweep
    frame = churn_table()
    port = _free_port()
    env = {**e2e_env, "MLFLOW_TRACKING_URI": mlflow_uri(results_dir)}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m",
         f"runs:/{result.parent_run_id}/model", "--env-manager", "local", "-p", str(port),
         "-h", "127.0.0.1"], cwd=results_dir, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        rows = frame.drop(columns="churned").head(4).copy()
        rows.loc[0, "age"] = None
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split",
                                                                      index=False))})
        deadline, answer = time.time() + 90, None
        while time.time() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        assert answer is not None, server.stderr.read().decode()[-2000:] if server.poll() \
            is not None else "the server did not answer in time"
        assert len(answer["predictions"]) == 4
        assert set(answer["predictions"]) <= {"yes", "no"}
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_size_curve_programs_cover_every_fraction_and_rows_grow(monkeypatch):
    """Small and large fractions train in separate programs (a program pads its folds
    to its largest subset); every fraction is scored, on subsets that grow; the training
    score of a large subset is estimated on a sample."""
    from models import ProgramCache
    from tuner.inputs.cv import splitter
    from tuner.summary import size_curve as sc

    assert sc.program_groups(sc.FRACTIONS, 100_000) == [[0, 1, 2], [3, 4]]
    assert sc.program_groups(sc.FRACTIONS, 1_000) == [[0, 1, 2, 3, 4]]  # one compile
    assert sc.program_groups((0.5, 1.0), 100_000) == [[0, 1]]
    monkeypatch.setattr(sc, "SPLIT_ABOVE_ROWS", 10)  # iris: two programs, as a large table
    monkeypatch.setattr(sc, "TRAIN_SCORE_ROWS", 40)  # the 70% and 100% subsets are sampled
    ds = load_data({"source": "sklearn:iris"})
    splits = splitter(ds, folds=3, stratified=True, shuffle=True, seed=0)
    curve = sc.size_curve(ds, splits, {**FIXED, "learning_rate": 0.05}, 0, 0, "accuracy",
                          ProgramCache())
    assert curve.val.shape == curve.train.shape == (5, 3)
    assert np.all(np.diff(curve.rows) > 0) and curve.rows[-1] == 100  # 2/3 of 150 rows
    assert np.all((curve.train >= 0) & (curve.train <= 1)) and np.all(curve.val > 0)
