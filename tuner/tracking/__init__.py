"""MLflow tracking of a sweep: one parent run per invocation, one nested run per trial.

- ``records``: a finished trial's record and its metrics, packed for ``log_batch``;
- ``tracker``: ``SweepTracker``, which writes them (and counts its seconds).
"""

from tuner.tracking.records import RUN_STATUS, TrialRecord, curve_metrics
from tuner.tracking.tracker import SweepTracker, TrackingStats

__all__ = ["RUN_STATUS", "SweepTracker", "TrackingStats", "TrialRecord", "curve_metrics"]
