"""The sweep spec: YAML or a dict -> a validated, typed, immutable ``SweepSpec``.

Schema (docs/DESIGN "Search-space YAML")::

    name: digits-mlp
    data: {source: sklearn:digits, task: multiclass, target: COLUMN, categorical: [COL]}
    cv: {folds: 5, stratified: true, shuffle: true, seed: 0}
    search: {method: tpe, trials: 60, batch: 16, seed: 0, pruner: none}
    metric: accuracy
    fixed: {epochs: 30}
    space:
      learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}
      width: [32, 64, 128]

Every error is a one-line ``SpecError`` that names the dotted field path and repeats
the bad value. Nothing here touches the disk except ``load_spec`` reading the file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import numbers
import os
import re
import reprlib
from collections.abc import Mapping
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models import hparams as hp
from tuner.errors import SpecError

# --------------------------------------------------------------------------- vocabulary

METHODS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
GREATER_IS_BETTER = {
    "accuracy": True, "f1_macro": True, "roc_auc": True, "r2": True,
    "log_loss": False, "mse": False, "rmse": False, "mae": False,
}
DEFAULT_METRIC = {"binary": "accuracy", "multiclass": "accuracy",
                  "multilabel": "accuracy", "regression": "r2"}

# Built-in data sets and their tasks (so the metric can be checked at parse time).
SKLEARN_SOURCES = {
    "iris": "multiclass", "wine": "multiclass", "digits": "multiclass",
    "breast_cancer": "binary", "diabetes": "regression",
}
# In-memory arrays handed to the Python API (``tuner.data.from_arrays``).
ARRAYS_SOURCE = "arrays"

INT_HPARAMS = ("depth", "width", "batch_size", "epochs")
CATEGORICAL_HPARAMS: dict[str, tuple[str, ...]] = {
    "activation": hp.ACTIVATIONS,
    "norm": hp.NORMS,
    "optimizer": hp.OPTIMIZERS,
    "init": hp.INITS + tuple(hp.INIT_ALIASES),
    "schedule": hp.SCHEDULES,
}
FLOAT_HPARAMS = tuple(hp.NUMERIC_DEFAULTS)
HPARAMS = INT_HPARAMS + tuple(CATEGORICAL_HPARAMS) + FLOAT_HPARAMS

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class _Interval:
    """A numeric domain such as ``[0, 1)``; ``allow_inf`` admits +inf as a value."""

    def __init__(self, lo: float, lo_closed: bool, hi: float = math.inf,
                 hi_closed: bool = False, allow_inf: bool = False) -> None:
        self.lo, self.lo_closed, self.hi, self.hi_closed = lo, lo_closed, hi, hi_closed
        self.allow_inf = allow_inf

    def __contains__(self, v: float) -> bool:
        if v == math.inf and self.allow_inf:
            return True
        above = v >= self.lo if self.lo_closed else v > self.lo
        below = v <= self.hi if self.hi_closed else v < self.hi
        return above and below

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>=' if self.lo_closed else '>'} {_num(self.lo)}"
        return (f"in {'[' if self.lo_closed else '('}{_num(self.lo)}, "
                f"{_num(self.hi)}{']' if self.hi_closed else ')'}")


_UNIT = _Interval(0, True, 1, False)
DOMAINS: dict[str, _Interval] = {
    "depth": _Interval(0, True),
    "width": _Interval(1, True),
    "batch_size": _Interval(1, True),
    "epochs": _Interval(1, True),
    "learning_rate": _Interval(0, False),
    "momentum": _UNIT, "beta1": _UNIT, "beta2": _UNIT, "rho": _UNIT, "dropout": _UNIT,
    "eps": _Interval(0, False),
    "l1": _Interval(0, True), "l2": _Interval(0, True), "weight_decay": _Interval(0, True),
    "init_scale": _Interval(0, False),
    "leaky_slope": _Interval(0, True),
    "decay_rate": _Interval(0, False, 1, True),
    "decay_epochs": _Interval(0, False),
    "warmup_fraction": _UNIT,
    "clip_norm": _Interval(0, False, allow_inf=True),  # inf = clipping off
}
# A numeric hyperparameter added to models.hparams without a domain here: any finite value.
for _name in FLOAT_HPARAMS:
    DOMAINS.setdefault(_name, _Interval(-math.inf, False))

# --------------------------------------------------------------------------- helpers

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8


def _show(value: Any) -> str:
    """A short repr for messages (long lists and strings are elided)."""
    return _repr.repr(value)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def _suggest(word: Any, choices: Any) -> str:
    """'; did you mean 'x'?' for the closest choice, else the list of choices."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {choices}"


