"""The multi-fidelity part of a spec's ``search`` section: the pruner and early stopping.

    pruner: hyperband                        # short form: none | median | percentile |
                                             #   successive_halving | hyperband
    pruner: {kind: hyperband, min_resource: 2, reduction_factor: 3}
    early_stopping: {patience: 5, min_delta: 0.0}

The parameters are those of Optuna's pruner classes (the resource is the epoch: an
intermediate value is reported at step = epoch, 0-based). Defaults that Optuna leaves to
"auto" are set here: ``min_resource`` 1, hyperband's ``max_resource`` the sweep's
largest epoch count, a percentile pruner's ``percentile`` 25.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pydantic import StrictFloat, StrictInt, field_validator, model_serializer, model_validator

from tuner.inputs.spec.messages import FieldError, show, suggest
from tuner.inputs.spec.base import SpecModel

# kind -> the Optuna constructor arguments it takes here
PRUNER_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps",
                   "n_min_trials"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate",
                           "bootstrap_count"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
}
PRUNERS = tuple(PRUNER_PARAMS)
_AT_LEAST = {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1,
             "n_min_trials": 1, "min_resource": 1, "max_resource": 1, "reduction_factor": 2,
             "min_early_stopping_rate": 0, "bootstrap_count": 0}


class PrunerSpec(SpecModel):
    """A pruner: its kind and the parameters given (the rest take Optuna's defaults)."""

    kind: str = "none"
    n_startup_trials: StrictInt | None = None
    n_warmup_steps: StrictInt | None = None
    interval_steps: StrictInt | None = None
    n_min_trials: StrictInt | None = None
    percentile: StrictFloat | StrictInt | None = None
    min_resource: StrictInt | None = None
    max_resource: StrictInt | None = None
    reduction_factor: StrictInt | None = None
    min_early_stopping_rate: StrictInt | None = None
    bootstrap_count: StrictInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in PRUNERS:
                raise ValueError(f"unknown pruner {data!r}{suggest(data, PRUNERS)}")
            return {"kind": data}
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"expected one of {list(PRUNERS)} or {{kind: ..., ...}}, "
                             f"got {show(data)}")
        return data

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in PRUNERS:
            raise ValueError(f"unknown pruner {v!r}{suggest(v, PRUNERS)}")
        return v

    @model_validator(mode="after")
    def _params_fit_kind(self) -> "PrunerSpec":
        allowed = PRUNER_PARAMS[self.kind]
        for name, value in self.params.items():
            if name not in allowed:
                where = f"a {self.kind} pruner takes " + (
                    ", ".join(allowed) if allowed else "no parameters")
                raise FieldError((name,), f"{where}, got {name}")
            if name == "percentile":
                if not 0.0 <= value <= 100.0:
                    raise FieldError((name,), f"must be in [0, 100], got {value}")
            elif value < _AT_LEAST[name]:
                raise FieldError((name,), f"must be >= {_AT_LEAST[name]}, got {value}")
        if (self.min_resource is not None and self.max_resource is not None
                and self.max_resource < self.min_resource):
            raise FieldError(("max_resource",), f"must be >= min_resource "
                                                f"({self.min_resource}), got {self.max_resource}")
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The parameters given (not None), by name."""
        return {k: v for k, v in self.__dict__.items() if k != "kind" and v is not None}

    @model_serializer(mode="plain")
    def _serialize(self) -> Any:
        # The short form when no parameter is given: specs written before pruners took
        # parameters keep their fingerprint (a stored sweep still matches its spec).
        return self.kind if not self.params else {"kind": self.kind, **self.params}


class EarlyStoppingSpec(SpecModel):
    """Stop a trial once its fold-mean validation metric has not improved by more than
    ``min_delta`` for ``patience`` epochs."""

    patience: StrictInt
    min_delta: StrictFloat | StrictInt = 0.0

    @field_validator("patience")
    @classmethod
    def _patience(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("min_delta")
    @classmethod
    def _min_delta(cls, v: float) -> float:
        if not 0.0 <= v <= sys.float_info.max:  # an int past it would not become a float
            raise ValueError(f"must be a finite number >= 0, got {show(v)}")
        return float(v)
