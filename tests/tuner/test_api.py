"""End to end through the Python API, ``tuner.tune(...)``, in this process.

Results are read back from the stores with ``optuna.load_study`` and
``mlflow.MlflowClient``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

import tuner
from e2e import (
    FIXED, RANGE_SPACE, iris_spec, load_study, parent_runs, runs_of, seed_results,
    trial_runs, write_spec,
)


def test_tune_space_and_arrays_multiclass(results_dir):
    X, y = load_iris(return_X_y=True)
    result = tuner.tune(space=RANGE_SPACE, data=(X, y), task="multiclass", method="tpe",
                        trials=4, batch=2, folds=3, fixed=FIXED)
    study = load_study(results_dir, "tune")  # the default name of an API sweep
    assert len(study.trials) == 4
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert result.best_value == study.best_value
    assert result.best_params == study.best_params
    assert set(result.best_params) == set(RANGE_SPACE)
    assert result.metric == "accuracy"

    df = result.trials_dataframe()
    assert len(df) == 4
    assert sorted(df["number"]) == [0, 1, 2, 3]
    assert {"value", "params_learning_rate", "params_l2"} <= set(df.columns)

    pred = result.best_model.predict(X)
    assert pred.shape == (150,)
    assert set(np.unique(pred)) <= {0, 1, 2}
    proba = result.best_model.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(proba >= 0)
    np.testing.assert_array_equal(np.argmax(proba, axis=1), pred)

    runs = runs_of(results_dir, "tune")
    assert len(parent_runs(runs)) == 1 and len(trial_runs(runs)) == 4
    assert parent_runs(runs)[0].info.run_id == result.parent_run_id
    assert all(r.info.status == "FINISHED" for r in runs)


def test_tune_regression_r2(results_dir):
    X, y = load_diabetes(return_X_y=True)
    space = {"learning_rate": {"low": 0.005, "high": 0.05, "log": True},
             "l2": {"low": 1e-5, "high": 1e-3, "log": True}}
    result = tuner.tune(space=space, data=(X, y), task="regression", metric="r2",
                        method="random", trials=2, batch=2, folds=3, fixed=FIXED,
                        name="diabetes")
    study = load_study(results_dir, "diabetes")
    assert study.direction.name == "MAXIMIZE"  # r2: larger is better
    assert len(study.trials) == 2
    assert result.best_value == study.best_value
    assert result.metric == "r2"
    pred = result.best_model.predict(X)
    assert pred.shape == (442,)
    assert np.issubdtype(pred.dtype, np.floating)
    assert np.all(np.isfinite(pred))
    assert pred.std() > 0
    with pytest.raises(AttributeError):
        result.best_model.predict_proba(X)
    best_run = [r for r in trial_runs(runs_of(results_dir, "diabetes"))
                if r.info.run_id == study.best_trial.user_attrs["mlflow_run_id"]]
    assert best_run[0].data.metrics["cv_r2"] == pytest.approx(study.best_value, abs=1e-12)


def test_tune_spec_file(results_dir):
    path = write_spec(results_dir / "iris.yaml",
                      iris_spec("iris-file", method="tpe", trials=6))
    result = tuner.tune(str(path), trials=2)
    study = load_study(results_dir, "iris-file")
    assert len(study.trials) == 2  # the keyword overrides the spec's 6
    assert result.best_value == study.best_value
    assert result.best_model is not None
    assert result.best_model.predict(load_iris().data).shape == (150,)


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_same_seed_same_results(method, tmp_path, monkeypatch, mlflow_template):
    spec = iris_spec(f"iris-seed-{method}", method=method, trials=4, seed=7)
    seen = []
    for where in ("first", "second"):
        directory = seed_results(tmp_path / where, mlflow_template)
        monkeypatch.chdir(directory)
        tuner.tune(spec, refit=False)
        study = load_study(directory, spec["name"])
        seen.append([(t.number, t.state.name, t.params, t.value) for t in study.trials])
    assert len(seen[0]) == 4
    assert seen[0] == seen[1]


def test_data_too_big_for_the_devices_is_bad_input(results_dir, monkeypatch):
    """Refused before training, in one line naming the sizes; nothing written."""
    from models import programs

    from tuner.errors import DataError

    monkeypatch.setattr(programs, "available_bytes", lambda device: 1000)
    X, y = np.random.default_rng(0).normal(size=(200, 3)), np.arange(200) % 2
    with pytest.raises(DataError, match=r"^data: 200 rows x 3 features need .* GiB on the "
                                        r"devices .* available"):
        tuner.tune(space={"learning_rate": [0.1]}, data=(X, y), method="grid")
    assert not (results_dir / "mlruns" / "optuna.db").exists()