class _FieldError(ValueError):
    """A validator error with a path below the validator's own location."""

    def __init__(self, path: tuple, message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "spec"


def _first_error(exc: ValidationError) -> tuple[tuple, str]:
    """(location, message) of the first pydantic error, our own messages kept as they are."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return loc + cause.path, cause.message
    if isinstance(cause, (ValueError, AssertionError)):
        return loc, str(cause)
    if err["type"] == "missing":
        return loc, "required"
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    return loc, f"{msg}, got {_show(err.get('input'))}"


def _spec_error(exc: ValidationError) -> SpecError:
    """The first pydantic error as a one-line SpecError naming its field path."""
    loc, msg = _first_error(exc)
    return SpecError(f"{_dotted(loc)}: {msg}")


def _is_number(v: Any) -> bool:
    """A real number but not a bool (numpy scalars count)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_value(name: str, value: Any) -> Any:
    """Validate one value of hyperparameter ``name``; return it normalised.

    Floats stay floats (ints become floats), integer hyperparameters become ints
    (an integral float such as 64.0 is accepted), categorical choices stay as given.
    Raises ValueError with a message that repeats the value.
    """
    if name in CATEGORICAL_HPARAMS:
        allowed = CATEGORICAL_HPARAMS[name]
        if not isinstance(value, str):
            raise ValueError(f"expected one of {list(allowed)}, got {_show(value)}")
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}{_suggest(value, allowed)}")
        return value
    if not _is_number(value):
        raise ValueError(f"expected a number, got {_show(value)}")
    domain = DOMAINS[name]
    if math.isnan(value) or (math.isinf(value) and not (domain.allow_inf and value > 0)):
        raise ValueError(f"must be finite, got {value}")
    if name in INT_HPARAMS and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} is an integer, got {value}")
    if value not in domain:
        raise ValueError(f"{name} must be {domain}, got {value!r}")
    return int(value) if name in INT_HPARAMS else float(value)


def _check_name(name: Any) -> str:
    if name not in HPARAMS:
        raise _FieldError((), f"unknown hyperparameter{_suggest(name, HPARAMS)}")
    return name


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # extra="forbid" would say only "Extra inputs are not permitted"; suggest instead.
        if isinstance(data, Mapping):
            for key in data:
                if key not in cls.model_fields:
                    raise _FieldError((str(key),), f"unknown key{_suggest(key, cls.model_fields)}")
        return data


