"""After the loop: the parent run's summary, the best trial's curves and the refit model."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging

import numpy as np
import optuna
import pandas as pd

from tuner import search
from tuner.engine import Sweep, SweepOutcome
from tuner.model import BestModel, log_best_model, refit
from tuner.tracking import TrialRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TuneResult:
    """What a sweep produced (the Python API's return value)."""

    study: optuna.Study
    metric: str
    best_model: BestModel | None
    experiment_id: str
    parent_run_id: str | None
    interrupted: bool = False

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        return self.study.best_trial

    @property
    def best_params(self) -> dict:
        return dict(self.study.best_trial.params)

    @property
    def best_value(self) -> float:
        return float(self.study.best_value)

    def trials_dataframe(self) -> pd.DataFrame:
        return trials_dataframe(self.study)


def trials_dataframe(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, params_*, user_attrs_* (run ids)."""
    return study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs",
                                         "datetime_start", "datetime_complete", "duration"))


def best_trial_or_none(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def finish(sweep: Sweep, outcome: SweepOutcome, *, refit_best: bool = True) -> TuneResult:
    """Summarise into the parent run and refit the best configuration."""
    study = outcome.study
    best = best_trial_or_none(study)
    best_record: TrialRecord | None = None
    refit_job: concurrent.futures.Future | None = None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit")
    if best is not None:
        if refit_best and not outcome.interrupted:
            # The refit (compile + train, outside the GIL) overlaps the summary and plots.
            refit_job = pool.submit(refit, sweep.dataset, sweep.params_of(best),
                                    sweep.spec.search.seed, search.key_trial(best))
        best_record = outcome.records.get(best.number) or sweep.tracker.load_record(
            best.user_attrs.get(search.ATTR_RUN_ID), best.number)
    best_model: BestModel | None = None

    def model_logger(_run_id: str) -> None:
        nonlocal best_model
        if refit_job is not None:
            with sweep.tracker.not_counting():
                best_model = refit_job.result()
        if best_model is not None:
            log_best_model(best_model, np.asarray(sweep.dataset.X))

    status = "KILLED" if outcome.interrupted else "FINISHED"
    try:
        sweep.tracker.finish_sweep(trials_dataframe(study), best_record, study, status=status,
                                   model_logger=model_logger)
    finally:
        pool.shutdown(wait=True)
    if best_model is None and refit_job is not None:
        best_model = refit_job.result()
    return TuneResult(study, sweep.spec.metric, best_model, sweep.tracker.experiment_id,
                      sweep.tracker.parent_run_id, outcome.interrupted)
