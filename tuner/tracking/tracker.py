"""MLflow tracking of a sweep: one parent run per invocation, one nested run per trial.

The layout is a contract (docs/DESIGN.md, "Where results go"):

- experiment = spec ``name``, tagged ``mlflow.experimentKind=custom_model_development``;
- parent run: params (the spec's search settings), artifact ``spec.yaml``, metric
  ``best_<metric>``, artifacts ``trials.csv`` and ``plots/*.png``;
- trial run ``trial-<number>``: tags ``mlflow.parentRunId``, ``optuna.trial_number``
  (``retry_of_trial``, ``fail_reason`` where they apply); params = the hyperparameters;
  metrics ``cv_<metric>``, ``cv_<metric>_std`` and, per epoch (step = epoch from 0),
  ``train_loss``, ``val_loss``, ``val_<metric>`` (fold means), ``fold<k>_val_loss``,
  ``fold<k>_val_<metric>``; status FINISHED / FAILED / KILLED.

Cost: a trial is one ``create_run``, ``ceil(values / 1000)`` ``log_batch`` calls and one
``set_terminated``; never a call per value. Every call goes through an explicit
``MlflowClient(tracking_uri)``: no global MLflow state is read or left behind (the one
exception, ``model_logger``, sets it for the duration of the call and restores it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from tuner.stores import redact_url, sqlite_init_lock, sqlite_path
from tuner.summary import plots
from tuner.process import kill_point, uninterrupted, uninterruptible
from tuner.tracking.records import (
    EXPERIMENT_KIND, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH, RUN_STATUS, TAG_EXPERIMENT_KIND,
    TAG_FAIL_REASON, TAG_PARENT, TAG_REFIT_EPOCHS, TAG_RETRY_OF, TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE, TERMINAL_STATUSES, LoggedResult, TrialRecord, batches, clip,
    curve_metrics, finite,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrackingStats:
    """Seconds the sweep spent waiting on MLflow (writes on a background thread count
    only through the wait for them), and how many runs it opened."""

    seconds: float = 0.0
    runs: int = 0



class SweepTracker:
    """Writes one sweep into an MLflow experiment (see the module docstring for the layout).

    ``artifact_location`` (a ``file://`` URI, or any artifact-store URI) is used when the
    experiment is created; an existing experiment keeps its own. When it is None and the
    tracking store is a sqlite file, it defaults to ``artifacts/`` next to that file, never
    to MLflow's cwd-relative ``./mlartifacts``.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, metric: str, *,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.metric = metric
        if artifact_location is None and (db := sqlite_path(tracking_uri)) is not None:
            artifact_location = (db.expanduser().resolve().parent / "artifacts").as_uri()
        self.artifact_location = artifact_location
        self.parent_run_id: str | None = None
        self.trial_run_ids: dict[int, str] = {}
        self.stats = TrackingStats()
        # The first opening of a fresh sqlite store runs MLflow's schema migrations, which
        # fail when two processes do it at once: serialize it.
        with sqlite_init_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            self.experiment_id: str = self._get_or_create_experiment()

    def __repr__(self) -> str:
        return (f"SweepTracker({redact_url(self.tracking_uri)!r}, {self.experiment_name!r}, "
                f"experiment_id={self.experiment_id!r}, parent_run_id={self.parent_run_id!r})")

    # -- experiment --------------------------------------------------------------------

    def _get_or_create_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment_name,
                    artifact_location=self.artifact_location,
                    tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND},
                )
            except MlflowException as e:
                # Another process created it between our read and our write.
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(self.experiment_name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            log.warning("MLflow experiment %r (id %s) was deleted; restoring it",
                        self.experiment_name, exp.experiment_id)
            self.client.restore_experiment(exp.experiment_id)
        if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return exp.experiment_id

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Count the block's seconds as tracking (e.g. the wait for a logging thread)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stats.seconds += time.perf_counter() - start

    # -- writing -----------------------------------------------------------------------

    @uninterrupted
    def _log(self, run_id: str, metrics: Sequence[Metric] = (),
             params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> None:
        p = [Param(str(k), clip(v, MAX_PARAM_VAL_LENGTH, f"param {k!r}"))
             for k, v in (params or {}).items()]
        t = [RunTag(str(k), clip(v, MAX_TAG_VAL_LENGTH, f"tag {k!r}"))
             for k, v in (tags or {}).items()]
        for mb, pb, tb in batches(metrics, p, t):
            self.client.log_batch(run_id, metrics=mb, params=pb, tags=tb)

    def _abort(self, run_id: str) -> None:
        """Best effort: do not leave a run RUNNING after a write failed half way."""
        try:
            self.client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not mark run %s FAILED", run_id, exc_info=True)

    @uninterrupted
    def start_sweep(self, spec_yaml: str, params: dict[str, Any], tags: dict[str, str],
                    run_name: str | None = None) -> str:
        """Open the parent run of this invocation: ``spec.yaml``, params and tags."""
        with self.timing():
            run = self.client.create_run(self.experiment_id, run_name=run_name)
            run_id = run.info.run_id
            try:
                self._log(run_id, params=params, tags=tags)
                self.client.log_text(run_id, spec_yaml, "spec.yaml")
            except BaseException:
                self._abort(run_id)
                raise
        self.parent_run_id = run_id
        return run_id

    def last_sweep_run(self, study: str):
        """The newest parent run of ``study`` in this experiment (an MLflow ``Run``), or
        None: what a rerun of a finished sweep points at instead of making a new one."""
        name = study.replace("'", "\\'")
        with self.timing():
            runs = self.client.search_runs([self.experiment_id],
                                           filter_string=f"tags.study = '{name}'",
                                           order_by=["attributes.start_time DESC"],
                                           max_results=1)
        return runs[0] if runs else None

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with self.timing():
            self._log(run_id, tags=tags)

    def log_trials(self, records: list[TrialRecord], *, timed: bool = True) -> dict[int, str]:
        """One nested run per record, all values in chunked ``log_batch`` calls.
        Returns trial number -> run id. ``timed=False`` on a background thread, whose
        cost is the caller's wait (counted with ``timing``)."""
        if not timed:
            return self._log_trials(records)
        with self.timing():
            return self._log_trials(records)

    @uninterrupted
    def _log_trials(self, records: list[TrialRecord]) -> dict[int, str]:
        for r in records:
            if r.state not in RUN_STATUS:
                raise ValueError(f"trial {r.number}: state must be one of "
                                 f"{sorted(RUN_STATUS)}, got {r.state!r}")
        out: dict[int, str] = {}
        for r in records:
            tags = self._trial_tags(r.number, r.retry_of)
            if r.fail_reason:
                tags[TAG_FAIL_REASON] = clip(r.fail_reason, MAX_TAG_VAL_LENGTH, "fail_reason")
            result_tags = {TAG_TRIAL_STATE: r.state.name}
            if r.refit_epochs is not None:
                result_tags[TAG_REFIT_EPOCHS] = str(r.refit_epochs)
            params = r.params
            if r.run_id is None:
                self.stats.runs += 1
                run_id = self.client.create_run(self.experiment_id, tags=tags,
                                                run_name=f"trial-{r.number}").info.run_id
                extra_tags = {**r.extra_tags, **result_tags}
            else:  # begun earlier: params and contract tags are there already
                run_id, params = r.run_id, {}
                extra_tags = {**({TAG_FAIL_REASON: tags[TAG_FAIL_REASON]}
                                 if TAG_FAIL_REASON in tags else {}), **r.extra_tags,
                              **result_tags}
            try:
                metrics = curve_metrics(r, self.metric, int(time.time() * 1000))
                self._log(run_id, metrics, params=params, tags=extra_tags)
                kill_point("log")
                # Closed last: a closed run with its state tag holds the whole result.
                self.client.set_terminated(run_id, RUN_STATUS[r.state])
            except BaseException:
                self._abort(run_id)
                raise
            out[r.number] = run_id
            self.trial_run_ids[r.number] = run_id
        return out

    def _trial_tags(self, number: int, retry_of: int | None) -> dict[str, str]:
        tags = {TAG_TRIAL_NUMBER: str(number)}
        if self.parent_run_id is not None:
            tags[TAG_PARENT] = self.parent_run_id
        if retry_of is not None:
            tags[TAG_RETRY_OF] = str(retry_of)
        return tags

    @uninterrupted
    def begin_trials(self, trials: list[tuple[int, dict[str, Any], int | None]]
                     ) -> dict[int, str]:
        """Open a RUNNING run per (number, params, retry_of) before training, so a trial
        that never finishes still has its run (closed later by ``close_runs``)."""
        out: dict[int, str] = {}
        with self.timing():
            for number, params, retry_of in trials:
                run_id = self.client.create_run(self.experiment_id,
                                                tags=self._trial_tags(number, retry_of),
                                                run_name=f"trial-{number}").info.run_id
                self.stats.runs += 1
                try:
                    self._log(run_id, params=params)
                except BaseException:
                    self._abort(run_id)
                    raise
                out[number] = run_id
                self.trial_run_ids[number] = run_id
        return out

    def read_result(self, run_id: str) -> LoggedResult | None:
        """The trial's result if its run holds all of it (closed, with its state tag),
        else None: a crash or a kill may have cut the logging short."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        state = run.data.tags.get(TAG_TRIAL_STATE)
        if run.info.status not in TERMINAL_STATUSES or state not in TrialState.__members__:
            return None
        key = f"val_{self.metric}"
        curve = {m.step: m.value for m in self.client.get_metric_history(run_id, key)} \
            if key in run.data.metrics else {}
        refit = run.data.tags.get(TAG_REFIT_EPOCHS)
        return LoggedResult(TrialState[state], run.data.metrics.get(f"cv_{self.metric}"),
                            curve, run.data.tags.get(TAG_FAIL_REASON),
                            int(refit) if refit else None)

    def load_record(self, run_id: str | None, number: int) -> TrialRecord | None:
        """Rebuild a finished trial's record (curves per fold) from its run, e.g. for the
        best trial of an earlier invocation."""
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        curves: dict[str, np.ndarray] = {}
        for name in ("train_loss", "val_loss", f"val_{self.metric}"):
            folds = []
            for k in range(1000):
                key = f"fold{k}_{name}"
                if key not in run.data.metrics:
                    break
                history = sorted(self.client.get_metric_history(run_id, key),
                                 key=lambda m: m.step)
                folds.append([m.value for m in history])
            if not folds and name in run.data.metrics:  # only the fold mean is logged
                history = sorted(self.client.get_metric_history(run_id, name),
                                 key=lambda m: m.step)
                folds.append([m.value for m in history])
            if folds:
                width = max(len(f) for f in folds)
                curves[name] = np.array([f + [np.nan] * (width - len(f)) for f in folds])
        value = run.data.metrics.get(f"cv_{self.metric}")
        std = run.data.metrics.get(f"cv_{self.metric}_std")
        return TrialRecord(number, dict(run.data.params), TrialState.COMPLETE, value, std, curves,
                           run_id=run_id)

    @uninterrupted
    def close_runs(self, run_ids: list[str], status: str = "KILLED",
                   reason: str | None = None) -> None:
        """Terminate runs left RUNNING (trials lost to a crash or an interrupt); runs that
        already ended keep their status. ``reason`` goes to the ``fail_reason`` tag."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        with self.timing():
            for run_id in run_ids:
                try:
                    if self.client.get_run(run_id).info.status not in ("RUNNING", "SCHEDULED"):
                        continue
                    if reason:
                        self.client.set_tag(run_id, TAG_FAIL_REASON,
                                            clip(reason, MAX_TAG_VAL_LENGTH, "reason"))
                    self.client.set_terminated(run_id, status)
                except MlflowException:
                    log.warning("could not close run %s", run_id, exc_info=True)

    @uninterrupted
    def close_lost_run(self, run_id: str, reason: str) -> None:
        """Close a lost trial's run, and the sweep run of the process that owned it: that
        process stopped, so nobody else will ever end its sweep run."""
        self.close_runs([run_id], status="KILLED", reason=reason)
        try:
            parent = self.client.get_run(run_id).data.tags.get(TAG_PARENT)
        except Exception:  # noqa: BLE001 - the trial run itself is closed already
            log.warning("could not read run %s", run_id, exc_info=True)
            return
        if parent and parent != self.parent_run_id:
            self.close_runs([parent], status="KILLED",
                            reason="its process stopped (trials lost to heartbeat)")
            # Its runs that no Optuna trial points at (killed between creating a run
            # and recording its id) would otherwise stay RUNNING for good.
            self._close_children(parent, reason)

    @uninterrupted
    def close_abandoned(self, reason: str) -> int:
        """Close every run of the experiment still RUNNING (sweep and trial runs), when
        the caller knows no live process owns one (one process per sqlite study): a
        SIGKILL leaves runs open that no Optuna trial points at (killed between creating
        a run and recording its id). Returns how many were closed."""
        with self.timing():
            runs = self.client.search_runs([self.experiment_id],
                                           filter_string="attributes.status = 'RUNNING'")
        self.close_runs([r.info.run_id for r in runs], status="KILLED", reason=reason)
        return len(runs)

    def _close_children(self, parent_run_id: str, reason: str) -> None:
        with self.timing():
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' "
                              "and attributes.status = 'RUNNING'")
        self.close_runs([r.info.run_id for r in runs], status="KILLED", reason=reason)

    @uninterrupted
    def close_running_children(self, reason: str) -> None:
        """Close this invocation's trial runs still RUNNING: an interrupt can land after
        MLflow committed a run and before its id reached Optuna or the tracker."""
        if self.parent_run_id is not None:
            self._close_children(self.parent_run_id, reason)

    def finish_sweep(self, trials_df: pd.DataFrame | None, best: TrialRecord | None,
                     study: optuna.Study | None, status: str = "FINISHED",
                     model_logger: Callable[[str], None] | None = None,
                     metrics: dict[str, float] | None = None, size_curve=None) -> None:
        """Close the parent run: ``best_<metric>``, ``trials.csv``, ``plots/*.png``, the
        model (``model_logger(parent_run_id)``, called inside the parent run's fluent
        context), then status. A plot that cannot be drawn is skipped with a warning; an
        error from ``model_logger`` propagates after the run has been terminated. The
        time inside ``model_logger`` is not counted here: it counts its own MLflow writes
        with ``timing`` (a wait for the refit is not tracking)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        run_id = self.parent_run_id
        if run_id is None:
            raise RuntimeError("finish_sweep() before start_sweep()")
        start = time.perf_counter()
        try:
            tags: dict[str, str] = {}
            stamp = int(time.time() * 1000)
            entries = [Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items()]
            if size_curve is not None:  # step = percent of each fold's training rows
                entries += [Metric(k, float(v), stamp, step)
                            for k, points in size_curve.metrics().items()
                            for step, v in points if finite(v)]
            if best is not None:
                tags["best_trial_number"] = str(best.number)
                if best.number in self.trial_run_ids:
                    tags["best_trial_run_id"] = self.trial_run_ids[best.number]
                if finite(best.value):
                    entries.append(Metric(f"best_{self.metric}", float(best.value), stamp, 0))
            self._log(run_id, entries, tags=tags)
            with tempfile.TemporaryDirectory(prefix="tuner-sweep-") as tmp:
                d = Path(tmp)
                if trials_df is not None:
                    trials_df.to_csv(d / "trials.csv", index=False)
                self._draw_plots(d / "plots", best, study, size_curve)
                with uninterruptible():
                    self.client.log_artifacts(run_id, str(d))
            if model_logger is not None:
                # Its own writes count through ``timing``; a wait for the refit does not.
                self.stats.seconds += time.perf_counter() - start
                with self._fluent_run(run_id):
                    model_logger(run_id)
                start = time.perf_counter()
        finally:
            with uninterruptible():
                self.client.set_terminated(run_id, status)
            self.stats.seconds += time.perf_counter() - start

    def _draw_plots(self, out: Path, best: TrialRecord | None,
                    study: optuna.Study | None, size_curve=None) -> None:
        out.mkdir()
        jobs: list[tuple[str, Callable[[Path], str | None]]] = []
        if size_curve is not None:
            jobs.append(("learning_curve_size.png",
                         lambda path: plots.save_size_curve(size_curve, path)))
        if study is not None:
            jobs.append(("optimization_history.png",
                         lambda path: plots.save_optimization_history(study, path)))
            jobs.append(("param_importances.png",
                         lambda path: plots.save_param_importances(study, path)))
        if best is not None:
            title = f"trial {best.number}"
            if finite(best.value):
                title += f": {self.metric} = {float(best.value):.4g}"
                if finite(best.value_std):
                    title += f" ± {float(best.value_std):.2g}"
            jobs.append(("best_trial_curves.png",
                         lambda path: plots.save_learning_curves(best.curves, self.metric,
                                                                 path, title)))
        for name, job in jobs:
            try:
                why = job(out / name)
            except Exception as e:  # noqa: BLE001 - a plot never fails the sweep
                why = f"{type(e).__name__}: {e}"
            if why is not None:
                log.warning("plot %s skipped: %s", name, why)
                (out / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _fluent_run(self, run_id: str) -> Iterator[None]:
        """``mlflow.start_run(run_id)`` on this tracker's store, for code that can only log
        through MLflow's fluent API (``mlflow.<flavor>.log_model``). The global tracking
        URI (and ``MLFLOW_TRACKING_URI``, which ``set_tracking_uri`` writes) is restored."""
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        prev_uri = getattr(tracking_utils, "_tracking_uri", None)
        prev_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                yield
        finally:
            mlflow.set_tracking_uri(prev_uri)
            if prev_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = prev_env
