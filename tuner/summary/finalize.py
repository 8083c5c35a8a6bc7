"""After the loop: the parent run's summary, the best trial's curves and the refit model."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable

import optuna
import pandas as pd

from models import ProgramCache
from tuner.inputs.data import Dataset
from tuner.inputs.spec import SweepSpec
from tuner.process import kill_point
from tuner.search.lifecycle import key_trial
from tuner.search.study import ATTR_REFIT_EPOCHS, ATTR_RUN_ID
from tuner.summary.model import BestModel, log_best_model
from tuner.summary.size_curve import size_curve
from tuner.summary.model import refit as refit_model
from tuner.tracking import SweepTracker, TrialRecord

log = logging.getLogger(__name__)

TAG_MODEL_URI = "model_uri"  # parent run tag: where its refit model loads from


@dataclasses.dataclass
class TuneResult:
    """What a sweep produced (the Python API's return value; the CLI presents it).

    stats: where the time went (``tuner.execution.sweep.SweepStats``).
    """

    study: optuna.Study
    metric: str
    best_model: BestModel | None
    experiment_id: str
    parent_run_id: str | None
    tracking_uri: str
    stats: object = None
    interrupted: bool = False
    size_curve: object = None   # tuner.summary.size_curve.SizeCurve, or None
    # runs:/<parent run>/model, or models:/<name>/<version> when registered; None
    # without a model. A rerun of a finished sweep points at its last summary's.
    model_uri: str | None = None
    up_to_date: bool = False    # nothing was run or summarised (the budget was done)

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


def finish(outcome, *, tracker: SweepTracker, dataset: Dataset, spec: SweepSpec,
           params_of: Callable[[optuna.trial.FrozenTrial], dict], programs: ProgramCache,
           refit: bool = True, splits=None, register: str | None = None,
           phase: Callable[[str], None] | None = None) -> TuneResult:
    """Summarise ``outcome`` (a ``SweepOutcome``) into the parent run, refit the best
    configuration on all of ``dataset`` (registered as ``register`` when given) and draw
    its learning curve against training-set size over ``splits``. ``phase`` is told
    what starts ("summary", "refit", "model").

    An up-to-date outcome (a finished sweep run again) writes nothing: the result
    points at the last summary's parent run and model."""
    study = outcome.study
    say = phase or (lambda _: None)
    if getattr(outcome, "up_to_date", False):
        last = outcome.last_run
        return TuneResult(study, spec.metric, None, tracker.experiment_id,
                          last.info.run_id, tracker.tracking_uri, outcome.stats,
                          False, None, model_uri=last.data.tags.get(TAG_MODEL_URI),
                          up_to_date=True)
    say("summary and refit" if refit and not outcome.interrupted
        else "summary")
    best = best_trial_or_none(study)
    best_record: TrialRecord | None = None
    curve = None
    refit_job: concurrent.futures.Future | None = None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit")
    if best is not None:
        epochs = best.user_attrs.get(ATTR_REFIT_EPOCHS)
        if refit and not outcome.interrupted:
            # The refit (compile + train, outside the GIL) overlaps the summary and plots.
            refit_job = pool.submit(refit_model, dataset, params_of(best), spec.search.seed,
                                    key_trial(best), programs=programs, epochs=epochs)
        if splits is not None and spec.learning_curve is not False \
                and not outcome.interrupted:
            curve = size_curve(dataset, splits, params_of(best), spec.search.seed,
                               key_trial(best), spec.metric, programs, epochs)
        best_record = outcome.records.get(best.number) or tracker.load_record(
            best.user_attrs.get(ATTR_RUN_ID), best.number)
    best_model: BestModel | None = None
    model_uri: str | None = None

    def model_logger(run_id: str) -> None:
        nonlocal best_model, model_uri
        if refit_job is not None:
            if not refit_job.done():
                say("refit on all the data")
            best_model = refit_job.result()  # a wait for training, not tracking
        kill_point("model")
        if best_model is not None:
            say("logging the model")
            with tracker.timing():
                info = log_best_model(best_model, dataset, registered_model_name=register)
            version = getattr(info, "registered_model_version", None)
            model_uri = (f"models:/{register}/{version}" if register and version
                         else f"runs:/{run_id}/model")
            tracker.set_tags(run_id, {TAG_MODEL_URI: model_uri})

    kill_point("finish")
    status = "KILLED" if outcome.interrupted else "FINISHED"
    training = outcome.stats.training
    metrics = {"trial_epochs_trained": training.trial_epochs,
               "trial_epochs_unpruned": outcome.stats.epochs_unpruned}
    try:
        if getattr(outcome, "aborted", False):  # stopped at once: only close the run
            tracker.finish_sweep(None, None, None, status=status, metrics=metrics)
        else:
            tracker.finish_sweep(trials_dataframe(study), best_record, study, status=status,
                                 model_logger=model_logger, metrics=metrics,
                                 size_curve=curve)
    finally:
        pool.shutdown(wait=True)
    if best_model is None and refit_job is not None:
        best_model = refit_job.result()
    return TuneResult(study, spec.metric, best_model, tracker.experiment_id,
                      tracker.parent_run_id, tracker.tracking_uri, outcome.stats,
                      outcome.interrupted, curve, model_uri=model_uri)


