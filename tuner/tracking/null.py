"""Tracking turned off (scikit-learn's MLPSearchCV without a tracking URI): the
tracker's interface, writing nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from tuner.tracking.records import TrialRecord
from tuner.tracking.tracker import TrackingStats


class NullTracker:
    """Accepts every call of ``SweepTracker`` and records nothing; runs have id ""."""

    tracking_uri = None
    experiment_id = None
    parent_run_id = None

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.stats = TrackingStats()
        self.trial_run_ids: dict[int, str] = {}

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        yield

    def start_sweep(self, *args: Any, **kwargs: Any) -> str:
        return ""

    def begin_trials(self, trials: list[tuple[int, dict, int | None]]) -> dict[int, str]:
        return {number: "" for number, _, _ in trials}

    def log_trials(self, records: list[TrialRecord], *, timed: bool = True) -> dict[int, str]:
        return {r.number: "" for r in records}

    def close_runs(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close_lost_run(self, run_id: str, reason: str) -> None:
        return None

    def close_running_children(self, reason: str) -> None:
        return None

    def load_record(self, run_id: str | None, number: int) -> TrialRecord | None:
        return None

    def read_result(self, run_id: str) -> None:
        return None

    def close_abandoned(self, reason: str) -> int:
        return 0

    def last_sweep_run(self, study: str) -> None:
        return None

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        return None

    def finish_sweep(self, trials_df, best, study, status: str = "FINISHED",
                     model_logger: Callable[[str], None] | None = None,
                     metrics: dict[str, float] | None = None, size_curve=None) -> None:
        return None
