"""Early stopping on a trial's fold-mean validation curve (Keras's rule).

An epoch improves on the best so far when it is better by more than ``min_delta``;
training stops at the epoch that makes ``patience`` epochs in a row without
improvement. The trial's value is then its *best* epoch's, and the refit trains for
that many epochs (``best + 1``), so the refit model is the one the value describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _improves(value: float, best: float, min_delta: float, greater: bool) -> bool:
    if not math.isfinite(value):
        return False
    return value > best + min_delta if greater else value < best - min_delta


def stop_epoch(curve: Sequence[float], patience: int, min_delta: float,
               greater: bool) -> int | None:
    """The 0-based epoch at which training stops (the last one trained), or None."""
    best = -math.inf if greater else math.inf
    wait = 0
    for epoch, value in enumerate(curve):
        if _improves(float(value), best, min_delta, greater):
            best, wait = float(value), 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def best_epoch(curve: Sequence[float], min_delta: float, greater: bool) -> int:
    """The epoch whose value the early-stopped trial reports: the last improvement
    (by ``min_delta``) over every earlier epoch; 0 when none is finite."""
    best, at = (-math.inf if greater else math.inf), 0
    for epoch, value in enumerate(curve):
        if _improves(float(value), best, min_delta, greater):
            best, at = float(value), epoch
    return at
