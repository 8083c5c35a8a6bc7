"""The best configuration refit on all the data, as a scikit-learn-like estimator and
as an MLflow pyfunc model."""

from __future__ import annotations

import dataclasses
import logging

import mlflow
import numpy as np
import pandas as pd

from models import ProgramCache, TrainedModel, TrialConfig, lane_hparams, signature_for
from tuner.inputs.cv import make_full_fit
from tuner.inputs.data import Dataset

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BestModel:
    """``predict`` returns original labels (classification) or values (regression)."""

    model: TrainedModel
    task: str
    classes: np.ndarray | None
    feature_names: tuple[str, ...]
    params: dict

    def predict(self, X) -> np.ndarray:
        out = self.model.predict(_as_array(X))
        if self.task in ("binary", "multiclass") and self.classes is not None:
            return np.asarray(self.classes)[out]
        return out

    def predict_proba(self, X) -> np.ndarray:
        if self.task == "regression":
            raise AttributeError("predict_proba is only defined for classification")
        return self.model.predict_proba(_as_array(X))


def _as_array(X) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    return np.asarray(X, np.float32)


def refit(dataset: Dataset, params: dict, seed: int, trial: int, *,
          programs: ProgramCache | None = None, epochs: int | None = None
          ) -> BestModel | None:
    """Train ``params`` on all of ``dataset``; None if that run diverges. ``epochs``
    stops the training early (the epochs that produced an early-stopped trial's value)."""
    config = TrialConfig.from_dict(params, seed=seed, trial=trial)
    full = make_full_fit(dataset)
    sig = signature_for([config], dataset.task, dataset.n_features, dataset.n_outputs,
                        full.stack.n_train)
    hp = lane_hparams([config], sig)
    programs = programs if programs is not None else ProgramCache()
    result = programs.fit(sig, hp, full.stack, seed, until=epochs)
    if int(np.asarray(result.diverged_epoch)[0, 0]) >= 0:
        log.warning("the refit of the best configuration diverged; no model is logged")
        return None
    trained = TrainedModel.from_fit(sig, result, hp, 0, 0, full.scaler.mean_,
                                    full.scaler.scale_, full.y_shift, full.y_scale)
    return BestModel(trained, dataset.task, dataset.classes, tuple(dataset.feature_names),
                     dict(params))


class TunedModelPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``mlflow.pyfunc.load_model(uri).predict(X)`` gives ``predict``."""

    def __init__(self, best: BestModel):
        self.best = best

    # The DataFrame hint is one MLflow accepts without schema inference from the hint
    # (the input example gives the signature); numpy arrays are converted by pyfunc.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:  # noqa: ARG002
        return self.best.predict(model_input)


def prepare_model_logging() -> None:
    """Do ahead the part of ``log_best_model`` that does not depend on the model (the
    engine runs this in the background while the first batch trains). MLflow checks a
    logged model's pip requirements against the installed packages and, to do so, maps
    the files of every installed distribution: 0.7 s on a 2-core machine, cached for the
    process. The helper is MLflow's own, private: if it moves, only the head start is
    lost (tests/tuner/test_runtime.py notices)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()


def log_best_model(best: BestModel, X_example: np.ndarray) -> None:
    """Log ``best`` as an MLflow model named "model" in the active run."""
    # An unnamed float32 tensor signature: predict takes a plain [n, d] array (or a
    # DataFrame with the columns in training order). Given explicitly, with explicit
    # requirements: inferring either makes MLflow run the model (a fresh compile) or
    # import it in a subprocess, seconds each.
    example = np.asarray(X_example[:5], np.float32)
    output = (np.zeros(5, np.float32) if best.task == "regression"
              else np.asarray(best.classes if best.classes is not None else [0] * 5)[:1]
              .repeat(5))
    mlflow.pyfunc.log_model(
        name="model",
        python_model=TunedModelPyfunc(best),
        signature=mlflow.models.infer_signature(example, output),
        pip_requirements=_requirements(),
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
