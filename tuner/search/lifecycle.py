"""The trial lifecycle of a sweep, and the one place that reaches into Optuna's privates.

A trial is asked, trained, logged and told. Around that, trials get lost: a process
dies (its trials stay RUNNING), a worker stalls past the grace period (the others fail
its trials as stale), workers asking at once overshoot the budget. The rules:

- a lost trial is failed with user attribute ``lost`` (not counted) and re-queued with
  Optuna's ``RetryHeartbeatStaleTrialCallback`` (at most ``MAX_RETRY`` times); its MLflow
  run is closed KILLED through ``close_lost_run(run_id, reason)``;
- a retry trains with the keys of the trial it retries (``key_trial``);
- the budget is the count of finished trials that are not lost (``budget_state``).

Two storages, two behaviours, chosen once (``open_lifecycle``): sqlite serves a single
process (``SingleProcessLifecycle``: RUNNING trials at start are orphans, unless one has
a fresh heartbeat, which means another live process); a shared database serves many
workers (``SharedLifecycle``: stale trials are failed before every batch, workers that
together overshoot the budget drop the excess).

Optuna's ask/tell loop records no heartbeats (its own only run inside ``optimize``), so
``Heartbeat`` records them for the trials in flight.
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tuner.inputs.spec import SweepSpec
from tuner.process import kill_point, uninterrupted, uninterruptible
from tuner.search import study as studies
from tuner.search.counting import budget_state, key_trial, lost_numbers, retried_from
from tuner.search.owner import owner_is_dead, this_process
from tuner.search.study import (
    ATTR_FAIL_REASON, ATTR_LOST, ATTR_REFIT_EPOCHS, ATTR_RUN_ID, GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S, MAX_RETRY, StorageError,
)
from tuner.stores import sqlite_init_lock

if TYPE_CHECKING:
    from tuner.tracking.records import LoggedResult

log = logging.getLogger(__name__)

AnyTrial = optuna.Trial | FrozenTrial
CloseLostRun = Callable[[str, str], None]  # (run_id, reason)
ReadResult = Callable[[str], "LoggedResult | None"]  # run_id -> its complete result
ATTR_RECOVERED = "recovered"  # told from its MLflow run after its process was lost
ATTR_OWNER = "owner"  # study attribute: host and pid of the process running a sqlite study


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def _trial_id(trial: AnyTrial) -> int:
    return trial._trial_id  # noqa: SLF001 - no public accessor for the storage id


# --------------------------------------------------------------------------- heartbeat
class Heartbeat:
    """Records Optuna heartbeats for the trials in flight, every ``interval`` seconds,
    in a thread of its own; ``stop()`` ends and joins it."""

    def __init__(self, storage: RDBStorage, interval: float):
        self._storage, self._interval = storage, interval
        self._trial_ids: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self._thread.start()

    def watch(self, trials: Sequence[AnyTrial]) -> None:
        """Beat for ``trials`` from now on; a trial new to the list beats at once."""
        ids = [_trial_id(t) for t in trials]
        with self._lock:
            new = [tid for tid in ids if tid not in self._trial_ids]
            self._trial_ids = ids
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
        if self._thread is not threading.current_thread():
            self._thread.join()


def _without_heartbeat(storage: RDBStorage, trials: Sequence[FrozenTrial]
                       ) -> list[FrozenTrial]:
    """The trials that have no heartbeat recorded. Reads Optuna's heartbeat table: no
    public API tells whether a trial has a beat."""
    from optuna.storages._rdb.models import TrialHeartbeatModel

    if not trials:
        return []
    session = storage.scoped_session()
    try:
        return [t for t in trials
                if TrialHeartbeatModel.where_trial_id(_trial_id(t), session) is None]
    finally:
        session.close()


# --------------------------------------------------------------------------- lifecycle
class TrialLifecycle:
    """What happens to a study's trials besides ask and tell (see the module docstring).

    ``close_lost_run(run_id, reason)`` closes the MLflow run of a lost trial (a no-op on
    a run that ended) and the sweep run of the process that owned it.
    """

    shared = False
    owns_study = False  # no other process, alive or dead, can be running this study

    def __init__(self, close_lost_run: CloseLostRun,
                 read_result: ReadResult | None = None) -> None:
        self._close_lost_run = close_lost_run
        self._read_result = read_result
        # What ``recover`` did, for the fronts' notice: trials told from MLflow, lost.
        self.recovered = {"told": 0, "lost": 0}
        self.storage: RDBStorage
        self.study: optuna.Study

    # ------------------------------------------------------------------ opening
    def open(self, url: str, name: str, spec: SweepSpec, data_fp: str, sampler, pruner,
             *, create: bool) -> optuna.Study:
        """Open the storage (an unreachable database fails before anything is written)
        and create or load the study, checking its spec and data."""
        # The lock keeps two processes from creating one sqlite schema at once.
        with sqlite_init_lock(url):
            self.storage = studies.open_storage(url)
            if create:
                self.study = studies.create_or_load_study(self.storage, name, spec, data_fp,
                                                          sampler, pruner)
            else:
                self.study = studies.load_study(self.storage, name, sampler, pruner)
                studies.check_data(self.study, data_fp)
        return self.study

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.storage, HEARTBEAT_INTERVAL_S)

    @uninterrupted
    def ask(self, distributions: dict) -> optuna.Trial:
        kill_point("ask")
        return self.study.ask(distributions)

    # ------------------------------------------------------------------ reading
    def frozen(self, trial: AnyTrial) -> FrozenTrial:
        """The trial as the storage holds it now."""
        return self.storage.get_trial(_trial_id(trial))

    def asked(self, trial: optuna.Trial) -> FrozenTrial:
        """A trial just asked, as ask left it (params, retry attributes), without a read
        of the storage: ``optuna.Trial`` keeps that copy itself."""
        return trial._cached_frozen_trial  # noqa: SLF001

    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def is_running(self, trial: AnyTrial) -> bool:
        """Still RUNNING in the storage: a worker stalled past the grace period finds its
        trials failed as stale by the others (who queued their retries)."""
        return self.frozen(trial).state == TrialState.RUNNING

    def budget_state(self) -> tuple[int, int, int]:
        return budget_state(self.study)

    # ------------------------------------------------------------------ pruning
    @uninterrupted
    def report(self, trial: optuna.Trial, curve: Sequence[float], start: int = 0) -> None:
        """Report ``curve`` (the fold-mean metric of epochs ``start``, ``start + 1``, ...)
        as intermediate values at step = epoch."""
        for epoch, value in enumerate(curve, start=start):
            trial.report(float(value), epoch)

    @uninterrupted
    def should_prune(self, trial: optuna.Trial) -> bool:
        """The study's pruner on the trial's last reported step."""
        return trial.should_prune()

    # ------------------------------------------------------------------ ending trials
    @uninterrupted
    def tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None,
             fail_reason: str | None = None) -> bool:
        """Tell a trained trial's result; False when another worker failed it as stale
        meanwhile (its retry runs elsewhere)."""
        try:
            if fail_reason:
                trial.set_user_attr(ATTR_FAIL_REASON, fail_reason)
            if state == TrialState.COMPLETE:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was failed as stale by another worker meanwhile",
                        trial.number)
            return False
        return True

    @uninterrupted
    def lose(self, trial: AnyTrial, reason: str) -> None:
        """Fail a trial that will never finish here, close its run, queue its retry."""
        tid = _trial_id(trial)
        try:
            self.storage.set_trial_user_attr(tid, ATTR_LOST, reason)
            self.storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another process got there first
        frozen = self.storage.get_trial(tid)
        if run_id := frozen.user_attrs.get(ATTR_RUN_ID):
            self._close_lost_run(run_id, reason)
        if len(frozen.system_attrs.get("retry_history", [])) < MAX_RETRY:
            # The retry copies the trial's user attrs; the "lost" mark must not go with
            # it, or the retry would never count toward the budget.
            source = copy.deepcopy(frozen)
            source.user_attrs = {k: v for k, v in frozen.user_attrs.items() if k != ATTR_LOST}
            _retry(self.study, source)

    @uninterrupted
    def recover(self, trial: AnyTrial, reason: str) -> bool:
        """A trial that will not finish where it started (its process died, or was
        stopped): told from its MLflow run when the run holds the whole result (logged,
        then the crash came before the tell: not trained again), else lost (FAIL, its
        run closed KILLED with ``reason``, retried). True when told."""
        frozen = self.frozen(trial)
        run_id = frozen.user_attrs.get(ATTR_RUN_ID)
        result = self._read_result(run_id) if run_id and self._read_result else None
        if result is None:
            self.lose(frozen, reason)
            self.recovered["lost"] += 1
            return False
        tid = _trial_id(frozen)
        try:
            if not isinstance(self.study.pruner, optuna.pruners.NopPruner):
                for step, value in sorted(result.curve.items()):  # as the live run reports
                    if step not in frozen.intermediate_values:
                        self.storage.set_trial_intermediate_value(tid, step, value)
            if result.fail_reason:
                self.storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, result.fail_reason)
            if result.refit_epochs is not None:
                self.storage.set_trial_user_attr(tid, ATTR_REFIT_EPOCHS, result.refit_epochs)
            self.storage.set_trial_user_attr(tid, ATTR_RECOVERED, reason)
            values = None
            if result.state == TrialState.COMPLETE:
                values = [result.value]
            elif result.state == TrialState.PRUNED and result.curve:
                values = [result.curve[max(result.curve)]]  # as Optuna's tell does
            self.storage.set_trial_state_values(tid, result.state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # another process got there first
        log.info("trial %d recovered from its MLflow run (%s)", frozen.number,
                 result.state.name)
        # The run is closed already; this closes the sweep run of the process that died
        # (nobody else would), as for a lost trial.
        self._close_lost_run(run_id, reason)
        self.recovered["told"] += 1
        return True

    @uninterrupted
    def close_over_budget(self, trial: optuna.Trial, run_id: str, reason: str) -> None:
        trial.set_user_attr(ATTR_RUN_ID, run_id)
        trial.set_user_attr(ATTR_LOST, reason)
        self.study.tell(trial, state=TrialState.FAIL)

    def interrupted(self, asked: Sequence[optuna.Trial], reason: str) -> None:
        """The trials an interrupt caught in flight: told if logged, else lost."""
        for t in asked:
            self.recover(t, reason)

    # ------------------------------------------------------------------ per storage
    def recover_orphans(self) -> None:
        """At start: retry trials left RUNNING by a dead process."""
        raise NotImplementedError

    def fail_stale(self) -> None:
        """Before each batch: fail (and retry) trials whose worker stopped beating."""
        raise NotImplementedError

    def over_budget(self, asked: list[optuna.Trial], target: int) -> list[optuna.Trial]:
        """Which of the ``asked`` trials lie beyond the budget of ``target``."""
        raise NotImplementedError


class SingleProcessLifecycle(TrialLifecycle):
    """sqlite: one process per study, so every RUNNING trial at start is an orphan."""

    owns_study = True  # once recover_orphans found no live process

    def recover_orphans(self) -> None:
        # A RUNNING trial with a fresh heartbeat may mean another live process: refuse
        # rather than race it. Unless the process that ran the study last is known dead
        # (same host, its pid gone: a restart right after a kill), wait up to the grace
        # period for the beats to go stale. The rest are orphans of a dead process.
        running = self.trials(states=(TrialState.RUNNING,))
        alive = self._live(running)
        if alive and not owner_is_dead(self.study.user_attrs.get(ATTR_OWNER)):
            deadline = time.monotonic() + GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S
            while alive and time.monotonic() < deadline:
                time.sleep(min(1.0, HEARTBEAT_INTERVAL_S))
                alive = self._live(self.trials(states=(TrialState.RUNNING,)))
            if alive:
                raise StorageError(
                    f"study {self.study.study_name!r} is being run by another process "
                    f"(trial {alive[0].number} heartbeat within {GRACE_PERIOD_S}s); sqlite "
                    "serves one process: wait for it, or share the study through "
                    "PostgreSQL (--storage postgresql://...) with `tuner worker`")
        with uninterruptible():
            self.study.set_user_attr(ATTR_OWNER, this_process())
        for t in self.trials(states=(TrialState.RUNNING,)):
            self.recover(t, "lost: process ended before the trial finished")

    def _live(self, running: list[FrozenTrial]) -> list[FrozenTrial]:
        """RUNNING trials whose process is alive: a heartbeat recorded, and not stale.

        Reads Optuna's heartbeat table (no public API tells whether a trial has a beat; a
        trial killed between ask and its first beat has none and is an orphan)."""
        stale = set(self.storage._get_stale_trial_ids(self.study._study_id))  # noqa: SLF001
        unbeaten = {_trial_id(t) for t in _without_heartbeat(self.storage, running)}
        return [t for t in running if _trial_id(t) not in stale | unbeaten]

    def fail_stale(self) -> None:
        return None  # nobody else can hold a trial of this study

    def is_running(self, trial: AnyTrial) -> bool:
        return True  # nobody else can end a trial of this study

    def over_budget(self, asked: list[optuna.Trial], target: int) -> list[optuna.Trial]:
        return []  # one process: the count it saw is exact

    def interrupted(self, asked: Sequence[optuna.Trial], reason: str) -> None:
        # Every RUNNING trial is ours, also one the interrupt caught inside study.ask
        # (not in ``asked`` yet).
        for t in self.trials(states=(TrialState.RUNNING,)):
            self.recover(t, reason)


class SharedLifecycle(TrialLifecycle):
    """A database shared by workers: stale trials are failed as they are found, and
    workers asking at once may overshoot the budget."""

    shared = True

    def recover_orphans(self) -> None:
        self.fail_stale()

    def fail_stale(self) -> None:
        # Optuna's fail_stale_trials would fail a trial whose result is whole in MLflow
        # (its worker died between logging and telling); recover tells it instead.
        stale = self.storage._get_stale_trial_ids(self.study._study_id)  # noqa: SLF001
        for tid in stale:
            self.recover(self.storage.get_trial(tid), "lost: worker stopped heartbeating")
        # Optuna finds only trials with a beat stale; a worker killed between asking a
        # trial and its first beat leaves one that never would be. Started longer than
        # the grace period ago (by its worker's clock) and still unbeaten: lost too.
        running = self.trials(states=(TrialState.RUNNING,))
        horizon = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_PERIOD_S)
        for t in _without_heartbeat(self.storage, running):
            if t.datetime_start is not None and t.datetime_start < horizon:
                self.recover(t, "lost: worker ended before its first heartbeat")

    def over_budget(self, asked: list[optuna.Trial], target: int) -> list[optuna.Trial]:
        # Trials are numbered in creation order, so the first ``target`` trials that are
        # not lost are the budget; a later one is closed as over budget.
        trials = self.trials()
        lost = lost_numbers(trials)
        live = sorted(t.number for t in trials
                      if t.number not in lost and t.state != TrialState.WAITING)
        return [t for t in asked if live.index(t.number) >= target]


class InMemoryLifecycle(SingleProcessLifecycle):
    """Optuna's in-memory storage: one process, nothing left from an earlier one, no
    heartbeats to record."""

    owns_study = False  # its tracker (if any) may hold other processes' runs

    def heartbeat(self) -> "_NoHeartbeat":
        return _NoHeartbeat()

    def recover_orphans(self) -> None:
        return None


class _NoHeartbeat:
    def watch(self, trials) -> None:  # noqa: ARG002
        return None

    def stop(self) -> None:
        return None


def lifecycle_for(storage_url: str, close_lost_run: CloseLostRun,
                  read_result: ReadResult | None = None) -> TrialLifecycle:
    """The lifecycle rules of a storage: single-process for sqlite (and memory), shared
    otherwise. ``read_result(run_id)`` reads a trial's whole result from MLflow."""
    if studies.is_memory(storage_url):
        return InMemoryLifecycle(close_lost_run, read_result)
    cls = SingleProcessLifecycle if studies.is_sqlite(storage_url) else SharedLifecycle
    return cls(close_lost_run, read_result)


def wait_for_others() -> None:
    """Others are finishing the last trials: wait a heartbeat for stale ones."""
    time.sleep(HEARTBEAT_INTERVAL_S)


__all__ = [
    "Heartbeat", "budget_state", "SharedLifecycle", "SingleProcessLifecycle",
    "TrialLifecycle", "key_trial", "lifecycle_for", "lost_numbers", "retried_from",
    "wait_for_others",
]
