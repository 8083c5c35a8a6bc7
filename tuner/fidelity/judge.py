"""What a trial's last segment means for it: go on, or end COMPLETE, PRUNED or FAIL.

After each segment, in this order:
1. a non-finite loss ends the trial FAIL (``diverged: ...``), its curves cut there;
2. early stopping (when configured) ends it COMPLETE at the epoch it stops, with the
   value of its best epoch (``tuner.fidelity.early_stopping``);
3. its new epochs are reported to Optuna (step = epoch, when a pruner is set), and at a
   decision point the study's pruner may end it PRUNED, its curves ending there;
4. at its last epoch it ends COMPLETE with the value of that epoch (of its best epoch
   when early stopping is configured).
Curves, reported values and the value always describe the same epochs.
"""

from __future__ import annotations

import numpy as np
from optuna.trial import TrialState

from tuner.fidelity.early_stopping import best_epoch, stop_epoch
from tuner.fidelity.pruners import DecisionPoints
from tuner.fidelity.scheduler import LiveTrial
from tuner.inputs.spec import EarlyStoppingSpec
from tuner.tracking import TrialRecord

TAG_STOPPED = "early_stopped_at_epoch"
TAG_BEST_EPOCH = "best_epoch"


class Judge:
    """Ends trials by the rules above; ``lifecycle`` reports to Optuna and asks its pruner."""

    def __init__(self, metric: str, greater_is_better: bool, decisions: DecisionPoints,
                 early_stopping: EarlyStoppingSpec | None, lifecycle) -> None:
        self.metric = metric
        self.greater = greater_is_better
        self.decisions = decisions
        self.early_stopping = early_stopping
        self.lifecycle = lifecycle
        self.reporting = decisions.kind != "none"

    def after_segment(self, t: LiveTrial, diverged_epoch: np.ndarray) -> TrialRecord | None:
        """The trial's record if it ends now, else None (it trains on)."""
        curves = t.curves()
        mean = curves[f"val_{self.metric}"].mean(axis=0)            # [epochs_done]
        if (diverged_epoch >= 0).any():
            fold = int(np.argmax(diverged_epoch >= 0))
            epoch = int(diverged_epoch[fold])
            loss = curves["train_loss"][fold, epoch]
            if np.isfinite(loss):
                loss = curves["val_loss"][fold, epoch]
            self._report(t, mean, epoch)
            return self._record(t, TrialState.FAIL, curves, epoch + 1,
                                fail_reason=f"diverged: loss {loss} at epoch {epoch} "
                                            f"(fold {fold})")
        if self.early_stopping is not None:
            es = self.early_stopping
            stop = stop_epoch(mean, es.patience, es.min_delta, self.greater)
            if stop is not None:
                self._report(t, mean, stop + 1)
                return self._complete(t, curves, stop + 1, stopped=True)
        self._report(t, mean, t.epochs_done)
        last = t.epochs_done >= t.config.epochs
        if (not last and self.decisions.decides_at(t.epochs_done - 1)
                and self.lifecycle.should_prune(t.trial)):
            return self._record(t, TrialState.PRUNED, curves, t.epochs_done)
        return self._complete(t, curves, t.epochs_done) if last else None

    def failed(self, t: LiveTrial, reason: str) -> TrialRecord:
        """A trial whose program failed: FAIL with the reason, curves so far."""
        curves = t.curves() if t.chunks else {}
        return self._record(t, TrialState.FAIL, curves, t.epochs_done, fail_reason=reason)

    # ------------------------------------------------------------------ helpers
    def _report(self, t: LiveTrial, mean: np.ndarray, upto: int) -> None:
        """Report the epochs [t.reported, upto) that are finite."""
        if self.reporting and upto > t.reported:
            values = mean[t.reported:upto]
            finite = np.flatnonzero(np.isfinite(values))
            for i in finite.tolist():
                self.lifecycle.report(t.trial, [values[i]], start=t.reported + i)
            t.reported = upto

    def _complete(self, t: LiveTrial, curves: dict, epochs: int, stopped: bool = False
                  ) -> TrialRecord:
        fold_curve = curves[f"val_{self.metric}"][:, :epochs]
        mean = fold_curve.mean(axis=0)
        tags: dict[str, str] = {}
        at = epochs - 1
        if self.early_stopping is not None:
            at = best_epoch(mean, self.early_stopping.min_delta, self.greater)
            tags[TAG_BEST_EPOCH] = str(at)
            if stopped:
                tags[TAG_STOPPED] = str(epochs - 1)
        values = fold_curve[:, at].astype(float)
        if not np.all(np.isfinite(values)):
            return self._record(t, TrialState.FAIL, curves, epochs,
                                fail_reason=f"metric {self.metric} is not finite")
        rec = self._record(t, TrialState.COMPLETE, curves, epochs, value=float(values.mean()),
                           value_std=float(values.std()), extra_tags=tags)
        rec.refit_epochs = at + 1
        return rec

    @staticmethod
    def _record(t: LiveTrial, state: TrialState, curves: dict, epochs: int, *,
                value: float | None = None, value_std: float | None = None,
                fail_reason: str | None = None, extra_tags: dict | None = None
                ) -> TrialRecord:
        return TrialRecord(number=t.number, params=t.params, state=state, value=value,
                           value_std=value_std,
                           curves={k: v[:, :epochs] for k, v in curves.items()},
                           fail_reason=fail_reason, retry_of=t.retry_of,
                           extra_tags=dict(extra_tags or {}), run_id=t.run_id)
