"""The sweep loop shared by the CLI, the Python API and workers.

    ask P trials -> open their MLflow runs -> train (executor) -> log -> tell

Crash safety: a trial is told to Optuna only after its results are in MLflow, so a
finished trial is never lost. Everything else that can happen to a trial (lost, stale,
over budget, orphaned, pruned) is the study lifecycle's (``tuner.search.lifecycle``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from models import ProgramCache, TrialConfig
from tuner import runtime
from tuner.execution.executor import Choices, Executor, ExecutorStats, TrialOutcome
from tuner.execution.executor import choices_for_space
from tuner.inputs.cv import make_folds
from tuner.inputs.data import Dataset
from tuner.inputs.spec import Range, SweepSpec
from tuner.search import space
from tuner.search.lifecycle import key_trial, lifecycle_for, retried_from, wait_for_others
from tuner.search.samplers import make_pruner, make_sampler
from tuner.search.study import ATTR_RUN_ID, ATTR_TARGET
from tuner.summary import model, plots
from tuner.tracking import SweepTracker, TrackingStats, TrialRecord

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

LOST_ON_INTERRUPT = "lost: interrupted before the trial finished"


@dataclasses.dataclass
class Progress:
    done: int
    total: int
    best: float | None
    elapsed_s: float


@dataclasses.dataclass
class SweepStats:
    """Where a sweep's time went (what the fronts print and the benchmarks read)."""

    training: ExecutorStats
    tracking: TrackingStats


@dataclasses.dataclass
class SweepOutcome:
    study: optuna.Study
    records: dict[int, TrialRecord]   # trials finished by this invocation
    stats: SweepStats
    interrupted: bool = False


def space_choices(spec: SweepSpec) -> Choices:
    categorical = {name: list(v) for name, v in spec.space.items() if not isinstance(v, Range)}
    return choices_for_space(categorical, dict(spec.fixed))


