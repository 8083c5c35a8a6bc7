"""tuner.sklearn: the estimators pass scikit-learn's own checks, and MLPSearchCV reads
like GridSearchCV while its scores are the engine's (read back from the Optuna study).

Speed: every fit pads its rows to a power of two and predicts in chunks of one size,
and all fits share one program cache, so the check suite compiles a few dozen small
programs (width 8, one hidden layer); the searches train 2 x 2 grids on 60 rows.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.estimator_checks import parametrize_with_checks

from tuner.errors import SpecError
from tuner.sklearn import JaxMLPClassifier, JaxMLPRegressor, MLPSearchCV
from tuner.sklearn.estimators import HPARAM_NAMES


@pytest.fixture(scope="module", autouse=True)
def _untracked_here(tmp_path_factory):
    """No MLflow unless a test asks, and nothing written to the repository."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


# Small and quick, but trained enough for the checks that ask for a decent score.
SMALL = {"width": 8, "epochs": 30, "learning_rate": 0.05, "batch_size": 32}
SAMPLE_WEIGHT_REASON = (
    "minibatch training: a row of weight 2 counts twice inside its minibatch, while a "
    "repeated row lands in another minibatch and changes the shuffle; the two agree in "
    "expectation, not to 1e-7")
EXPECTED_FAILED = {"check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON}


@parametrize_with_checks([JaxMLPClassifier(**SMALL), JaxMLPRegressor(**SMALL)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_every_hyperparameter_is_an_argument_with_the_table_default():
    from models.hparams import HPARAM_TABLE

    params = JaxMLPRegressor().get_params()
    assert set(params) == set(HPARAM_NAMES) | {"random_state"}
    for p in HPARAM_TABLE:
        assert params[p.name] == p.default


# --------------------------------------------------------------------------- data
def blobs(n: int = 60, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    X = rng.randn(n, d) + 1.5 * y[:, None]
    return X, np.where(y == 1, "yes", "no")


GRID = {"learning_rate": [0.05, 0.2], "l2": [1e-4, 1e-3]}
FAST = {"epochs": 5, "batch_size": 16}


@pytest.fixture(scope="module")
def grid_search():
    X, y = blobs()
    cv = KFold(3, shuffle=True, random_state=0)
    search = MLPSearchCV(JaxMLPClassifier(**FAST), GRID, method="grid", cv=cv,
                         random_state=0).fit(X, y)
    return search, X, y, cv


def test_cv_results_match_grid_search_layout_and_the_study(grid_search):
    search, X, y, cv = grid_search
    reference = GridSearchCV(JaxMLPClassifier(**FAST, random_state=0), GRID, cv=cv).fit(X, y)
    assert list(search.cv_results_) == list(reference.cv_results_)
    assert search.cv_results_["params"] == reference.cv_results_["params"]
    for key in ("param_learning_rate", "param_l2"):
        assert search.cv_results_[key].dtype == reference.cv_results_[key].dtype
        assert list(search.cv_results_[key]) == list(reference.cv_results_[key])
    # The scores are the engine's, as Optuna stores them (accuracy: sign +1).
    by_params = {tuple(sorted(t.params.items())): t for t in search.study_.trials}
    for i, params in enumerate(search.cv_results_["params"]):
        trial = by_params[tuple(sorted(params.items()))]
        assert search.cv_results_["mean_test_score"][i] == trial.value
        splits = [search.cv_results_[f"split{k}_test_score"][i] for k in range(3)]
        assert np.mean(splits) == pytest.approx(trial.value, abs=1e-12)
    assert search.best_score_ == max(t.value for t in search.study_.trials)
    assert search.cv_results_["rank_test_score"][search.best_index_] == 1
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert isinstance(search.best_estimator_, JaxMLPClassifier)
    assert set(search.predict(X)) <= {"yes", "no"}
    assert list(search.classes_) == ["no", "yes"]
    assert search.predict_proba(X).shape == (len(X), 2)


def test_losses_are_negated_like_scikit_learns_neg_scorers():
    X, y = blobs(40)
    halves = [(np.arange(20), np.arange(20, 40)), (np.arange(20, 40), np.arange(20))]
    search = MLPSearchCV(JaxMLPClassifier(**FAST), {"learning_rate": [0.05, 0.2]},
                         method="grid", cv=halves, scoring="neg_log_loss", random_state=0,
                         refit=False).fit(X, y)  # cv: an iterable of splits
    values = sorted(t.value for t in search.study_.trials)
    assert sorted(-search.cv_results_["mean_test_score"]) == pytest.approx(values, abs=0)
    assert search.best_score_ == -min(values)
    assert not hasattr(search, "best_estimator_")
    with pytest.raises(AttributeError, match="refit=False"):
        search.predict(X)


def test_best_estimator_pickles_and_predicts_the_same(grid_search, tmp_path):
    search, X, _, _ = grid_search
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(search.best_estimator_))
    loaded = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(loaded.predict(X), search.best_estimator_.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X),
                                  search.best_estimator_.predict_proba(X))


def test_clone_is_unfitted(grid_search):
    search = grid_search[0]
    copy = clone(search)
    assert not hasattr(copy, "cv_results_") and copy.get_params()["space"] == GRID


def test_nested_cross_validation_of_a_pipeline_with_a_text_column():
    X, y = blobs(48, d=2, seed=1)
    rng = np.random.RandomState(1)
    table = pd.DataFrame({"a": X[:, 0], "b": X[:, 1],
                          "colour": rng.choice(["red", "green", "blue"], len(X))})
    search = MLPSearchCV(JaxMLPClassifier(**FAST), {"learning_rate": [0.05, 0.2]},
                         method="random", n_trials=2, cv=2, random_state=0)
    pipe = Pipeline([("columns", ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
        remainder="passthrough")), ("search", search)])
    scores = cross_val_score(pipe, table, y, cv=2)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"space": {"widht": [4]}}, SpecError, r"space\.widht: unknown hyperparameter"),
    ({"space": {"learning_rate": {"low": 1.0, "high": 0.1}}}, SpecError,
     r"space\.learning_rate"),
    ({"space": {"width": [4]}, "scoring": "neg_brier_score"}, SpecError,
     r"scoring: 'neg_brier_score' is not a metric"),
    ({"space": {"width": [4]}, "scoring": "r2"}, SpecError, r"does not fit task"),
    ({"space": {"width": [4]}, "method": "anneal"}, SpecError, r"search\.method"),
    ({"space": {"width": [4]}, "estimator": "mlp"}, ValueError, r"estimator: expected"),
    ({"space": {"width": [4]}, "refit": "accuracy"}, ValueError, r"refit: expected"),
])
def test_bad_arguments_are_one_line_errors(kwargs, error, match):
    X, y = blobs(20)
    args = {"estimator": JaxMLPClassifier(**FAST), "cv": 2, **kwargs}
    with pytest.raises(error, match=match) as info:
        MLPSearchCV(**args).fit(X, y)
    assert "\n" not in str(info.value)


