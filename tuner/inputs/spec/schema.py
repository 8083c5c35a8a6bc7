"""The whole sweep spec: ``SweepSpec`` (validated, typed, immutable).

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
the bad value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import StrictBool, field_validator, model_validator

from models import hparams as hp
from tuner.errors import SpecError
from tuner.inputs.spec.messages import FieldError, count, dotted, show, suggest
from tuner.inputs.spec.base import SpecModel
from tuner.inputs.spec.sections import (
    MAX_TRIALS, CVSpec, DataSpec, Range, SearchSpec, SpaceEntry, entry_for,
)
from tuner.inputs.spec.values import (
    CLASSIFICATION_METRICS, DEFAULT_METRIC, GREATER_IS_BETTER, METRICS, REGRESSION_METRICS,
    check_name, check_value,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SweepSpec(SpecModel):
    """A validated sweep. ``metric`` is None only while the task is unknown."""

    name: str
    data: DataSpec
    cv: CVSpec = CVSpec()
    search: SearchSpec = SearchSpec()
    metric: str | None = None
    fixed: dict[str, Any] = {}
    space: dict[str, SpaceEntry] = {}
    # The best configuration's learning curve against training-set size (None: on).
    learning_curve: StrictBool | None = None

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
            raise ValueError(f"unknown metric {v!r}{suggest(v, METRICS)}")
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
                check_name(name)
            except FieldError as e:
                raise FieldError((str(name),), e.message) from None
            if isinstance(value, (list, tuple, Mapping)):
                raise FieldError((name,), f"expected a single value, got {show(value)}; "
                                           "put lists and ranges under space")
            try:
                out[name] = check_value(name, value)
            except ValueError as e:
                raise FieldError((name,), str(e)) from None
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
                check_name(name)
                out[name] = entry_for(name, value)
            except FieldError as e:
                raise FieldError((str(name),) + e.path, e.message) from None
        return out

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: Any) -> "SweepSpec":
        spec = handler(data)
        for name in spec.space:
            if name in spec.fixed:
                raise FieldError(("space", name), "also set under fixed; give it in "
                                                   "one place")
        if spec.search.method == "grid":
            for name, entry in spec.space.items():
                if isinstance(entry, Range) and entry.is_continuous:
                    raise FieldError(("space", name),
                                      "a grid needs a list or a range with step")
            # Optuna lists every point of a grid before its first trial.
            size = math.prod(len(e) if isinstance(e, tuple) else e.n_points
                             for e in spec.space.values())
            if size > MAX_TRIALS:
                raise FieldError(("space",), f"a grid of {count(size)} points is more than "
                                             f"the {MAX_TRIALS} trials a sweep can run; "
                                             "give fewer values, or use method random or tpe")
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
            raise SpecError(f"data.task: unknown task {task!r}{suggest(task, hp.TASKS)}")
        if self.data.task is not None and task != self.data.task:
            raise SpecError(f"data.task: the spec says {self.data.task!r}, "
                            f"the data is {task!r}")
        try:
            return _metric_for(self.metric, task)
        except FieldError as e:
            raise SpecError(f"{dotted(e.path)}: {e.message}") from None

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
        raise FieldError(("metric",), f"{metric!r} does not fit task {task!r}; "
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
    return [] if a == b else [dotted(path)]
