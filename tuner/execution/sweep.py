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
from tuner.process import kill_point, uninterruptible
from tuner.execution.executor import (
    Choices, Executor, ExecutorStats, SegmentOutcome, choices_for_space,
)
from tuner.fidelity.judge import Judge
from tuner.fidelity.pruners import DecisionPoints, make_pruner
from tuner.fidelity.scheduler import LiveTrial, RungScheduler
from tuner.inputs.cv import make_folds
from tuner.inputs.data import Dataset
from tuner.inputs.spec import Range, SweepSpec
from tuner.search import space
from tuner.search.lifecycle import key_trial, lifecycle_for, retried_from, wait_for_others
from tuner.search.samplers import make_sampler
from tuner.search.study import ATTR_REFIT_EPOCHS, ATTR_RUN_ID, ATTR_TARGET
from tuner.summary import model, plots
from tuner.tracking import SweepTracker, TrackingStats, TrialRecord
from tuner.tracking.null import NullTracker

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

LOST_ON_INTERRUPT = "lost: interrupted before the trial finished"
ABANDONED = "its process ended before it finished"


@dataclasses.dataclass
class Progress:
    done: int
    total: int
    best: float | None
    elapsed_s: float
    pruned: int = 0
    failed: int = 0
    phase: str = ""        # what the process is doing: "compiling program 1 of 2", ...
    started_done: int = 0  # trials counted when this invocation started


@dataclasses.dataclass
class SweepStats:
    """Where a sweep's time went (what the fronts print and the benchmarks read).

    epochs_unpruned: trial-epochs the ended trials would have trained without pruning or
    early stopping (``training.trial_epochs`` is what they did train)."""

    training: ExecutorStats
    tracking: TrackingStats
    epochs_unpruned: int = 0


@dataclasses.dataclass
class SweepOutcome:
    study: optuna.Study
    records: dict[int, TrialRecord]   # trials finished by this invocation
    stats: SweepStats
    interrupted: bool = False   # stopped before the budget (a stop signal, Ctrl-C)
    aborted: bool = False       # stopped at once (a second signal): no summary to write
    # At its budget already, with its last summary finished: nothing was run, no parent
    # run opened; ``last_run`` is that summary's MLflow run (what the fronts point at).
    up_to_date: bool = False
    last_run: object = None


def space_choices(spec: SweepSpec) -> Choices:
    categorical = {name: list(v) for name, v in spec.space.items() if not isinstance(v, Range)}
    return choices_for_space(categorical, dict(spec.fixed))


