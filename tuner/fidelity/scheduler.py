"""Which live trials train next, from which epoch to which.

Trials of one program train in lockstep (they share the minibatch order of each fold,
so the first layer of every lane is one wide matrix product). A live trial therefore
waits in the queue of its epoch count; a segment takes up to ``batch`` trials of one
queue and trains them to the next epoch where one of them must stop: a pruner decision
(``DecisionPoints``), an early-stopping check, or the end of its own epochs.

Freed lanes are reused by *compaction*: when a decision prunes lanes, the survivors
go on in fewer lanes (lane counts come from a small fixed set, see
``tuner.execution.executor.lane_buckets``, so compaction compiles nothing new), and a
batch is finished before new trials are asked, so TPE proposes each batch knowing every
result of the last. The alternative, *merging* (survivors wait at their epoch until a
full batch has gathered there from several batches, newly asked trials taking the lanes
meanwhile; ``merge=True``), was measured on W4 and rejected: 871-921 trial-epochs and
27.5 s of training against 759-774 and 16.7-18.0 s (docs/decisions.md, "Multi-fidelity").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from models import TrialConfig
from models.train import SEGMENT_EPOCHS
from tuner.fidelity.pruners import DecisionPoints


@dataclasses.dataclass(eq=False)
class LiveTrial:
    """A trial between ask and tell: its config, the epochs it has trained, its state
    (host arrays; None before its first segment) and its curves so far."""

    trial: Any                      # optuna.Trial
    config: TrialConfig
    params: dict
    run_id: str
    retry_of: int | None = None
    epochs_done: int = 0
    reported: int = 0               # epochs reported to Optuna
    state: tuple | None = None
    chunks: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.trial.number

    def add_segment(self, curves: dict[str, np.ndarray], state: tuple, epochs: int) -> None:
        for name, values in curves.items():
            self.chunks.setdefault(name, []).append(values)
        self.state = state
        self.epochs_done += epochs

    def curves(self) -> dict[str, np.ndarray]:
        """name -> [F, epochs_done]."""
        return {k: np.concatenate(v, axis=-1) for k, v in self.chunks.items()}


class RungScheduler:
    """The policy above; ``merge=True`` is the measured alternative."""

    def __init__(self, batch: int, decisions: DecisionPoints,
                 check_every: int | None = None, merge: bool = False) -> None:
        self.batch = batch
        self.decisions = decisions
        self.check_every = check_every
        self.merge = merge

    def stop_epochs(self, t: LiveTrial) -> int:
        """The epoch count at which ``t`` must stop next."""
        stop = min(t.config.epochs, t.epochs_done + SEGMENT_EPOCHS)
        rung = self.decisions.next_epochs(t.epochs_done)
        if rung is not None:
            stop = min(stop, rung)
        if self.check_every:
            stop = min(stop, (t.epochs_done // self.check_every + 1) * self.check_every)
        return stop

    def wanted(self, pool: Sequence[LiveTrial]) -> int:
        """How many new trials the pool takes now (before the budget's limit)."""
        if self.merge:
            return max(0, self.batch - sum(t.epochs_done == 0 for t in pool))
        return self.batch if not pool else 0

    def next_segment(self, pool: Sequence[LiveTrial], more_coming: bool
                     ) -> tuple[list[LiveTrial], int, int]:
        """(members, start epoch, stop epoch) of the next segment of a non-empty pool.

        more_coming: whether new trials can still be asked (so shallow queues refill).
        """
        queues: dict[int, list[LiveTrial]] = {}
        for t in sorted(pool, key=lambda t: t.number):
            queues.setdefault(t.epochs_done, []).append(t)
        if not self.merge:
            epoch = max(queues)                       # finish what was started first
        elif more_coming and (full := [e for e, q in queues.items() if len(q) >= self.batch]):
            epoch = max(full)                         # the deepest full queue
        else:
            epoch = min(queues)                       # flush from the shallowest up
        members = queues[epoch][: self.batch]
        return members, epoch, min(self.stop_epochs(t) for t in members)
