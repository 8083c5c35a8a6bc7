"""Optuna's pruners, built from the spec, and the epochs at which each can decide.

Resource = epochs. A trial reports its fold-mean validation metric at step = epoch
(0-based, the step MLflow shows), so ``min_resource: 2`` judges a trial at step 2, after
its third epoch. The decisions are Optuna's own (``should_prune``); this module only
knows *when* asking can change anything, so that a segment of training ends there:

- median / percentile: at steps ``n_warmup_steps + k * interval_steps``;
- successive halving: at its rungs ``min_resource * reduction_factor ** (rate + k)``;
- hyperband: at the rungs of its first bracket (every other bracket's rungs are a
  subset: bracket b judges at ``min_resource * reduction_factor ** (b + k)``).
"""

from __future__ import annotations

import dataclasses

import optuna

from models.hparams import HPARAMS
from tuner.inputs.spec import PrunerSpec, Range, SweepSpec

DEFAULT_MIN_RESOURCE = 1
DEFAULT_PERCENTILE = 25.0


def max_epochs(spec: SweepSpec) -> int:
    """The largest epoch count a trial of the sweep can have."""
    if "epochs" in spec.fixed:
        return int(spec.fixed["epochs"])
    entry = spec.space.get("epochs")
    if entry is None:
        return int(HPARAMS["epochs"].default)  # type: ignore[arg-type]
    return int(entry.high) if isinstance(entry, Range) else int(max(entry))


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The study's Optuna pruner, with the spec's parameters."""
    p: PrunerSpec = spec.search.pruner
    kw = p.params
    if p.kind == "none":
        return optuna.pruners.NopPruner()
    if p.kind == "median":
        return optuna.pruners.MedianPruner(**kw)
    if p.kind == "percentile":
        kw.setdefault("percentile", DEFAULT_PERCENTILE)
        return optuna.pruners.PercentilePruner(**kw)
    kw.setdefault("min_resource", DEFAULT_MIN_RESOURCE)
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**kw)
    kw.setdefault("max_resource", max(max_epochs(spec), kw["min_resource"]))
    return optuna.pruners.HyperbandPruner(**kw)


@dataclasses.dataclass(frozen=True)
class DecisionPoints:
    """The steps (0-based epochs) at which the study's pruner can stop a trial."""

    kind: str
    first: int = 0          # the first step a decision can happen at
    interval: int = 1       # median/percentile: steps between decisions
    factor: int = 1         # successive halving/hyperband: the reduction factor

    @classmethod
    def of(cls, spec: SweepSpec) -> "DecisionPoints":
        p = spec.search.pruner
        kw = p.params
        if p.kind in ("median", "percentile"):
            return cls(p.kind, kw.get("n_warmup_steps", 0), kw.get("interval_steps", 1))
        if p.kind in ("successive_halving", "hyperband"):
            factor = kw.get("reduction_factor", 4 if p.kind == "successive_halving" else 3)
            rate = kw.get("min_early_stopping_rate", 0)
            return cls(p.kind, kw.get("min_resource", DEFAULT_MIN_RESOURCE) * factor ** rate,
                       factor=factor)
        return cls("none")

    def decides_at(self, step: int) -> bool:
        if self.kind == "none" or step < self.first:
            return False
        if self.kind in ("median", "percentile"):
            return (step - self.first) % self.interval == 0
        rung = self.first
        while rung < step:
            rung *= self.factor
        return rung == step

    def next_epochs(self, epochs_done: int) -> int | None:
        """The smallest epoch count > ``epochs_done`` after which the pruner can decide
        (the decision looks at step = that count - 1), or None."""
        if self.kind == "none":
            return None
        step = max(epochs_done, self.first)
        if self.kind in ("median", "percentile"):
            k = -(-(step - self.first) // self.interval)
            return self.first + k * self.interval + 1
        rung = self.first
        while rung < step:
            rung *= self.factor
        return rung + 1