class Sweep:
    """One process working on one study (``tuner run``, ``tuner worker``, ``tune()``).

    Open one with ``tuner.execution.session.open_sweep`` / ``join_sweep``.
    """

    def __init__(self, spec: SweepSpec, dataset: Dataset, *, storage_url: str,
                 tracking_uri: str | None, study_name: str | None = None,
                 artifact_location: str | None = None, worker: int = 0,
                 batch: int | None = None, allow_create: bool = True,
                 programs: ProgramCache | None = None, splits=None):
        self.spec = spec.with_task(dataset.task) if spec.task is None else spec
        self.dataset = dataset
        self.study_name = study_name or spec.name
        self.batch = batch or spec.search.batch
        self.storage_url = storage_url
        # Storage first: an unreachable database fails before anything is written.
        self.lifecycle = lifecycle_for(
            storage_url, lambda run_id, reason: self.tracker.close_lost_run(run_id, reason),
            lambda run_id: self.tracker.read_result(run_id))
        self.study = self.lifecycle.open(storage_url, self.study_name, self.spec,
                                         dataset.fingerprint(), make_sampler(self.spec, worker),
                                         make_pruner(self.spec), create=allow_create)
        # tracking_uri None: tracking off (the scikit-learn API's default)
        self.tracker = NullTracker(self.spec.metric) if tracking_uri is None else \
            SweepTracker(tracking_uri, self.study_name, self.spec.metric,
                         artifact_location=artifact_location)
        if n_trials := len(self.lifecycle.trials()):  # a continuation
            self.study.sampler = make_sampler(self.spec, worker, offset=n_trials)
        self.distributions = space.distributions(self.spec)
        # splits: (train_idx, val_idx) per fold given by the caller (a scikit-learn cv)
        folds, self.splits = make_folds(dataset, self.spec.cv.folds, self.spec.cv.stratified,
                                        self.spec.cv.shuffle, self.spec.cv.seed, splits=splits)
        self.executor = Executor(folds, dataset.task, dataset.n_outputs, self.spec.metric,
                                 space_choices(self.spec), seed=self.spec.search.seed,
                                 programs=programs, batch=self.batch)
        decisions = DecisionPoints.of(self.spec)
        es = self.spec.search.early_stopping
        self.scheduler = RungScheduler(self.batch, decisions,
                                       check_every=es.patience if es is not None else None)
        self.judge = Judge(self.spec.metric, self.spec.greater_is_better, decisions, es,
                           self.lifecycle)
        self.records: dict[int, TrialRecord] = {}
        self.pool: list[LiveTrial] = []
        self._progress: Callable[[Progress], None] | None = None
        self._phase = ""
        self._last_progress: Progress | None = None
        self._started_done = 0
        self.executor.on_phase = self._set_phase
        self.epochs_full = 0  # epochs the ended trials would have trained unpruned

    @property
    def stats(self) -> SweepStats:
        return SweepStats(self.executor.stats, self.tracker.stats, self.epochs_full)

    # ------------------------------------------------------------------ main loop
    def run(self, trials: int | None = None, progress: Callable[[Progress], None] | None = None,
            stop: threading.Event | None = None,
            notify: Callable[[str], None] | None = None,
            resummarize: bool = False) -> SweepOutcome:
        """Work until the study holds ``trials`` counted trials (default: the stored
        budget, else the spec's). KeyboardInterrupt leaves a resumable study.
        ``notify`` receives one-line notices (how many trials are done and new, what was
        recovered from a crash).

        A study already at its budget whose last parent run FINISHED is left as it is
        (``SweepOutcome.up_to_date``: no parent run, nothing to summarise) unless
        ``resummarize``; when that run did not finish (a stop inside the summary), the
        summary is done again."""
        target = self._target(trials)
        self._recover(notify)
        counted, _, _ = self.lifecycle.budget_state()
        self._announce(trials, counted, target, notify)
        self._phase = "starting"
        self._progress, self._started_done = progress, counted
        if counted >= target and not resummarize:
            last = self.tracker.last_sweep_run(self.study_name)
            if last is not None and last.info.status == "FINISHED":
                if notify is not None:
                    notify(f"{self.study_name}: the last summary (run {last.info.run_id}) "
                           "is complete: no new parent run, no refit (--refit to "
                           "summarise and refit again)")
                self._report(progress, counted, target, time.perf_counter())
                return SweepOutcome(self.study, {}, self.stats, up_to_date=True,
                                    last_run=last)
            if last is not None and notify is not None:
                notify(f"{self.study_name}: the last summary (run {last.info.run_id}) did "
                       f"not finish ({last.info.status}): summarising again")
        self.tracker.start_sweep(self.spec.to_yaml(), self._sweep_params(target),
                                 {"study": self.study_name}, run_name=self._run_name())
        heartbeat = self.lifecycle.heartbeat()
        # Work needed only by the sweep's summary is done while the first batch trains:
        # the plots' libraries; IPython, which MLflow imports to detect a notebook when
        # the model is logged; and MLflow's map of installed packages for that model.
        # (Untracked, as MLPSearchCV by default, there is no summary to prepare.)
        if not isinstance(self.tracker, NullTracker):
            runtime.preload_in_background((*plots.PRELOAD_MODULES, "IPython"),
                                          then=(model.prepare_model_logging,))
        started = time.perf_counter()
        self.pool: list[LiveTrial] = []
        asking: list[optuna.Trial] = []  # asked, not in the pool yet
        interrupted = aborted = False
        try:
            while stop is None or not stop.is_set():
                self.lifecycle.fail_stale()
                counted, running, waiting = self.lifecycle.budget_state()
                self._report(progress, counted, target, started)
                room = max(target - counted - running, waiting)
                n_new = min(self.scheduler.wanted(self.pool), room)
                for _ in range(n_new):
                    # Beat for each trial as soon as it is asked: a RUNNING trial without
                    # any heartbeat is never found stale, so a worker dying here would
                    # leave it RUNNING for good (and the others waiting for it).
                    asking.append(self.lifecycle.ask(self.distributions))
                    heartbeat.watch([t.trial for t in self.pool] + asking)
                self._enter(self._drop_over_budget(asking, target))
                asking = []
                heartbeat.watch([t.trial for t in self.pool])
                if not self.pool:
                    if counted >= target:
                        break
                    wait_for_others()  # others are finishing the last trials
                    continue
                more_coming = room > n_new  # later asks will refill the shallow queues
                self._run_segment(*self.scheduler.next_segment(self.pool, more_coming))
        except KeyboardInterrupt:
            interrupted = aborted = True
            self.lifecycle.interrupted([t.trial for t in self.pool] + asking, LOST_ON_INTERRUPT)
            self.tracker.close_running_children(LOST_ON_INTERRUPT)
            self.pool = []
        finally:
            heartbeat.stop()
        if self.pool:  # stopped between segments (first Ctrl-C, SIGTERM): retried later
            self.lifecycle.interrupted([t.trial for t in self.pool], LOST_ON_INTERRUPT)
            self.pool = []
        counted, _, _ = self.lifecycle.budget_state()
        self._report(progress, counted, target, started)
        return SweepOutcome(self.study, self.records, self.stats, interrupted, aborted)

    def _announce(self, trials: int | None, counted: int, target: int,
                  notify: Callable[[str], None] | None) -> None:
        """Say at the start what this invocation will do: trials done and new."""
        if notify is None:
            return
        if trials is not None and trials < counted:
            notify(f"{self.study_name}: {trials} trials asked for, but {counted} are "
                   f"already done: no new trial is run")
        elif counted >= target:
            notify(f"{self.study_name}: all {target} trials are done: none to run "
                   f"(--trials N for a larger budget)")
        else:
            notify(f"{self.study_name}: {counted} trials done, {target - counted} new "
                   f"(budget {target})")

    def _recover(self, notify: Callable[[str], None] | None) -> None:
        """What a killed process left: its trials told from MLflow or lost (and queued
        again), its runs closed."""
        started = time.perf_counter()
        self.lifecycle.recover_orphans()
        closed = 0
        if self.lifecycle.owns_study:  # every RUNNING run is a dead process's
            closed = self.tracker.close_abandoned(ABANDONED)
        told, lost = self.lifecycle.recovered["told"], self.lifecycle.recovered["lost"]
        if notify is not None and (told or lost or closed):
            notify(f"recovered from an earlier stop in {time.perf_counter() - started:.1f}s: "
                   f"{told} trial(s) told from their MLflow runs (not trained again), "
                   f"{lost} lost and queued again, {closed} run(s) left open closed")

    def finish(self, outcome: SweepOutcome, *, refit: bool = True,
               register: str | None = None):
        """Summarise into the parent run and refit the best configuration (registered as
        ``register`` in MLflow's Model Registry when given): the sweep's ``TuneResult``
        (``tuner.summary.finalize``)."""
        from tuner.summary.finalize import finish

        return finish(outcome, tracker=self.tracker, dataset=self.dataset, spec=self.spec,
                      params_of=self.params_of, programs=self.executor.programs, refit=refit,
                      splits=self.splits, register=register, phase=self._set_phase)

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

    def _run_name(self) -> str:
        """The parent run's name in MLflow's runs table: which sweep, which invocation."""
        return f"{self.study_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"

    def _sweep_params(self, target: int) -> dict:
        s = self.spec
        return {"method": s.search.method, "trials": target, "batch": self.batch,
                "seed": s.search.seed, "metric": s.metric, "folds": s.cv.folds,
                "task": self.dataset.task, "data": s.data.source}

    def _report(self, progress, counted: int, target: int, started: float) -> None:
        if progress is None:
            return
        trials = self.lifecycle.trials()
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        pick = max if self.spec.greater_is_better else min
        best = pick(t.value for t in done) if done else None
        states = [t.state for t in trials]
        self._last_progress = Progress(counted, target, best, time.perf_counter() - started,
                                       pruned=states.count(TrialState.PRUNED),
                                       failed=states.count(TrialState.FAIL),
                                       phase=self._phase, started_done=self._started_done)
        progress(self._last_progress)

    def _set_phase(self, phase: str) -> None:
        """Tell the progress display what starts now (the counts as last reported)."""
        self._phase = phase
        if self._progress is not None and self._last_progress is not None:
            self._progress(dataclasses.replace(self._last_progress, phase=phase))

    def params_of(self, trial: FrozenTrial) -> dict:
        """The trial's hyperparameters under the space's names, plus the fixed ones."""
        return {**dict(self.spec.fixed), **trial.params}

    def config_for(self, trial: FrozenTrial) -> TrialConfig:
        return TrialConfig.from_dict(self.params_of(trial), seed=self.spec.search.seed,
                                     trial=key_trial(trial))

    # ------------------------------------------------------------------ segments
    def _enter(self, asked: list[optuna.Trial]) -> None:
        """Open the MLflow runs of newly asked trials and put them in the pool."""
        if not asked:
            return
        frozen = [self.lifecycle.asked(t) for t in asked]
        params = [self.params_of(t) for t in frozen]
        retry_of = [retried_from(t) for t in frozen]
        run_ids = self.tracker.begin_trials(list(zip([t.number for t in frozen], params,
                                                     retry_of)))
        kill_point("runs")
        for t, f, p, r in zip(asked, frozen, params, retry_of):
            if run_ids[t.number]:
                with uninterruptible():
                    t.set_user_attr(ATTR_RUN_ID, run_ids[t.number])
            self.pool.append(LiveTrial(t, self.config_for(f), p, run_ids[t.number], r))

    def _run_segment(self, members: list[LiveTrial], start: int, stop: int) -> None:
        """Train ``members`` from epoch ``start`` to ``stop``; end the trials that end.

        Each program's trials are judged (Optuna reports and pruning) as soon as it is
        done, and the ended ones written to MLflow while the next program trains (XLA
        releases the GIL); they are told to Optuna once all are logged."""
        ended: list[tuple[LiveTrial, TrialRecord]] = []
        jobs: list[concurrent.futures.Future] = []
        logger = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-trials")

        def judge_group(indices: list[int], outcomes: list[SegmentOutcome]) -> None:
            records = []
            for i, o in zip(indices, outcomes):
                t = members[i]
                if not self._still_ours(t.trial):
                    self.pool.remove(t)
                    continue
                if o.error is not None:
                    rec = self.judge.failed(t, o.error)
                else:
                    t.add_segment(o.curves, o.state, stop - start)
                    rec = self.judge.after_segment(t, o.diverged_epoch)
                if rec is not None:
                    self.pool.remove(t)
                    self.epochs_full += t.config.epochs
                    ended.append((t, rec))
                    records.append(rec)
            if records:
                jobs.append(logger.submit(self.tracker.log_trials, records, timed=False))

        try:
            kill_point("train")
            self.executor.train([t.config for t in members], [t.state for t in members],
                                start, stop - start, on_group=judge_group)
            if any(not job.done() for job in jobs):
                self._set_phase("logging trials to MLflow")
            with self.tracker.timing():  # only the wait the overlap did not hide
                for job in jobs:
                    job.result()
        finally:
            logger.shutdown(wait=True, cancel_futures=True)
        for t, rec in ended:
            kill_point("tell")
            if rec.refit_epochs is not None:
                with uninterruptible():
                    t.trial.set_user_attr(ATTR_REFIT_EPOCHS, rec.refit_epochs)
            if self.lifecycle.tell(t.trial, rec.state, rec.value, rec.fail_reason):
                self.records[t.number] = rec

    def _still_ours(self, trial: optuna.Trial) -> bool:
        if self.lifecycle.is_running(trial):
            return True
        log.warning("trial %d was failed as stale while this worker was stalled; "
                    "its retry runs elsewhere", trial.number)
        return False
