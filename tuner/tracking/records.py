"""What a trial's MLflow run holds: the record of a finished trial, its metrics, and
their packing into as few ``log_batch`` calls as MLflow's limits allow."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from optuna.trial import TrialState

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation), held here so no environment variable changes
# what gets written: MLflow truncates long values only while MLFLOW_TRUNCATE_LONG_VALUES
# is on, and raises otherwise.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100  # params and tags, each
MAX_ENTITIES_PER_BATCH = 1000  # metrics + params + tags
MAX_BATCH_BYTES = 900_000  # the REST request limit is 1e6 bytes of JSON; keep a margin
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000

TAG_PARENT = "mlflow.parentRunId"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_RETRY_OF = "retry_of_trial"
TAG_FAIL_REASON = "fail_reason"
# The trial's state, written with its results: a run carrying it and closed holds the
# whole result (a crash between MLflow and Optuna is recovered from it).
TAG_TRIAL_STATE = "trial_state"
TAG_REFIT_EPOCHS = "refit_epochs"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED",
              TrialState.PRUNED: "KILLED"}
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


@dataclass
class LoggedResult:
    """A trial's result as its closed MLflow run holds it (``SweepTracker.read_result``).
    curve: step -> fold-mean validation metric (Optuna's intermediate values)."""

    state: TrialState
    value: float | None
    curve: dict[int, float]
    fail_reason: str | None = None
    refit_epochs: int | None = None


@dataclass
class TrialRecord:
    """One finished trial, as the tracker logs it."""

    number: int  # optuna trial number
    params: dict[str, Any]  # hyperparameters under the space's names, plus fixed ones
    state: TrialState  # COMPLETE, FAIL or PRUNED
    value: float | None  # fold mean of the metric
    value_std: float | None
    curves: dict[str, np.ndarray]  # each [F, E]: "train_loss", "val_loss", "val_<metric>"
    fail_reason: str | None = None  # e.g. "diverged: loss nan at epoch 7"
    retry_of: int | None = None  # number of the trial this one retries
    extra_tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # the run made by ``begin_trials``; None: log_trials makes one
    refit_epochs: int | None = None  # the epochs that produced the value (early stopping)


def clip(value: Any, limit: int, what: str) -> str:
    s = str(value)
    if len(s) > limit:
        log.warning("%s is %d characters long; MLflow keeps %d, the rest is cut",
                    what, len(s), limit)
        s = s[:limit]
    return s


def finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def batches(
    metrics: Sequence[Metric], params: Sequence[Param], tags: Sequence[RunTag]
) -> Iterator[tuple[list[Metric], list[Param], list[RunTag]]]:
    """Pack entities into as few ``log_batch`` calls as MLflow's limits allow: each call
    takes up to 100 tags and 100 params, then fills up with metrics to 1000 entities,
    all under the REST request's size limit."""
    queues: list[list[Any]] = [list(tags), list(params), list(metrics)]
    caps = (MAX_PARAMS_TAGS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH)

    def n_bytes(e: Any) -> int:
        return len(e.key) + (len(e.value) if isinstance(e.value, str) else 32) + 64

    while any(queues):
        batch: list[list[Any]] = [[], [], []]
        size = count = 0
        for kind, queue in enumerate(queues):
            taken = 0
            while taken < len(queue) and len(batch[kind]) < caps[kind]:
                b = n_bytes(queue[taken])
                if count >= MAX_ENTITIES_PER_BATCH or (count and size + b > MAX_BATCH_BYTES):
                    break
                batch[kind].append(queue[taken])
                size, count, taken = size + b, count + 1, taken + 1
            del queue[:taken]
        tags_b, params_b, metrics_b = batch
        yield metrics_b, params_b, tags_b


def curve_metrics(record: TrialRecord, metric: str, timestamp: int) -> list[Metric]:
    """The trial's metrics: ``cv_*`` (COMPLETE only) and the per-epoch curves.

    Non-finite points are left out, so a diverged curve stops at its last finite point
    (MLflow would store NaN, but the UI's charts break on it). A fold mean is non-finite
    as soon as one fold is.
    """
    out: list[Metric] = []
    if record.state == TrialState.COMPLETE:
        for key, v in ((f"cv_{metric}", record.value), (f"cv_{metric}_std", record.value_std)):
            if finite(v):
                out.append(Metric(key, float(v), timestamp, 0))

    def add(key: str, values: np.ndarray) -> None:
        for step in np.flatnonzero(np.isfinite(values)).tolist():
            out.append(Metric(key, float(values[step]), timestamp, step))

    for name in ("train_loss", "val_loss", f"val_{metric}"):
        if name not in record.curves:
            continue
        arr = np.atleast_2d(np.asarray(record.curves[name], dtype=np.float64))
        with np.errstate(all="ignore"):
            add(name, arr.mean(axis=0))
        if name != "train_loss":  # per-fold validation curves; train loss as the mean
            for k, fold in enumerate(arr):
                add(f"fold{k}_{name}", fold)
    return out