class Sweep:
    """One process working on one study (``tuner run``, ``tuner worker``, ``tune()``).

    Open one with ``tuner.execution.session.open_sweep`` / ``join_sweep``.
    """

    def __init__(self, spec: SweepSpec, dataset: Dataset, *, storage_url: str,
                 tracking_uri: str, study_name: str | None = None,
                 artifact_location: str | None = None, worker: int = 0,
                 batch: int | None = None, allow_create: bool = True,
                 programs: ProgramCache | None = None):
        self.spec = spec.with_task(dataset.task) if spec.task is None else spec
        self.dataset = dataset
        self.study_name = study_name or spec.name
        self.batch = batch or spec.search.batch
        self.storage_url = storage_url
        # Storage first: an unreachable database fails before anything is written.
        self.lifecycle = lifecycle_for(
            storage_url, lambda run_id, reason: self.tracker.close_lost_run(run_id, reason))
        self.study = self.lifecycle.open(storage_url, self.study_name, self.spec,
                                         dataset.fingerprint(), make_sampler(self.spec, worker),
                                         make_pruner(self.spec), create=allow_create)
        self.tracker = SweepTracker(tracking_uri, self.study_name, self.spec.metric,
                                    artifact_location=artifact_location)
        if n_trials := len(self.lifecycle.trials()):  # a continuation
            self.study.sampler = make_sampler(self.spec, worker, offset=n_trials)
        self.distributions = space.distributions(self.spec)
        folds, _ = make_folds(dataset, self.spec.cv.folds, self.spec.cv.stratified,
                              self.spec.cv.shuffle, self.spec.cv.seed)
        self.executor = Executor(folds, dataset.task, dataset.n_outputs, self.spec.metric,
                                 space_choices(self.spec), seed=self.spec.search.seed,
                                 programs=programs)
        self.records: dict[int, TrialRecord] = {}

    @property
    def stats(self) -> SweepStats:
        return SweepStats(self.executor.stats, self.tracker.stats)

    # ------------------------------------------------------------------ main loop
    def run(self, trials: int | None = None, progress: Callable[[Progress], None] | None = None,
            stop: threading.Event | None = None) -> SweepOutcome:
        """Work until the study holds ``trials`` counted trials (default: the stored
        budget, else the spec's). KeyboardInterrupt leaves a resumable study."""
        target = self._target(trials)
        self.lifecycle.recover_orphans()
        self.tracker.start_sweep(self.spec.to_yaml(), self._sweep_params(target),
                                 {"study": self.study_name}, run_name=None)
        heartbeat = self.lifecycle.heartbeat()
        # Work needed only by the sweep's summary is done while the first batch trains:
        # the plots' libraries; IPython, which MLflow imports to detect a notebook when
        # the model is logged; and MLflow's map of installed packages for that model.
        runtime.preload_in_background((*plots.PRELOAD_MODULES, "IPython"),
                                      then=(model.prepare_model_logging,))
        started = time.perf_counter()
        asked: list[optuna.Trial] = []
        interrupted = False
        try:
            while stop is None or not stop.is_set():
                self.lifecycle.fail_stale()
                counted, running, waiting = self.lifecycle.budget_state()
                self._report(progress, counted, target, started)
                if counted >= target:
                    break
                n = min(self.batch, max(target - counted - running, waiting))
                if n <= 0:  # others are finishing the last trials; watch for stale ones
                    wait_for_others()
                    continue
                # Beat for each trial as soon as it is asked: a RUNNING trial without any
                # heartbeat is never found stale, so a worker dying here would leave it
                # RUNNING for good (and the others waiting for it).
                for _ in range(n):
                    asked.append(self.study.ask(self.distributions))
                    heartbeat.watch(asked)
                asked = self._drop_over_budget(asked, target)
                heartbeat.watch(asked)
                if asked:
                    self._run_batch(asked)
                asked = []
                heartbeat.watch([])
        except KeyboardInterrupt:
            interrupted = True
            self.lifecycle.interrupted(asked, LOST_ON_INTERRUPT)
            self.tracker.close_running_children(LOST_ON_INTERRUPT)
        finally:
            heartbeat.stop()
        counted, _, _ = self.lifecycle.budget_state()
        self._report(progress, counted, target, started)
        return SweepOutcome(self.study, self.records, self.stats, interrupted)

    def finish(self, outcome: SweepOutcome, *, refit: bool = True):
        """Summarise into the parent run and refit the best configuration: the sweep's
        ``TuneResult`` (``tuner.summary.finalize``)."""
        from tuner.summary.finalize import finish

        return finish(outcome, tracker=self.tracker, dataset=self.dataset, spec=self.spec,
                      params_of=self.params_of, programs=self.executor.programs, refit=refit)

    def _drop_over_budget(self, asked: list[optuna.Trial], target: int) -> list[optuna.Trial]:
        """Trials asked beyond the budget (workers asking at once) are closed as over
        budget (not counted, not retried) and not trained."""
        drop = self.lifecycle.over_budget(asked, target)
        if drop:
            reason = "over budget: other workers took the last trials"
            run_ids = self.tracker.begin_trials([(t.number, {}, None) for t in drop])
            self.tracker.close_runs(list(run_ids.values()), status="KILLED", reason=reason)
            for t in drop:
                self.lifecycle.close_over_budget(t, run_ids[t.number], reason)
        return [t for t in asked if t not in drop]

    def _target(self, trials: int | None) -> int:
        stored = self.study.user_attrs.get(ATTR_TARGET)
        if trials is None and stored is not None:
            return int(stored)
        target = space.target_trials(self.spec, trials)
        self.study.set_user_attr(ATTR_TARGET, target)
        return target

    def _sweep_params(self, target: int) -> dict:
        s = self.spec
        return {"method": s.search.method, "trials": target, "batch": self.batch,
                "seed": s.search.seed, "metric": s.metric, "folds": s.cv.folds,
                "task": self.dataset.task, "data": s.data.source}

    def _report(self, progress, counted: int, target: int, started: float) -> None:
        if progress is None:
            return
        best = None
        try:
            best = self.study.best_value
        except ValueError:
            pass
        progress(Progress(counted, target, best, time.perf_counter() - started))

    def params_of(self, trial: FrozenTrial) -> dict:
        """The trial's hyperparameters under the space's names, plus the fixed ones."""
        return {**dict(self.spec.fixed), **trial.params}

    def config_for(self, trial: FrozenTrial) -> TrialConfig:
        return TrialConfig.from_dict(self.params_of(trial), seed=self.spec.search.seed,
                                     trial=key_trial(trial))

    # ------------------------------------------------------------------ one batch
    def _run_batch(self, asked: list[optuna.Trial]) -> None:
        frozen = [self.lifecycle.frozen(t) for t in asked]
        configs = [self.config_for(t) for t in frozen]
        params = [self.params_of(t) for t in frozen]
        retry_of = [retried_from(t) for t in frozen]
        run_ids = self.tracker.begin_trials(list(zip([t.number for t in frozen], params,
                                                     retry_of)))
        for t in asked:
            t.set_user_attr(ATTR_RUN_ID, run_ids[t.number])
        kept: dict[int, TrialRecord] = {}  # index in ``asked`` -> record
        jobs: list[concurrent.futures.Future] = []
        # Each program's trials are written to MLflow while the next program trains
        # (XLA releases the GIL); they are told to Optuna only once all are logged.
        logger = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-trials")

        def record_group(indices: list[int], outcomes: list[TrialOutcome]) -> None:
            group = [(i, o) for i, o in zip(indices, outcomes)
                     if self._still_ours(asked[i])]
            records = [TrialRecord(number=asked[i].number, params=params[i], state=o.state,
                                   value=o.value, value_std=o.value_std, curves=o.curves,
                                   fail_reason=o.fail_reason, retry_of=retry_of[i],
                                   run_id=run_ids[asked[i].number])
                       for i, o in group]
            self._apply_pruner([asked[i] for i, _ in group], records)
            kept.update(zip([i for i, _ in group], records))
            if records:
                jobs.append(logger.submit(self.tracker.log_trials, records, timed=False))

        try:
            self.executor.run(configs, on_group=record_group)
            with self.tracker.timing():  # only the wait the overlap did not hide
                for job in jobs:
                    job.result()
        finally:
            logger.shutdown(wait=True, cancel_futures=True)
        for i in sorted(kept):
            t, rec = asked[i], kept[i]
            if self.lifecycle.tell(t, rec.state, rec.value, rec.fail_reason):
                self.records[t.number] = rec

    def _still_ours(self, trial: optuna.Trial) -> bool:
        if self.lifecycle.is_running(trial):
            return True
        log.warning("trial %d was failed as stale while this worker was stalled; "
                    "its retry runs elsewhere", trial.number)
        return False

    def _apply_pruner(self, asked: list[optuna.Trial], records: list[TrialRecord]) -> None:
        """Report each epoch's fold-mean metric; a pruned trial keeps its curve up to the
        pruning epoch. The batch trains in one program, so pruning decides the trial's
        state (and what later trials are compared with), not the compute spent."""
        if self.spec.search.pruner == "none":
            return
        name = f"val_{self.spec.metric}"
        for t, rec in zip(asked, records):
            if rec.state != TrialState.COMPLETE:
                continue
            epoch = self.lifecycle.pruned_at(t, rec.curves[name].mean(axis=0))
            if epoch is not None:
                rec.state, rec.value, rec.fail_reason = TrialState.PRUNED, None, None
                rec.curves = {k: v[:, : epoch + 1] for k, v in rec.curves.items()}