def test_bad_hyperparameter_is_a_one_line_value_error():
    X, y = blobs(20)
    with pytest.raises(ValueError, match=r"activation: unknown activation 'relu6'") as info:
        JaxMLPClassifier(activation="relu6").fit(X, y)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"learning_rate: .*must be > 0"):
        JaxMLPRegressor(learning_rate=-1.0).fit(X, np.arange(20.0))
    with pytest.raises(ValueError, match=r"multiclass-multioutput target has no head"):
        JaxMLPClassifier().fit(X, np.stack([np.arange(20) % 3, np.arange(20) % 4], axis=1))


def test_regression_search_with_pruning_early_stopping_and_tracking(tmp_path, monkeypatch):
    """tpe with a pruner and early stopping, tracked because MLFLOW_TRACKING_URI is set,
    the study in the storage given (nothing under ./mlruns)."""
    import mlflow
    import optuna

    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.randn(60)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    search = MLPSearchCV(
        JaxMLPRegressor(epochs=8, batch_size=16, width=8),
        {"learning_rate": {"low": 1e-3, "high": 0.3, "log": True}},
        method="tpe", n_trials=4, batch=2, cv=3, scoring="neg_mean_squared_error",
        early_stopping={"patience": 2}, pruner="median", random_state=0,
        storage=f"sqlite:///{tmp_path}/optuna.db", study_name="sk-regression").fit(X, y)
    stored = optuna.load_study(study_name="sk-regression",
                               storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.value for t in stored.trials] == [t.value for t in search.study_.trials]
    values = {t.number: t.value for t in search.study_.trials if t.value is not None}
    finite = search.cv_results_["mean_test_score"][~np.isnan(
        search.cv_results_["mean_test_score"])]
    assert sorted(-finite) == pytest.approx(sorted(values.values()), abs=0)
    assert search.best_estimator_.predict(X).shape == (60,)
    assert search.score(X, y) <= 0  # neg_mean_squared_error
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("sk-regression")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 + 1  # the trials and the sweep's parent run
    assert not (Path.cwd() / "mlruns").exists()
