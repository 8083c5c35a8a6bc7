"""A table (file or DataFrame) into a ``Dataset``: the target split off, each column's
role decided, missing values counted (and refused under ``missing: error``), the
label-free encoder fit, the numeric table built."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuner.inputs.data import Dataset, _frozen, missing_notice
from tuner.inputs.spec import DataSpec
from tuner.inputs.tables.columns import assign_roles
from tuner.inputs.tables.encoding import DEFAULT_MAX_CATEGORIES, fit_encoding
from tuner.inputs.tables.reading import TableProblems, column_problems, split_target
from tuner.inputs.targets import encode_target, inferred_notice


def frame_is_numeric(frame: pd.DataFrame) -> bool:
    """Only numeric (or boolean) columns: such a DataFrame is taken as plain arrays."""
    return all(pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns) and not frame.isna().to_numpy().any()


def from_frame(frame: pd.DataFrame, spec: DataSpec, where: str = "the table") -> Dataset:
    """The table ``frame`` read as the ``data`` section ``spec`` says."""
    X, y = split_target(frame, spec.target, features=spec.features, drop=spec.drop or (),
                        categorical=spec.categorical, dates=spec.dates or (), where=where)
    dtype = str(frame[spec.target].dtype) if isinstance(spec.target, str) else None
    return _dataset(X, y, spec, dtype)


def from_frame_and_target(X: pd.DataFrame, y, task: str | None = None,
                          class_weight: str | None = None) -> Dataset:
    """A DataFrame of features with its target (the Python API's ``data=(df, y)``)."""
    X = X.copy()
    X.columns = [str(c) for c in X.columns]
    problems = column_problems(X)
    if problems:
        raise TableProblems(problems)
    dtype = str(getattr(y, "dtype", "")) or None  # a pandas category stays "category"
    y = np.asarray(y)
    spec = DataSpec(source="arrays", task=task, class_weight=class_weight)
    return _dataset(X, y, spec, dtype)


def _dataset(X: pd.DataFrame, y: np.ndarray, spec: DataSpec, y_dtype: str | None = None
             ) -> Dataset:
    roles = assign_roles(X, spec.categorical, spec.dates or ())
    kept = [c for c in X.columns if c not in {name for name, _ in roles.dropped}]
    X = X[kept]
    missing = {c: int(n) for c, n in X.isna().sum().items() if n}
    if missing and spec.missing == "error":
        raise TableProblems([f"data: column {c!r} has {n} missing values (data.missing: "
                             "error; use impute to fill them per training fold)"
                             for c, n in missing.items()])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    raw_y = y
    y, task, classes, n_outputs = encode_target(y, spec.task, dtype=y_dtype)
    encoding = fit_encoding(X, roles, missing_indicator=bool(spec.missing_indicator),
                            max_categories=spec.max_categories or DEFAULT_MAX_CATEGORIES)
    matrix = encoding.transform(X)
    notices = list(roles.notices)
    if spec.task is None:
        notices.insert(0, inferred_notice(raw_y, task, n_outputs))
    if missing:
        notices.append(missing_notice(missing))
    class_weight = spec.class_weight if spec.class_weight != "none" else None
    if class_weight is not None and task not in ("binary", "multiclass"):
        raise TableProblems([f"data.class_weight: balanced weighs classes, the task is "
                             f"{task}"])
    return _frozen(Dataset(X=np.ascontiguousarray(matrix, np.float32), y=y, task=task,
                           feature_names=encoding.feature_names, classes=classes,
                           n_outputs=n_outputs, frame=X, encoding=encoding,
                           class_weight=class_weight, notices=tuple(notices)))
