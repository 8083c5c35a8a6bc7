"""The target: its task (inferred when the spec does not say) and its encoding.

Task inference when the task is not given:

================================================  ==========
target                                            task
================================================  ==========
1-D float                                         regression
1-D integers with more than MAX_INFERRED_CLASSES  regression
(30) distinct values, or with at least
MIN_SHARE_CLASSES (10) distinct values and more
than MAX_CLASS_SHARE (half) of the rows
1-D int / bool / string, 2 classes                binary
1-D int / bool / string, > 2 classes              multiclass
2-D [n, k], every value 0 or 1                    multilabel
2-D [n, k] float, not all 0/1                     regression
================================================  ==========
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.hparams import TASKS
from tuner.errors import DataError

CLASSIFICATION_TASKS = ("binary", "multiclass")
# An integer target with more distinct values than this is a quantity, not classes (a
# count or a price in whole units); data.task: multiclass says otherwise.
MAX_INFERRED_CLASSES = 30
# Nor is one with more distinct values than this share of the rows (most "classes"
# would have one or two rows: nothing to learn or stratify by).
MAX_CLASS_SHARE = 0.5
MIN_SHARE_CLASSES = 10  # the share rule starts at this many distinct values


def label(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _is_01(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0, 1)).all())


def encode_target(y: np.ndarray, task: str | None, dtype: str | None = None
                  ) -> tuple[np.ndarray, str, np.ndarray | None, int]:
    """(encoded y, task, classes, n_outputs) after inferring or checking the task.
    ``dtype``: the target's dtype as the user gave it, for messages (a pandas
    ``category`` column is an object array here)."""
    shown = dtype or str(y.dtype)
    if task is not None and task not in TASKS:
        raise DataError(f"data.task: unknown task {task!r}; expected one of {list(TASKS)}")
    numeric = y.dtype == bool or np.issubdtype(y.dtype, np.number)
    if numeric and y.dtype != bool:
        n_bad = int((~np.isfinite(y.astype(np.float64))).sum())
        if n_bad:
            raise DataError(f"target has {n_bad} NaN/inf values")
    elif not numeric:
        missing = sum(v is None or (isinstance(v, float) and v != v) for v in y.ravel())
        if missing:
            raise DataError(f"target has {missing} missing values")
    floating = numeric and np.issubdtype(y.dtype, np.floating)

    if y.ndim == 2:
        if task is None:
            if numeric and _is_01(y):
                task = "multilabel"
            elif floating:
                task = "regression"
            else:
                raise DataError(f"a 2-D target must be 0/1 labels (multilabel) or floats "
                                f"(regression), got dtype {shown}; set data.task")
        if task in CLASSIFICATION_TASKS:
            raise DataError(f"data.task: {task} needs a 1-D target, got shape {y.shape}")
        if task == "multilabel":
            if not (numeric and _is_01(y)):
                raise DataError("data.task: multilabel needs a target of 0/1 values")
            const = [j for j in range(y.shape[1]) if np.unique(y[:, j]).size < 2]
            if const:
                raise DataError(f"label column {const[0]} has a single value; "
                                "a multilabel target needs both 0 and 1 in every column")
            return y.astype(np.float32), task, None, int(y.shape[1])
        return _regression(y, numeric, shown)

    if task is None:
        task = infer_task(y)
    if task == "multilabel":
        raise DataError(f"data.task: multilabel needs a 2-D target [n, k], got shape {y.shape}")
    if task == "regression":
        return _regression(y, numeric, shown)

    if floating and not np.all(y == np.round(y)):
        raise DataError(f"data.task: {task} needs class labels, the target has "
                        "non-integer values; use task regression")
    labels = y.astype(str) if y.dtype == object else y
    try:
        classes, ids = np.unique(labels, return_inverse=True)
    except TypeError:
        raise DataError("the target mixes label types that cannot be sorted") from None
    n_classes = len(classes)
    if n_classes < 2:
        raise DataError(f"the target has a single class {label(classes[0])!r}; "
                        "classification needs at least 2")
    if task == "classification":
        task = "binary" if n_classes == 2 else "multiclass"
    if task == "binary" and n_classes != 2:
        raise DataError(f"data.task: binary needs 2 classes, the target has {n_classes}: "
                        f"{[label(c) for c in classes[:10]]}")
    n_outputs = 1 if task == "binary" else n_classes
    return ids.reshape(-1).astype(np.int32), task, classes, n_outputs


def infer_task(y: np.ndarray) -> str:
    """regression or classification (binary/multiclass decided by the classes) for a
    1-D target (the module docstring's table)."""
    if y.dtype != bool and np.issubdtype(y.dtype, np.floating):
        return "regression"
    if y.dtype != bool and np.issubdtype(y.dtype, np.integer):
        distinct = np.unique(y).size
        if distinct > MAX_INFERRED_CLASSES or (
                distinct >= MIN_SHARE_CLASSES and distinct > MAX_CLASS_SHARE * y.size):
            return "regression"
    return "classification"


def inferred_notice(y: np.ndarray, task: str, n_outputs: int) -> str:
    """One line: the task inferred for target ``y`` (raw values), why, and how to say
    otherwise."""
    if y.ndim == 2:
        why = f"a target of {y.shape[1]} columns"
    elif task == "regression":
        if y.dtype != bool and np.issubdtype(y.dtype, np.integer):
            why = f"integer target with {np.unique(y).size} distinct values in {y.size} rows"
        else:
            why = "numbers with fractions"
    else:
        why = f"{2 if task == 'binary' else n_outputs} classes"
    other = "multiclass" if task == "regression" else "regression"
    return (f"data: task {task} inferred ({why}); to override, set task: in the spec's "
            f"data section (e.g. task: {other})")


def _regression(y: np.ndarray, numeric: bool, shown: str
                ) -> tuple[np.ndarray, str, None, int]:
    if not numeric:
        raise DataError(f"data.task: regression needs a numeric target, got dtype {shown}")
    y = y.astype(np.float32)
    return y, "regression", None, 1 if y.ndim == 1 else int(y.shape[1])
