"""What each feature column of a table is, decided from the spec and the values:

- listed under ``categorical``: categorical (one-hot; missing is a level of its own);
- listed under ``dates``: a date, expanded to year, month, day of week, day of year;
- a datetime column, or text that parses as dates, not listed: dropped (with a notice);
- text (or boolean-like text) not listed: categorical (with a notice), except an ID-like
  column (a different text value on every row), which is dropped (with a notice);
- otherwise numeric (booleans as 0/1).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import pandas as pd

# A text column is taken for dates when this share of its values parses as dates.
DATE_SHARE = 0.9


@dataclasses.dataclass(frozen=True)
class ColumnRoles:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    dates: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]   # (column, why)
    notices: tuple[str, ...]


def is_datetime(col: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
        return False
    values = col.dropna().astype(str)
    if values.empty or values.str.fullmatch(r"[+-]?\d+(\.\d+)?").all():
        return False  # numbers in text are not dates
    sample = values.iloc[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return parsed.notna().mean() >= DATE_SHARE


def assign_roles(X: pd.DataFrame, categorical: Sequence[str] = (),
                 dates: Sequence[str] = ()) -> ColumnRoles:
    """Each column's role (module docstring); the spec's lists win over detection."""
    numeric, cats, date_cols, dropped, notices = [], [], [], [], []
    auto_cats = []
    for name in X.columns:
        col = X[name]
        if name in dates:
            date_cols.append(name)
        elif name in categorical:
            cats.append(name)
        elif is_datetime(col):
            dropped.append((name, "a date column"))
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            numeric.append(name)
        else:
            values = col.dropna().astype(str)
            if len(values) > 20 and values.nunique() == len(values):
                dropped.append((name, "a different value on every row, like an ID"))
            else:
                cats.append(name)
                auto_cats.append(name)
    if auto_cats:
        notices.append(f"data: text columns {auto_cats} are one-hot encoded as categorical "
                       "(list them under data.categorical to say so)")
    for name, why in dropped:
        hint = "list it under data.dates to expand it" if why.startswith("a date") else \
            "list it under data.categorical to keep it"
        notices.append(f"data: column {name!r} is left out: {why} ({hint})")
    return ColumnRoles(tuple(numeric), tuple(cats), tuple(date_cols), tuple(dropped),
                       tuple(notices))
