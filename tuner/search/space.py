"""The search space as Optuna sees it: distributions, grid points and the trial budget."""

from __future__ import annotations

import logging
import math

from optuna.distributions import (
    BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
)

from tuner.errors import SpecError
from tuner.inputs.spec import Range, SweepSpec

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 20


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, entry in spec.space.items():
        if isinstance(entry, Range):
            if entry.type == "int":
                out[name] = IntDistribution(int(entry.low), int(entry.high), log=entry.log,
                                            step=int(entry.step or 1))
            else:
                out[name] = FloatDistribution(float(entry.low), float(entry.high),
                                              log=entry.log, step=entry.step)
        else:
            out[name] = CategoricalDistribution(list(entry))
    return out


def grid_points(spec: SweepSpec) -> dict[str, list]:
    """Each space entry's grid values: lists as they are, stepped ranges expanded.

    Raises SpecError for a continuous range (a float range without step).
    """
    out = {}
    for name, entry in spec.space.items():
        if isinstance(entry, tuple):
            out[name] = list(entry)
        elif entry.type == "int":
            out[name] = list(range(int(entry.low), int(entry.high) + 1, int(entry.step or 1)))
        elif entry.step is not None:
            n = entry.n_points - 1
            # 12 significant digits hide float noise such as 0.30000000000000004.
            out[name] = [float(f"{entry.low + i * entry.step:.12g}") for i in range(n + 1)]
        else:
            raise SpecError(f"space.{name}: a grid needs a list or a range with step")
    return out


def grid_size(spec: SweepSpec) -> int:
    """Number of points in the full grid (1 for an empty space)."""
    return math.prod(len(v) for v in grid_points(spec).values())


def target_trials(spec: SweepSpec, trials: int | None) -> int:
    """The study's budget: asked for, else the spec's; a grid holds at most its points."""
    wanted = trials if trials is not None else spec.search.trials
    if spec.search.method == "grid":
        size = grid_size(spec)
        if wanted is not None and wanted > size:
            log.warning("the grid has %d points; %d trials asked, running %d", size, wanted, size)
        return size if wanted is None else min(wanted, size)
    return DEFAULT_TRIALS if wanted is None else wanted
