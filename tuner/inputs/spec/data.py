"""The ``data`` section: where the data comes from and how its table is read.

    data:
      source: csv:train.csv          # sklearn:<name> | csv:PATH | parquet:PATH | npz:PATH
      target: species                # csv/parquet: the label column (a list: several)
      task: multiclass               # inferred if absent
      features: [a, b, c]            # keep only these columns, or
      drop: [id]                     # leave these out
      categorical: [island, sex]     # one-hot (text columns are, unless listed here)
      dates: [date]                  # expand to year, month, day of week, day of year
      missing: impute                # impute (per training fold) | error
      missing_indicator: false       # add a 0/1 column per numeric column with gaps
      max_categories: 50             # levels kept per categorical column (rarest pooled)
      class_weight: balanced         # none | balanced (binary and multiclass)

New keys default to None (their defaults), so specs written before they existed keep
their fingerprint.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from models import hparams as hp
from tuner.inputs.spec.base import SpecModel
from tuner.inputs.spec.messages import FieldError, suggest
from tuner.inputs.spec.values import ARRAYS_SOURCE, SKLEARN_SOURCES

FILE_KINDS = ("csv", "parquet", "npz")
TABLE_KINDS = ("csv", "parquet")


class DataSpec(SpecModel):
    """Where the data comes from. File paths are stored absolute."""

    source: str
    task: str | None = None
    target: str | tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    dates: tuple[str, ...] | None = None
    missing: Literal["impute", "error"] | None = None
    missing_indicator: StrictBool | None = None
    max_categories: StrictInt | None = None
    class_weight: Literal["none", "balanced"] | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        kind, sep, rest = v.partition(":")
        if v == ARRAYS_SOURCE:
            return v
        if not sep or kind not in ("sklearn", *FILE_KINDS):
            raise ValueError(
                f"expected sklearn:<{'|'.join(SKLEARN_SOURCES)}>, csv:PATH, parquet:PATH or "
                f"npz:PATH, got {v!r}")
        if kind == "sklearn":
            if rest not in SKLEARN_SOURCES:
                raise ValueError(f"unknown sklearn data set {rest!r}"
                                 f"{suggest(rest, SKLEARN_SOURCES)}")
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
            raise ValueError(f"unknown task {v!r}{suggest(v, hp.TASKS)}")
        return v

    @field_validator("max_categories")
    @classmethod
    def _max_categories(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError(f"must be >= 2, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DataSpec":
        kind, _, rest = self.source.partition(":")
        table = kind in TABLE_KINDS or kind == ARRAYS_SOURCE
        if kind in TABLE_KINDS and self.target is None:
            raise FieldError(("target",), f"a {kind} source needs target: COLUMN")
        if not table and self.target is not None:
            raise FieldError(("target",), f"only a csv or parquet source takes a target "
                                          f"column, got {self.target!r} for {self.source!r}")
        for field in ("categorical", "features", "drop", "dates"):
            if not table and getattr(self, field):
                raise FieldError((field,), f"only a csv or parquet source takes {field} "
                                           f"columns, got {list(getattr(self, field))}")
        targets = {self.target} if isinstance(self.target, str) else set(self.target or ())
        for field in ("categorical", "features", "dates"):
            for name in getattr(self, field) or ():
                if name in targets:
                    raise FieldError((field,), f"the target {name!r} cannot be a feature")
        if self.features and self.drop:
            raise FieldError(("drop",), "give features (the columns kept) or drop (the "
                                        "columns left out), not both")
        if kind == "sklearn" and self.task is not None and self.task != SKLEARN_SOURCES[rest]:
            raise FieldError(("task",), f"{self.source} is a {SKLEARN_SOURCES[rest]} data "
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
        """The absolute file path of a file source, else None."""
        kind, _, rest = self.source.partition(":")
        return rest if kind in FILE_KINDS else None
