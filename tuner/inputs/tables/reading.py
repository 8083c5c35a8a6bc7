"""Reading a table: a CSV or Parquet file, or a DataFrame, into raw features and target.

Every problem found is reported at once, one line each (``TableProblems``), naming the
column: a target or ``features:`` column that does not exist, a target with missing
values, an all-missing column, infinite values, an unreadable file.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tuner.errors import DataError

# Cells read as missing, besides empty ones (pandas' defaults cover NA, N/A, NaN, null...).
EXTRA_NA = ("?", "-", "--", "missing", "Missing", "MISSING", "none", "None")


class TableProblems(DataError):
    """Several problems with one table, each on its own line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(problems[0])
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def read_file(kind: str, path: str) -> pd.DataFrame:
    """The CSV or Parquet file at ``path`` (DataError, one line, when it cannot be read)."""
    if not os.path.isfile(path):
        raise DataError(f"data.source: {kind} file not found: {path}")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, na_values=list(EXTRA_NA), skipinitialspace=True)
    except Exception as exc:  # noqa: BLE001 - every reader failure is one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.source: cannot read {kind} file {path}: {first}") from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"data.source: {kind} file {path} has no rows")
    return frame


def split_target(frame: pd.DataFrame, target: str | Sequence[str], *,
                 features: Sequence[str] | None = None, drop: Sequence[str] = (),
                 categorical: Sequence[str] = (), dates: Sequence[str] = (),
                 where: str = "the table") -> tuple[pd.DataFrame, np.ndarray]:
    """(feature columns, target values): ``features`` keeps only those columns, ``drop``
    leaves columns out; every column the spec names must exist. Every problem at once
    (TableProblems)."""
    columns = list(frame.columns)
    targets = [target] if isinstance(target, str) else list(target)
    problems = []
    for name in targets:
        if name not in columns:
            problems.append(f"data.target: column {name!r} not in {where}"
                            f"{_close(name, columns)}")
    for field, names in (("features", features or ()), ("drop", drop),
                         ("categorical", categorical), ("dates", dates)):
        for name in names:
            if name not in columns:
                problems.append(f"data.{field}: column {name!r} not in {where}"
                                f"{_close(name, columns)}")
            elif name in targets:
                problems.append(f"data.{field}: {name!r} is the target")
    # Go on with the columns that exist, so that one run reports every problem.
    keep = list(features) if features else [c for c in columns if c not in targets]
    keep = [c for c in keep if c not in set(drop) and c in columns and c not in targets]
    X = frame[keep]
    present = [name for name in targets if name in columns]
    y_frame = frame[present]
    for name in present:
        n_missing = int(y_frame[name].isna().sum())
        if n_missing:
            problems.append(f"data.target: column {name!r} has {n_missing} missing values; "
                            "drop those rows first")
    if X.shape[1] or not problems:  # no columns left because of names already reported
        problems += column_problems(X)
    if problems:
        raise TableProblems(problems)
    y = y_frame[targets[0]].to_numpy() if len(targets) == 1 else y_frame.to_numpy()
    return X, y


def column_problems(X: pd.DataFrame) -> list[str]:
    """Columns that cannot be used at all: all missing, or holding infinite values."""
    problems = []
    if X.shape[1] == 0:
        problems.append("data: no feature columns are left")
    for name in X.columns:
        col = X[name]
        if col.isna().all():
            problems.append(f"data: column {name!r} has no values (every cell is missing); "
                            "list it under data.drop")
        elif unusable_dtype(col):
            problems.append(f"data: column {name!r} has dtype {col.dtype}, which cannot be "
                            "a feature; convert it to numbers or text, or list it under "
                            "data.drop")
        elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            n_inf = int(np.isinf(col.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
            if n_inf:
                problems.append(f"data: column {name!r} has {n_inf} infinite values")
    return problems


def unusable_dtype(col: pd.Series) -> bool:
    """Durations, complex numbers, periods and intervals: neither numbers nor labels."""
    dtype = col.dtype
    return (pd.api.types.is_timedelta64_dtype(dtype) or pd.api.types.is_complex_dtype(dtype)
            or isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)))


def describe_dtypes(frame: pd.DataFrame, names: Sequence[str]) -> str:
    """``'a' (category), 'b' (object)``: columns with their pandas dtypes."""
    return ", ".join(f"{n!r} ({frame[n].dtype})" for n in names)


def _close(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; columns: {choices[:20]}"
