"""What counts toward a study's budget, and which keys a trial trains with.

Read from Optuna's public trial attributes only (no storage privates)."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tuner.search.study import ATTR_LOST


def lost_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials lost to a crash, an interrupt or a dead worker (and so retried)."""
    lost = {t.number for t in trials if ATTR_LOST in t.user_attrs}
    for t in trials:
        lost.update(t.system_attrs.get("retry_history", []))
    return lost


def budget_state(study: optuna.Study) -> tuple[int, int, int]:
    """(counted, running, waiting) trials: finished trials count, diverged ones included;
    trials lost to a crash do not."""
    trials = study.get_trials(deepcopy=False)
    lost = lost_numbers(trials)
    counted = sum(t.state.is_finished() and t.number not in lost for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return counted, running, waiting


def retried_from(trial: FrozenTrial) -> int | None:
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def key_trial(trial: FrozenTrial) -> int:
    """The trial number a trial trains with: a retry reuses its original trial's keys,
    so it reproduces the result that trial would have had."""
    origin = retried_from(trial)
    return trial.number if origin is None else origin