class DataSpec(_Model):
    """Where the data comes from. File paths are stored absolute."""

    source: str
    task: str | None = None
    target: str | None = None
    categorical: tuple[str, ...] = ()

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        kind, sep, rest = v.partition(":")
        if v == ARRAYS_SOURCE:
            return v
        if not sep or kind not in ("sklearn", "csv", "npz"):
            raise ValueError(
                f"expected sklearn:<{'|'.join(SKLEARN_SOURCES)}>, csv:PATH or npz:PATH, "
                f"got {v!r}")
        if kind == "sklearn":
            if rest not in SKLEARN_SOURCES:
                raise ValueError(f"unknown sklearn data set {rest!r}"
                                 f"{_suggest(rest, SKLEARN_SOURCES)}")
            return v
        if not rest.strip():
            raise ValueError(f"{kind}: needs a file path, got {v!r}")
        base = (info.context or {}).get("base_dir")
        path = os.path.expanduser(rest.strip())
        if not os.path.isabs(path):
            path = os.path.join(os.fspath(base) if base is not None else os.getcwd(), path)
        return f"{kind}:{os.path.normpath(path)}"

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        if v is not None and v not in hp.TASKS:
            raise ValueError(f"unknown task {v!r}{_suggest(v, hp.TASKS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DataSpec":
        kind, _, rest = self.source.partition(":")
        if kind == "csv" and self.target is None:
            raise _FieldError(("target",), "a csv source needs target: COLUMN")
        if kind != "csv" and self.target is not None:
            raise _FieldError(("target",), f"only a csv source takes a target column, "
                                           f"got {self.target!r} for {self.source!r}")
        if kind != "csv" and self.categorical:
            raise _FieldError(("categorical",), f"only a csv source takes categorical "
                                                f"columns, got {list(self.categorical)}")
        if self.target is not None and self.target in self.categorical:
            raise _FieldError(("categorical",),
                              f"the target {self.target!r} cannot be a categorical feature")
        if kind == "sklearn" and self.task is not None and self.task != SKLEARN_SOURCES[rest]:
            raise _FieldError(("task",), f"{self.source} is a {SKLEARN_SOURCES[rest]} data "
                                         f"set, got task {self.task!r}")
        return self

    @property
    def known_task(self) -> str | None:
        """The task if the spec alone tells it (given, or a built-in data set)."""
        if self.task is not None:
            return self.task
        kind, _, rest = self.source.partition(":")
        return SKLEARN_SOURCES.get(rest) if kind == "sklearn" else None

    @property
    def path(self) -> str | None:
        """The absolute file path of a csv/npz source, else None."""
        kind, _, rest = self.source.partition(":")
        return rest if kind in ("csv", "npz") else None


class CVSpec(_Model):
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


class SearchSpec(_Model):
    method: str = "tpe"
    trials: StrictInt | None = None  # grid: the whole grid when absent
    batch: StrictInt = 16
    seed: StrictInt = 0
    pruner: str = "none"

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}{_suggest(v, METHODS)}")
        return v

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        if v not in PRUNERS:
            raise ValueError(f"unknown pruner {v!r}{_suggest(v, PRUNERS)}")
        return v

    @field_validator("trials", "batch")
    @classmethod
    def _positive(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v


class Range(_Model):
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
        if v is None:
            return v
        if not _is_number(v):
            raise ValueError(f"expected a number, got {_show(v)}")
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return int(v) if isinstance(v, numbers.Integral) else float(v)

    @model_validator(mode="after")
    def _bounds(self) -> "Range":
        low, high, step = self.low, self.high, self.step
        if low > high:
            raise ValueError(f"`low <= high` must hold, got low={low}, high={high}")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={low}")
        if step is not None:
            if step <= 0:
                raise _FieldError(("step",), f"must be > 0, got {step}")
            if self.log and not (self.type == "int" and step == 1):
                raise ValueError(f"`step` and `log` cannot be combined, got step={step}")
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise ValueError(f"(high - low) must be a multiple of step, got "
                                 f"low={low}, high={high}, step={step}")
        if self.type == "int":
            for field, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and not float(v).is_integer():
                    raise _FieldError((field,), f"an int range needs integers, got {v}")
        return self

    @property
    def is_continuous(self) -> bool:
        return self.type != "int" and self.step is None


SpaceEntry = Union[Range, tuple]


def _range_for(name: str, raw: Any) -> Range:
    """Validate a range mapping for hyperparameter ``name`` and resolve its type."""
    if name in CATEGORICAL_HPARAMS:
        raise _FieldError((), f"{name} is categorical; give a list of choices, "
                              f"got {_show(raw)}")
    raw = raw.model_dump() if isinstance(raw, Range) else dict(raw)
    if name in INT_HPARAMS:
        if raw.get("type", "int") != "int":
            raise _FieldError(("type",), f"{name} is an integer; type must be int, "
                                         f"got {_show(raw['type'])}")
        raw["type"] = "int"
    try:
        r = Range.model_validate(raw)
    except ValidationError as e:
        raise _FieldError(*_first_error(e)) from None
    kind = r.type or "float"
    for field in ("low", "high"):
        try:
            _check_value(name, getattr(r, field))
        except ValueError as e:
            raise _FieldError((field,), str(e)) from None
    cast = int if kind == "int" else float
    return Range(low=cast(r.low), high=cast(r.high), log=r.log,
                 step=None if r.step is None else cast(r.step), type=kind)


def _entry_for(name: str, raw: Any) -> SpaceEntry:
    if isinstance(raw, (Mapping, Range)):
        return _range_for(name, raw)
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise _FieldError((), "empty list; give at least one value")
        values = []
        for i, v in enumerate(raw):
            try:
                v = _check_value(name, v)
            except ValueError as e:
                raise _FieldError((i,), str(e)) from None
            if v in values:
                raise _FieldError((i,), f"duplicate value {_show(v)}")
            values.append(v)
        return tuple(values)
    raise _FieldError((), f"expected a list of values or a range {{low, high}}, got "
                          f"{_show(raw)}; put a single value under fixed")


class SweepSpec(_Model):
    """A validated sweep. ``metric`` is None only while the task is unknown."""

    name: str
    data: DataSpec
    cv: CVSpec = CVSpec()
    search: SearchSpec = SearchSpec()
    metric: str | None = None
    fixed: dict[str, Any] = {}
    space: dict[str, SpaceEntry] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-128 letters, digits, '_', '-' or '.', starting "
                             f"with a letter or digit, got {v!r}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and v not in METRICS:
            raise ValueError(f"unknown metric {v!r}{_suggest(v, METRICS)}")
        return v

    @field_validator("fixed", mode="before")
    @classmethod
    def _fixed(cls, raw: Any) -> Any:
        if raw is None:  # a YAML key with every entry commented out
            return {}
        if not isinstance(raw, Mapping):
            return raw  # pydantic reports the type error
        out = {}
        for name, value in raw.items():
            try:
                _check_name(name)
            except _FieldError as e:
                raise _FieldError((str(name),), e.message) from None
            if isinstance(value, (list, tuple, Mapping)):
                raise _FieldError((name,), f"expected a single value, got {_show(value)}; "
                                           "put lists and ranges under space")
            try:
                out[name] = _check_value(name, value)
            except ValueError as e:
                raise _FieldError((name,), str(e)) from None
        return out

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, raw: Any) -> Any:
        if raw is None:  # a YAML key with every entry commented out
            return {}
        if not isinstance(raw, Mapping):
            return raw
        out = {}
        for name, value in raw.items():
            try:
                _check_name(name)
                out[name] = _entry_for(name, value)
            except _FieldError as e:
                raise _FieldError((str(name),) + e.path, e.message) from None
        return out

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: Any) -> "SweepSpec":
        spec = handler(data)
        for name in spec.space:
            if name in spec.fixed:
                raise _FieldError(("space", name), "also set under fixed; give it in "
                                                   "one place")
        if spec.search.method == "grid":
            for name, entry in spec.space.items():
                if isinstance(entry, Range) and entry.is_continuous:
                    raise _FieldError(("space", name),
                                      "a grid needs a list or a range with step")
        task = spec.data.known_task
        if task is not None:
            metric = _metric_for(spec.metric, task)
            if metric != spec.metric:
                spec = spec.model_copy(update={"metric": metric})
        return spec

    # ------------------------------------------------------------------ queries

    @property
    def task(self) -> str | None:
        """The task if known from the spec alone (else it comes from the data)."""
        return self.data.known_task

    def check_metric(self, task: str) -> str:
        """The metric for ``task``: the spec's, or the task's default. SpecError if unfit."""
        if task not in hp.TASKS:
            raise SpecError(f"data.task: unknown task {task!r}{_suggest(task, hp.TASKS)}")
        if self.data.task is not None and task != self.data.task:
            raise SpecError(f"data.task: the spec says {self.data.task!r}, "
                            f"the data is {task!r}")
        try:
            return _metric_for(self.metric, task)
        except _FieldError as e:
            raise SpecError(f"{_dotted(e.path)}: {e.message}") from None

    def with_task(self, task: str) -> "SweepSpec":
        """A copy with ``data.task`` set and the metric resolved for it."""
        metric = self.check_metric(task)
        return self.model_copy(update={
            "data": self.data.model_copy(update={"task": task}), "metric": metric})

    @property
    def greater_is_better(self) -> bool:
        """Whether a larger metric value is better (SpecError while the metric is unknown)."""
        if self.metric is None:
            raise SpecError("metric: unknown until the task is known; call "
                            "spec.with_task(task) first")
        return GREATER_IS_BETTER[self.metric]

    @property
    def hparam_names(self) -> tuple[str, ...]:
        """Names under fixed and space, fixed first."""
        return tuple(self.fixed) + tuple(self.space)

    # ------------------------------------------------------------------ serialising

    def to_dict(self) -> dict:
        """Plain Python types (lists, dicts, floats), None values left out."""
        return _plain(self.model_dump())

    def to_yaml(self) -> str:
        """The spec as YAML; ``parse_spec(yaml.safe_load(text))`` gives it back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None,
                              width=100)

    def fingerprint(self) -> str:
        """sha256 of the canonical spec, without search.trials and search.batch.

        Those two may change between invocations that continue one sweep.
        """
        d = self.to_dict()
        d["search"].pop("trials", None)
        d["search"].pop("batch", None)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def diff(self, other: "SweepSpec") -> list[str]:
        """Dotted paths where two specs differ (ignoring search.trials and search.batch)."""
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            d["search"].pop("trials", None)
            d["search"].pop("batch", None)
        return _diff(a, b, ())


def _metric_for(metric: str | None, task: str) -> str:
    if metric is None:
        return DEFAULT_METRIC[task]
    fits = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    if metric not in fits:
        raise _FieldError(("metric",), f"{metric!r} does not fit task {task!r}; "
                                       f"use one of {list(fits)}")
    return metric


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items() if v is not None}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _diff(a: Any, b: Any, path: tuple) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), path + (k,))
        return out
    return [] if a == b else [_dotted(path)]


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 needs a dot in a float; 1e-3 would otherwise load as the string '1e-3'.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_error(where: str, e: yaml.YAMLError) -> SpecError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return SpecError(f"{where}: invalid YAML{at}: {problem}")


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a spec file; relative data paths resolve against its folder."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read the spec file: {e}") from None
    try:
        mapping = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    return parse_spec(mapping, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_spec(mapping: Any, base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a mapping (e.g. parsed YAML); relative paths resolve against ``base_dir``
    (default: the working directory)."""
    if isinstance(mapping, SweepSpec):
        return mapping
    if not isinstance(mapping, Mapping):
        raise SpecError(f"spec: expected a mapping of keys (name, data, space, ...), "
                        f"got {_show(mapping)}")
    try:
        return SweepSpec.model_validate(dict(mapping), context={"base_dir": base_dir})
    except ValidationError as e:
        raise _spec_error(e) from None


