"""The spec's vocabulary, derived from the models' tables, and the check of one value.

Nothing is defined twice: hyperparameter names, kinds, domains and choices come from
``models.HPARAMS``; metric names and directions from ``models.METRICS``.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

from models.hparams import HPARAMS as _TABLE
from models.hparams import Interval
from models.metrics import (
    CLASSIFICATION_METRICS, DEFAULT_METRIC, GREATER_IS_BETTER, METRICS as _METRIC_TABLE,
    REGRESSION_METRICS,
)
from tuner.inputs.spec.messages import FieldError, show, suggest

METHODS = ("grid", "random", "tpe")
METRICS = tuple(_METRIC_TABLE)

# Built-in data sets and their tasks (so the metric can be checked at parse time).
SKLEARN_SOURCES = {
    "iris": "multiclass", "wine": "multiclass", "digits": "multiclass",
    "breast_cancer": "binary", "diabetes": "regression",
}
# In-memory arrays handed to the Python API (``tuner.inputs.data.from_arrays``).
ARRAYS_SOURCE = "arrays"

HPARAMS: tuple[str, ...] = tuple(_TABLE)
INT_HPARAMS = tuple(n for n, p in _TABLE.items() if p.kind == "int")
FLOAT_HPARAMS = tuple(n for n, p in _TABLE.items() if p.kind == "float")
CATEGORICAL_HPARAMS: dict[str, tuple[str, ...]] = {
    n: p.choices for n, p in _TABLE.items() if p.kind == "choice"}
DOMAINS: dict[str, Interval] = {
    n: p.domain for n, p in _TABLE.items() if isinstance(p.domain, Interval)}

__all__ = [
    "ARRAYS_SOURCE", "CATEGORICAL_HPARAMS", "CLASSIFICATION_METRICS", "DEFAULT_METRIC",
    "DOMAINS", "FLOAT_HPARAMS", "GREATER_IS_BETTER", "HPARAMS", "INT_HPARAMS", "METHODS",
    "METRICS", "REGRESSION_METRICS", "SKLEARN_SOURCES", "check_name",
    "check_value", "finite_number", "is_number",
]


def is_number(v: Any) -> bool:
    """A real number but not a bool (numpy scalars count)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def finite_number(v: Any) -> int | float:
    """A number as an int or a float; ValueError unless it is finite as a float.

    A Python int is exact at any size, but the values go on as floats (Optuna, the
    lane arrays): one past float64's range (YAML reads 1e400 written out as an int)
    would raise OverflowError there instead of being bad input here.
    """
    if not is_number(v):
        raise ValueError(f"expected a number, got {show(v)}")
    if isinstance(v, numbers.Integral):
        if abs(v) > sys.float_info.max:
            raise ValueError(f"must be finite, got {show(v)}")
        return int(v)
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    return float(v)


def check_value(name: str, value: Any) -> Any:
    """Validate one value of hyperparameter ``name``; return it normalised.

    Floats stay floats (ints become floats), integer hyperparameters become ints
    (an integral float such as 64.0 is accepted), categorical choices stay as given.
    Raises ValueError with a message that repeats the value.
    """
    if name in CATEGORICAL_HPARAMS:
        allowed = CATEGORICAL_HPARAMS[name]
        if not isinstance(value, str):
            raise ValueError(f"expected one of {list(allowed)}, got {show(value)}")
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}{suggest(value, allowed)}")
        return value
    domain = DOMAINS[name]
    if not (domain.allow_inf and is_number(value) and value == math.inf):
        value = finite_number(value)
    if name in INT_HPARAMS and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} is an integer, got {value}")
    if value not in domain:
        raise ValueError(f"{name} must be {domain}, got {show(value)}")
    return int(value) if name in INT_HPARAMS else float(value)


def check_name(name: Any) -> str:
    if name not in HPARAMS:
        raise FieldError((), f"unknown hyperparameter{suggest(name, HPARAMS)}")
    return name
