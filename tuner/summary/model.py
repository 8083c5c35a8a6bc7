"""The best configuration refit on all the data: a model that takes the rows the user
has (a table's own columns, text, missing cells; or plain arrays) and answers in the
user's labels, as an estimator (``BestModel``) and as an MLflow pyfunc model.

The model is the whole pipeline: the table's encoder, scikit-learn's SimpleImputer and
StandardScaler fit on all rows (the numbers the refit trained with), then the network.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from models import ProgramCache, TrainedModel, TrialConfig, lane_hparams, signature_for
from models.metrics import METRICS_BY_TASK
from tuner.inputs.cv import make_full_fit
from tuner.inputs.data import Dataset
from tuner.process import kill_point

log = logging.getLogger(__name__)

PREDICT_METHODS = ("predict", "predict_proba")


@dataclasses.dataclass
class BestModel:
    """``predict`` returns original labels (classification) or values (regression);
    ``predict_proba`` class probabilities [n, C] (binary [n, 2], multilabel [n, k]).

    preprocess: raw rows (a DataFrame with the table's columns, or an array [n, d])
    -> the network's inputs [n, d'] (a scikit-learn Pipeline).
    """

    model: TrainedModel
    preprocess: Pipeline
    task: str
    classes: np.ndarray | None
    feature_names: tuple[str, ...]
    params: dict
    columns: tuple[str, ...] | None = None   # a table's raw columns, in order

    def inputs(self, X) -> np.ndarray:
        if self.columns is not None:
            X = _table_rows(X, self.columns)
        elif isinstance(X, pd.DataFrame):
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(self.preprocess.transform(X), np.float32)

    def predict(self, X) -> np.ndarray:
        out = self.model.predict(self.inputs(X))
        if self.task in ("binary", "multiclass") and self.classes is not None:
            return np.asarray(self.classes)[out]
        return out

    def predict_proba(self, X) -> np.ndarray:
        if self.task == "regression":
            raise AttributeError("predict_proba is only defined for classification")
        return self.model.predict_proba(self.inputs(X))


def _table_rows(X, columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a DataFrame with the table's columns (extra ones ignored, absent ones
    missing, any order), so that a model serves what the table held."""
    if not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X, dtype=object), columns=list(columns))
    return X.reindex(columns=list(columns))


def refit(dataset: Dataset, params: dict, seed: int, trial: int, *,
          programs: ProgramCache | None = None, epochs: int | None = None,
          pad_rows: int | None = None) -> BestModel | None:
    """Train ``params`` on all of ``dataset``; None if that run diverges. ``epochs``
    stops the training early (the epochs that produced an early-stopped trial's value);
    ``pad_rows`` pads the data to that many rows (weight 0: one program for similar
    sizes; the scikit-learn estimators use it)."""
    config = TrialConfig.from_dict(params, seed=seed, trial=trial)
    full = make_full_fit(dataset, n_rows=pad_rows)
    sig = signature_for([config], dataset.task, dataset.n_features, dataset.n_outputs,
                        full.stack.n_train)
    # Nothing reads the refit's validation scores: score one cheap metric, not all
    # (a smaller program, about a fifth less to compile).
    sig = dataclasses.replace(sig, metrics=(METRICS_BY_TASK[dataset.task][0],))
    hp = lane_hparams([config], sig)
    programs = programs if programs is not None else ProgramCache()
    result = programs.fit(sig, hp, full.stack, seed, until=epochs)
    kill_point("refit")
    if int(np.asarray(result.diverged_epoch)[0, 0]) >= 0:
        log.warning("the refit of the best configuration diverged; no model is logged")
        return None
    d = dataset.n_features
    # The pipeline imputes and scales; the network sees its inputs as trained.
    trained = TrainedModel.from_fit(sig, result, hp, 0, 0, np.zeros(d), np.ones(d),
                                    full.y_shift, full.y_scale)
    steps = [("impute", full.imputer), ("scale", full.scaler)]
    if dataset.encoding is not None:
        steps.insert(0, ("encode", dataset.encoding.encoder))
    columns = tuple(dataset.frame.columns) if dataset.frame is not None else None
    return BestModel(trained, Pipeline(steps), dataset.task, dataset.classes,
                     tuple(dataset.feature_names), dict(params), columns)


class TunedModelPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``mlflow.pyfunc.load_model(uri).predict(rows)`` gives the labels;
    ``predict(rows, params={"predict_method": "predict_proba"})`` the probabilities."""

    def __init__(self, best: BestModel):
        self.best = best

    # The DataFrame hint is one MLflow accepts without inferring a schema from it (the
    # signature is given explicitly); numpy arrays are converted by pyfunc.
    def predict(self, context, model_input: pd.DataFrame,  # noqa: ARG002
                params: dict[str, Any] | None = None) -> np.ndarray:
        method = (params or {}).get("predict_method", "predict")
        if method not in PREDICT_METHODS:
            raise ValueError(f"predict_method must be one of {PREDICT_METHODS}, "
                             f"got {method!r}")
        return getattr(self.best, method)(model_input)


def prepare_model_logging() -> None:
    """Do ahead the part of ``log_best_model`` that does not depend on the model (the
    engine runs this in the background while the first batch trains). MLflow checks a
    logged model's pip requirements against the installed packages and, to do so, maps
    the files of every installed distribution: 0.7 s on a 2-core machine, cached for the
    process. The helper is MLflow's own, private: if it moves, only the head start is
    lost (tests/tuner/test_runtime.py notices)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()


def model_signature(best: BestModel, example: pd.DataFrame):
    """A column signature naming the inputs with their types (a table's columns are
    optional: the model imputes what is missing; plain arrays' are required), the
    output, and the ``predict_method`` param."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = []
    for name in example.columns:
        col = example[name]
        if pd.api.types.is_bool_dtype(col):
            kind = "boolean"
        elif pd.api.types.is_integer_dtype(col):
            kind = "long"
        elif pd.api.types.is_float_dtype(col):
            kind = "double"
        elif pd.api.types.is_datetime64_any_dtype(col):
            kind = "datetime"
        else:
            kind = "string"
        inputs.append(ColSpec(kind, str(name), required=best.columns is None))
    if best.task == "regression":
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1,))])
    else:
        outputs = None
    params = ParamSchema([ParamSpec("predict_method", "string", "predict")])
    return ModelSignature(inputs=Schema(inputs), outputs=outputs, params=params)


def input_example(best: BestModel, dataset: Dataset, rows: int = 5) -> pd.DataFrame:
    """The first rows as the user gives them (a table's columns, or named features)."""
    if dataset.frame is not None:
        example = dataset.frame.head(rows).reset_index(drop=True)
        # MLflow's schema has no categorical type: a pandas category column is given
        # (and served) as its categories' values.
        for name in example.columns:
            if isinstance(example[name].dtype, pd.CategoricalDtype):
                example[name] = example[name].astype(example[name].cat.categories.dtype)
        return example
    return pd.DataFrame(np.asarray(dataset.X[:rows], np.float64),
                        columns=list(best.feature_names))


def log_best_model(best: BestModel, dataset: Dataset,
                   registered_model_name: str | None = None):
    """Log ``best`` as the MLflow model "model" of the active run (and register it under
    ``registered_model_name`` in the Model Registry when given); MLflow's ``ModelInfo``."""
    example = input_example(best, dataset)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TunedModelPyfunc(best),
        signature=model_signature(best, example),
        input_example=example,
        pip_requirements=_requirements(),
        registered_model_name=registered_model_name,
    )


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("tuner", "jax", "jaxlib", "optax", "numpy", "pandas", "scikit-learn",
                 "pydantic", "pyyaml", "mlflow"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return out