def parse_data_spec(mapping: Any, base_dir: str | os.PathLike | None = None) -> DataSpec:
    """Validate a spec's ``data`` section on its own (errors name ``data.<field>``)."""
    if isinstance(mapping, DataSpec):
        return mapping
    if not isinstance(mapping, Mapping):
        raise SpecError(f"data: expected a mapping with source, got {_show(mapping)}")
    try:
        return DataSpec.model_validate(dict(mapping), context={"base_dir": base_dir})
    except ValidationError as e:
        loc, msg = _first_error(e)
        raise SpecError(f"{_dotted(('data',) + loc)}: {msg}") from None


def parse_yaml(text: str, base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a spec given as YAML text."""
    try:
        mapping = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise _yaml_error("spec", e) from None
    return parse_spec(mapping, base_dir=base_dir)


# --------------------------------------------------------------------------- grids


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
            n = round((entry.high - entry.low) / entry.step)
            # 12 significant digits hide float noise such as 0.30000000000000004.
            out[name] = [float(f"{entry.low + i * entry.step:.12g}") for i in range(n + 1)]
        else:
            raise SpecError(f"space.{name}: a grid needs a list or a range with step")
    return out


def grid_size(spec: SweepSpec) -> int:
    """Number of points in the full grid (1 for an empty space)."""
    return math.prod(len(v) for v in grid_points(spec).values())
