"""The sweep loop shared by the CLI, the Python API and workers.

    ask P trials -> create their MLflow runs -> train (executor) -> log -> tell

Crash safety: a trial is told to Optuna only after its results are in MLflow, so a
finished trial is never lost. Trials in flight when the process dies stay RUNNING; the
next process (sqlite: at start; shared RDB: once their heartbeat is stale) fails them,
closes their MLflow runs and re-queues them with Optuna's retry callback. A trial
lost that way does not count toward the budget; its retry does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import logging
import threading
import time
from typing import Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from models.hparams import TrialConfig
from tuner import model, plots, runtime, search
from tuner.cv import make_folds
from tuner.data import Dataset
from tuner.executor import Choices, Executor, TrialOutcome, choices_for_space
from tuner.spec import Range, SweepSpec
from tuner.stores import sqlite_init_lock
from tuner.tracking import SweepTracker, TrialRecord

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclasses.dataclass
class Progress:
    done: int
    total: int
    best: float | None
    elapsed_s: float


@dataclasses.dataclass
class SweepOutcome:
    study: optuna.Study
    tracker: "TimedTracker"
    records: dict[int, TrialRecord]
    executor: Executor
    interrupted: bool = False


class TimedTracker:
    """The tracker, with the seconds spent in its calls counted (tracking overhead)."""

    def __init__(self, tracker: SweepTracker):
        self._tracker = tracker
        self.seconds = 0.0

    @property
    def untimed(self) -> SweepTracker:
        """The tracker itself, for calls whose time is accounted by ``counting``."""
        return self._tracker

    def counting(self):
        """Count the time inside the block as tracking (e.g. waiting for a logging thread)."""
        return self._adding(+1.0)

    def not_counting(self):
        """Leave out work done inside a tracker call that is not tracking (the refit)."""
        return self._adding(-1.0)

    @contextlib.contextmanager
    def _adding(self, sign: float):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += sign * (time.perf_counter() - start)

    def __getattr__(self, name: str):
        attr = getattr(self._tracker, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


class _Heartbeat:
    """Records Optuna heartbeats for the trials in flight (Optuna's own heartbeat only
    runs inside ``study.optimize``, and this loop asks and tells itself)."""

    def __init__(self, storage, interval: float):
        self._storage, self._interval = storage, interval
        self._trial_ids: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self._thread.start()

    def watch(self, trial_ids: list[int]) -> None:
        """Beat for ``trial_ids`` from now on; a trial new to the list beats at once."""
        with self._lock:
            new = [tid for tid in trial_ids if tid not in self._trial_ids]
            self._trial_ids = list(trial_ids)
        self._record(new)

    def _record(self, ids: list[int] | None = None) -> None:
        if ids is None:
            with self._lock:
                ids = list(self._trial_ids)
        for tid in ids:
            try:
                self._storage.record_heartbeat(tid)
            except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                log.warning("heartbeat failed for trial id %s", tid, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            self._record()

    def stop(self) -> None:
        self._stop.set()


def space_choices(spec: SweepSpec) -> Choices:
    categorical = {name: list(v) for name, v in spec.space.items() if not isinstance(v, Range)}
    return choices_for_space(categorical, dict(spec.fixed))


class Sweep:
    """One process working on one study (``tuner run``, ``tuner worker``, ``tune()``)."""

    def __init__(self, spec: SweepSpec, dataset: Dataset, *, storage_url: str,
                 tracking_uri: str, study_name: str | None = None,
                 artifact_location: str | None = None, worker: int = 0,
                 batch: int | None = None, allow_create: bool = True):
        self.spec = spec.with_task(dataset.task) if spec.task is None else spec
        self.dataset = dataset
        self.study_name = study_name or spec.name
        self.batch = batch or spec.search.batch
        self.storage_url = storage_url
        sampler = search.make_sampler(self.spec, worker)
        pruner = search.make_pruner(self.spec)
        # Storage first: an unreachable database fails before anything is written. The
        # lock keeps two processes from creating one sqlite schema at once.
        with sqlite_init_lock(storage_url):
            self.storage = search.open_storage(storage_url, on_stale=self._on_stale)
            if allow_create:
                self.study = search.create_or_load_study(
                    self.storage, self.study_name, self.spec, dataset.fingerprint(),
                    sampler, pruner)
            else:
                self.study = search.load_study(self.storage, self.study_name, sampler, pruner)
                search.check_data(self.study, dataset.fingerprint())
        if n_trials := len(self.study.get_trials(deepcopy=False)):  # a continuation
            self.study.sampler = search.make_sampler(self.spec, worker, offset=n_trials)
        self.tracker = TimedTracker(SweepTracker(tracking_uri, self.study_name,
                                                 self.spec.metric,
                                                 artifact_location=artifact_location))
        self.distributions = search.distributions(self.spec)
        folds, _ = make_folds(dataset, self.spec.cv.folds, self.spec.cv.stratified,
                              self.spec.cv.shuffle, self.spec.cv.seed)
        self.executor = Executor(folds, dataset.task, dataset.n_outputs, self.spec.metric,
                                 space_choices(self.spec), seed=self.spec.search.seed)
        self.records: dict[int, TrialRecord] = {}

    # ------------------------------------------------------------------ lost trials
    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose worker died: close its MLflow run, then retry it."""
        run_id = trial.user_attrs.get(search.ATTR_RUN_ID)
        if run_id:
            self._close_dead_runs(run_id, "lost: worker stopped heartbeating")
        retries = len(trial.system_attrs.get("retry_history", []))
        if retries < search.MAX_RETRY:
            search.retry_callback()(study, trial)

    def _close_dead_runs(self, run_id: str, reason: str) -> None:
        """Close a lost trial's run and the sweep run of the process that owned it: that
        process stopped heartbeating, so nobody else will ever end its sweep run."""
        self.tracker.close_runs([run_id], status="KILLED", reason=reason)
        try:
            parent = self.tracker.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        except Exception:  # noqa: BLE001 - the trial run itself is closed already
            log.warning("could not read run %s", run_id, exc_info=True)
            return
        if parent and parent != self.tracker.parent_run_id:
            self.tracker.close_runs([parent], status="KILLED",
                                    reason="its process stopped (trials lost to heartbeat)")

    def _recover_orphans(self) -> None:
        """Fail and retry trials left RUNNING by a dead process."""
        if search.is_sqlite(self.storage_url):
            # sqlite serves a single process. A RUNNING trial with a fresh heartbeat
            # means another live process: refuse rather than race it. The rest are
            # orphans of a dead process.
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            alive = search.live_trials(self.storage, self.study, running)
            if alive:
                raise search.StorageError(
                    f"study {self.study_name!r} is being run by another process (trial "
                    f"{alive[0].number} heartbeat within {search.GRACE_PERIOD_S}s); sqlite "
                    "serves one process: wait for it, or share the study through "
                    "PostgreSQL (--storage postgresql://...) with `tuner worker`")
            for t in running:
                self._lose(t, "lost: process ended before the trial finished")
        else:
            optuna.storages.fail_stale_trials(self.study)

    def _lose(self, trial: FrozenTrial, reason: str) -> None:
        try:
            self.study._storage.set_trial_user_attr(trial._trial_id, search.ATTR_LOST, reason)
            self.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another process got there first
        frozen = self.study._storage.get_trial(trial._trial_id)
        run_id = frozen.user_attrs.get(search.ATTR_RUN_ID)
        if run_id:
            self._close_dead_runs(run_id, reason)
        if len(frozen.system_attrs.get("retry_history", [])) < search.MAX_RETRY:
            # The retry copies the trial's user attrs; the "lost" mark must not go with
            # it, or the retry would never count toward the budget.
            source = copy.deepcopy(frozen)
            source.user_attrs = {k: v for k, v in frozen.user_attrs.items()
                                 if k != search.ATTR_LOST}
            search.retry_callback()(self.study, source)

    # ------------------------------------------------------------------ main loop
    def run(self, trials: int | None = None, progress: Callable[[Progress], None] | None = None,
            stop: threading.Event | None = None) -> SweepOutcome:
        """Work until the study holds ``trials`` counted trials (default: the stored
        budget, else the spec's). KeyboardInterrupt leaves a resumable study."""
        target = self._target(trials)
        self._recover_orphans()
        self.tracker.start_sweep(self.spec.to_yaml(), self._sweep_params(target),
                                 {"study": self.study_name}, run_name=None)
        heartbeat = _Heartbeat(self.storage, search.HEARTBEAT_INTERVAL_S)
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
                if not search.is_sqlite(self.storage_url):
                    optuna.storages.fail_stale_trials(self.study)
                counted, running, waiting = search.budget_state(self.study)
                self._report(progress, counted, target, started)
                if counted >= target:
                    break
                n = min(self.batch, max(target - counted - running, waiting))
                if n <= 0:  # others are finishing the last trials; watch for stale ones
                    time.sleep(search.HEARTBEAT_INTERVAL_S)
                    continue
                # Beat for each trial as soon as it is asked: a RUNNING trial without any
                # heartbeat is never found stale, so a worker dying here would leave it
                # RUNNING for good (and the others waiting for it).
                for _ in range(n):
                    asked.append(self.study.ask(self.distributions))
                    heartbeat.watch([t._trial_id for t in asked])
                asked = self._drop_over_budget(asked, target)
                heartbeat.watch([t._trial_id for t in asked])
                if asked:
                    self._run_batch(asked)
                asked = []
                heartbeat.watch([])
        except KeyboardInterrupt:
            interrupted = True
            if search.is_sqlite(self.storage_url):
                # One process per sqlite study: every RUNNING trial is ours, also one
                # the interrupt caught inside study.ask (not in ``asked`` yet).
                asked = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            for t in asked:
                self._lose(self.study._storage.get_trial(t._trial_id),
                           "lost: interrupted before the trial finished")
            self._close_running_trial_runs("lost: interrupted before the trial finished")
        finally:
            heartbeat.stop()
        counted, _, _ = search.budget_state(self.study)
        self._report(progress, counted, target, started)
        return SweepOutcome(self.study, self.tracker, self.records, self.executor, interrupted)

    def _close_running_trial_runs(self, reason: str) -> None:
        """Close this invocation's trial runs still RUNNING: an interrupt can land after
        MLflow committed a run and before its id reached Optuna or the tracker."""
        parent = self.tracker.parent_run_id
        if parent is None:
            return
        runs = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}' "
                          "and attributes.status = 'RUNNING'")
        self.tracker.close_runs([r.info.run_id for r in runs], status="KILLED", reason=reason)

    def _drop_over_budget(self, asked: list[optuna.Trial], target: int) -> list[optuna.Trial]:
        """Workers asking at the same moment can together ask for more than the budget.
        Trials are numbered in creation order, so the first ``target`` trials that are not
        lost are the budget; a later one is closed as over budget (not counted, not
        retried) and not trained."""
        if search.is_sqlite(self.storage_url):
            return asked  # one process: the count it saw is exact
        trials = self.study.get_trials(deepcopy=False)
        lost = search.lost_numbers(trials)
        live = sorted(t.number for t in trials
                      if t.number not in lost and t.state != TrialState.WAITING)
        keep, drop = [], []
        for t in asked:
            (keep if live.index(t.number) < target else drop).append(t)
        if drop:
            reason = "over budget: other workers took the last trials"
            run_ids = self.tracker.begin_trials([(t.number, {}, None) for t in drop])
            self.tracker.close_runs(list(run_ids.values()), status="KILLED", reason=reason)
            for t in drop:
                t.set_user_attr(search.ATTR_RUN_ID, run_ids[t.number])
                t.set_user_attr(search.ATTR_LOST, reason)
                self.study.tell(t, state=TrialState.FAIL)
        return keep

    def _target(self, trials: int | None) -> int:
        stored = self.study.user_attrs.get(search.ATTR_TARGET)
        if trials is None and stored is not None:
            return int(stored)
        target = search.target_trials(self.spec, trials)
        self.study.set_user_attr(search.ATTR_TARGET, target)
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
                                     trial=search.key_trial(trial))

    def _run_batch(self, asked: list[optuna.Trial]) -> None:
        frozen = [self.study._storage.get_trial(t._trial_id) for t in asked]
        configs = [self.config_for(t) for t in frozen]
        params = [self.params_of(t) for t in frozen]
        retry_of = [search.retried_from(t) for t in frozen]
        run_ids = self.tracker.begin_trials(list(zip([t.number for t in frozen], params,
                                                     retry_of)))
        for t in asked:
            t.set_user_attr(search.ATTR_RUN_ID, run_ids[t.number])
        kept: dict[int, TrialRecord] = {}  # index in ``asked`` -> record
        jobs: list[concurrent.futures.Future] = []
        # Each program's trials are written to MLflow while the next program trains
        # (XLA releases the GIL); they are told to Optuna only once all are logged.
        logger = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-trials")

        def record_group(indices: list[int], outcomes: list[TrialOutcome]) -> None:
            group = [(i, o) for i, o in zip(indices, outcomes) if self._still_ours(asked[i])]
            records = [TrialRecord(number=asked[i].number, params=params[i], state=o.state,
                                   value=o.value, value_std=o.value_std, curves=o.curves,
                                   fail_reason=o.fail_reason, retry_of=retry_of[i],
                                   run_id=run_ids[asked[i].number])
                       for i, o in group]
            self._apply_pruner([asked[i] for i, _ in group], records)
            kept.update(zip([i for i, _ in group], records))
            if records:
                jobs.append(logger.submit(self.tracker.untimed.log_trials, records))

        try:
            self.executor.run(configs, on_group=record_group)
            with self.tracker.counting():  # only the wait the overlap did not hide
                for job in jobs:
                    job.result()
        finally:
            logger.shutdown(wait=True, cancel_futures=True)
        for i in sorted(kept):
            t, rec = asked[i], kept[i]
            try:
                if rec.fail_reason:
                    t.set_user_attr(search.ATTR_FAIL_REASON, rec.fail_reason)
                if rec.state == "COMPLETE":
                    self.study.tell(t, rec.value)
                elif rec.state == "PRUNED":
                    self.study.tell(t, state=TrialState.PRUNED)
                else:
                    self.study.tell(t, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                log.warning("trial %d was failed as stale by another worker meanwhile",
                            t.number)
                continue
            self.records[t.number] = rec

    def _still_ours(self, trial: optuna.Trial) -> bool:
        """A worker paused past the grace period finds its trials failed as stale by the
        others (who closed their runs and queued retries): their results are dropped."""
        if self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
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
            if rec.state != "COMPLETE":
                continue
            curve = np.asarray(rec.curves[name]).mean(axis=0)
            for epoch, value in enumerate(curve):
                t.report(float(value), epoch)
                if t.should_prune():
                    rec.state, rec.value = "PRUNED", None
                    rec.fail_reason = None
                    rec.curves = {k: v[:, : epoch + 1] for k, v in rec.curves.items()}
                    break
