"""The sections of a spec: data, cv, search, and a hyperparameter's range or choices.

File paths are resolved (absolute) while validating: relative ones against the
``base_dir`` of the validation context (the spec file's folder).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Union

from pydantic import (
    StrictBool, StrictInt, ValidationError, ValidationInfo, field_validator, model_validator,
)

from models.hparams import Interval
from tuner.inputs.spec.base import SpecModel
from tuner.inputs.spec.data import DataSpec  # noqa: F401 - a section, re-exported
from tuner.inputs.spec.fidelity import EarlyStoppingSpec, PrunerSpec
from tuner.inputs.spec.messages import FieldError, first_error, show, suggest
from tuner.inputs.spec.values import (
    CATEGORICAL_HPARAMS, INT_HPARAMS, METHODS, check_value,
    finite_number,
)


# Limits of the search and cv sections (docs/decisions.md, "Limits"); the hyperparameters'
# own are in models.hparams. cv.folds needs none here: it is checked against the rows.
MAX_TRIALS = 1_000_000  # a trial is Optuna rows and an MLflow run; also the largest grid
MAX_BATCH = 4096        # trials in one program: each a lane per fold, weights and all
MAX_SEED = 2**32 - 1    # numpy, scikit-learn and the JAX key (uint32) take no more
LIMITS = {"trials": Interval(1, True, MAX_TRIALS, True),
          "batch": Interval(1, True, MAX_BATCH, True),
          "seed": Interval(0, True, MAX_SEED, True)}


def _within(v: int | None, info: ValidationInfo) -> int | None:
    domain = LIMITS[info.field_name]
    if v is not None and v not in domain:
        raise ValueError(f"{info.field_name} must be {domain}, got {show(v)}")
    return v


class CVSpec(SpecModel):
    folds: StrictInt = 5
    stratified: StrictBool = True
    shuffle: StrictBool = True
    seed: StrictInt = 0

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"needs at least 2 folds, got {v}")
        return v

    _seed = field_validator("seed")(_within)


class SearchSpec(SpecModel):
    method: str = "tpe"
    trials: StrictInt | None = None  # grid: the whole grid when absent
    batch: StrictInt = 16
    seed: StrictInt = 0
    pruner: PrunerSpec = PrunerSpec()
    early_stopping: EarlyStoppingSpec | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}{suggest(v, METHODS)}")
        return v

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner(cls, v: Any) -> Any:
        return "none" if v is None else v

    _limits = field_validator("trials", "batch", "seed")(_within)


class Range(SpecModel):
    """A range of a numeric hyperparameter; ``type`` is resolved by ``SweepSpec``.

    int ranges sample integers (a log int range uses step 1); float ranges are
    continuous unless ``step`` is given. Bounds are inclusive.
    """

    low: float | int
    high: float | int
    log: StrictBool = False
    step: float | int | None = None
    type: Literal["int", "float"] | None = None

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return v if v is None else finite_number(v)

    @model_validator(mode="after")
    def _bounds(self) -> "Range":
        low, high, step = self.low, self.high, self.step
        if low > high:
            raise ValueError(f"`low <= high` must hold, got low={low}, high={high}")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={low}")
        if step is not None:
            if step <= 0:
                raise FieldError(("step",), f"must be > 0, got {step}")
            if self.log and not (self.type == "int" and step == 1):
                raise ValueError(f"`step` and `log` cannot be combined, got step={step}")
            n = (float(high) - float(low)) / step  # floats: ints this big overflow in /
            if not math.isfinite(n):
                raise ValueError(f"the range holds too many steps, got low={low}, "
                                 f"high={high}, step={step}")
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise ValueError(f"(high - low) must be a multiple of step, got "
                                 f"low={low}, high={high}, step={step}")
        if self.type == "int":
            for field, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and not float(v).is_integer():
                    raise FieldError((field,), f"an int range needs integers, got {v}")
        return self

    @property
    def is_continuous(self) -> bool:
        return self.type != "int" and self.step is None

    @property
    def n_points(self) -> int:
        """Points of an int or stepped range (as ``grid_points`` lists them), counted
        without listing them."""
        if self.is_continuous:
            raise ValueError("a continuous range has no points to count")
        if self.type == "int":
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        return round((self.high - self.low) / self.step) + 1


SpaceEntry = Union[Range, tuple]


def range_for(name: str, raw: Any) -> Range:
    """Validate a range mapping for hyperparameter ``name`` and resolve its type."""
    if name in CATEGORICAL_HPARAMS:
        raise FieldError((), f"{name} is categorical; give a list of choices, "
                              f"got {show(raw)}")
    raw = raw.model_dump() if isinstance(raw, Range) else dict(raw)
    if name in INT_HPARAMS:
        if raw.get("type", "int") != "int":
            raise FieldError(("type",), f"{name} is an integer; type must be int, "
                                         f"got {show(raw['type'])}")
        raw["type"] = "int"
    try:
        r = Range.model_validate(raw)
    except ValidationError as e:
        raise FieldError(*first_error(e)) from None
    kind = r.type or "float"
    for field in ("low", "high"):
        try:
            check_value(name, getattr(r, field))
        except ValueError as e:
            raise FieldError((field,), str(e)) from None
    cast = int if kind == "int" else float
    return Range(low=cast(r.low), high=cast(r.high), log=r.log,
                 step=None if r.step is None else cast(r.step), type=kind)


def entry_for(name: str, raw: Any) -> SpaceEntry:
    if isinstance(raw, (Mapping, Range)):
        return range_for(name, raw)
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise FieldError((), "empty list; give at least one value")
        values = []
        for i, v in enumerate(raw):
            try:
                v = check_value(name, v)
            except ValueError as e:
                raise FieldError((i,), str(e)) from None
            if v in values:
                raise FieldError((i,), f"duplicate value {show(v)}")
            values.append(v)
        return tuple(values)
    raise FieldError((), f"expected a list of values or a range {{low, high}}, got "
                          f"{show(raw)}; put a single value under fixed")
