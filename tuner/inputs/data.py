"""Load and validate tabular data into a ``Dataset``.

Sources: ``sklearn:<iris|wine|breast_cancer|digits|diabetes>``, ``csv:PATH`` (with
``target: COLUMN``; non-numeric columns one-hot encoded only when listed under
``categorical``), ``npz:PATH`` (arrays ``X`` and ``y``) and in-memory arrays
(``from_arrays``). Every problem is a one-line ``DataError``.

Task inference when the task is not given:

=========================================  ==========
target                                     task
=========================================  ==========
1-D float                                  regression
1-D int / bool / string, 2 classes         binary
1-D int / bool / string, > 2 classes       multiclass
2-D [n, k], every value 0 or 1             multilabel
2-D [n, k] float, not all 0/1              regression
=========================================  ==========
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.hparams import TASKS
from tuner.errors import DataError
from tuner.inputs.spec import ARRAYS_SOURCE, SKLEARN_SOURCES, DataSpec, parse_data_spec

CLASSIFICATION_TASKS = ("binary", "multiclass")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Validated data, ready for cross-validation (arrays are read-only).

    X: float32 [n, d] raw (unscaled) features.
    y: int32 [n] class ids (binary, multiclass); float32 [n] or [n, k] (regression);
       float32 0/1 [n, k] (multilabel).
    task: one of ``models.hparams.TASKS``.
    feature_names: d names (one-hot columns are named ``column=value``).
    classes: the original labels of class ids 0..C-1 (classification), else None.
    n_outputs: 1 for binary and single-target regression, C for multiclass,
       k for multilabel and multi-target regression.
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    classes: np.ndarray | None
    n_outputs: int

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def fingerprint(self) -> str:
        """sha256 over X, y (values, shapes, dtypes) and the task."""
        h = hashlib.sha256()
        h.update(self.task.encode())
        for a in (self.X, self.y):
            a = np.ascontiguousarray(a)
            h.update(f"|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()


# --------------------------------------------------------------------------- entry points


def load_data(data_spec: DataSpec | Mapping, base_dir: str | os.PathLike | None = None
              ) -> Dataset:
    """Load the data a spec's ``data`` section names.

    ``data_spec`` is a ``DataSpec`` (paths already absolute) or a mapping, whose
    relative paths resolve against ``base_dir`` (default: the working directory).
    """
    data_spec = parse_data_spec(data_spec, base_dir=base_dir)
    if data_spec.source == ARRAYS_SOURCE:
        raise DataError("data.source: 'arrays' means in-memory data; pass the arrays "
                        "with tuner.data.from_arrays(X, y)")
    kind, _, rest = data_spec.source.partition(":")
    if kind == "sklearn":
        return load_sklearn(rest, task=data_spec.task)
    if kind == "csv":
        return load_csv(rest, target=data_spec.target, categorical=data_spec.categorical,
                        task=data_spec.task)
    return load_npz(rest, task=data_spec.task)


def load_sklearn(name: str, task: str | None = None) -> Dataset:
    """One of scikit-learn's bundled data sets (no download needed)."""
    if name not in SKLEARN_SOURCES:
        raise DataError(f"data.source: unknown sklearn data set {name!r}; "
                        f"expected one of {list(SKLEARN_SOURCES)}")
    from sklearn import datasets  # noqa: PLC0415 (slow import, only when used)

    bunch = getattr(datasets, f"load_{name}")()
    ds = from_arrays(bunch.data, bunch.target, task=task,
                     feature_names=[str(f) for f in bunch.feature_names])
    names = getattr(bunch, "target_names", None)
    if ds.classes is not None and names is not None and len(names) == len(ds.classes):
        # class id i is target_names[i] (the ids are 0..C-1 already)
        classes = np.asarray(names)
        classes.setflags(write=False)
        ds = dataclasses.replace(ds, classes=classes)
    return ds


def load_csv(path: str | os.PathLike, target: str, categorical: Sequence[str] = (),
             task: str | None = None) -> Dataset:
    """A CSV file with a header row; ``target`` names the label column."""
    import pandas as pd  # noqa: PLC0415

    path = _existing_file(path, "csv")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"data.source: cannot read csv file {path}: {e}") from None
    if len(df) == 0:
        raise DataError("the data has no rows")
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if target not in columns:
        raise DataError(f"data.target: column {target!r} not in {path}{_close(target, columns)}")
    for c in categorical:
        if c not in columns:
            raise DataError(f"data.categorical: column {c!r} not in {path}"
                            f"{_close(c, columns)}")
    y = df[target]
    if y.isna().any():
        raise DataError(f"target {target!r} has {int(y.isna().sum())} missing values")
    y = y.to_numpy()
    blocks, names = [], []
    for c in columns:
        if c == target:
            continue
        col = df[c]
        if c in categorical:
            if col.isna().any():
                raise DataError(f"categorical feature {c!r} has {int(col.isna().sum())} "
                                "missing values")
            values = col.astype(str)
            levels = sorted(values.unique())  # sorted: the encoding does not depend on row order
            dummies = pd.get_dummies(pd.Categorical(values, categories=levels), dtype=np.float32)
            blocks.append(dummies.to_numpy())
            names += [f"{c}={level}" for level in levels]
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            blocks.append(col.to_numpy(dtype=np.float64, na_value=np.nan)[:, None])
            names.append(c)
        else:
            example = col.dropna().iloc[0] if col.notna().any() else None
            raise DataError(f"feature {c!r} is not numeric (e.g. {example!r}); list it "
                            "under data.categorical to one-hot encode it")
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0))
    return from_arrays(X, y, task=task, feature_names=names)


def load_npz(path: str | os.PathLike, task: str | None = None) -> Dataset:
    """An ``.npz`` file with arrays ``X`` [n, d] and ``y`` [n] or [n, k]
    (and optionally ``feature_names`` [d])."""
    path = _existing_file(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise DataError(f"data.source: cannot read npz file {path}: {e}") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(f"data.source: npz file {path} has no array {key!r}; "
                            f"it has {sorted(arrays)}")
    names = arrays.get("feature_names")
    return from_arrays(arrays["X"], arrays["y"], task=task,
                       feature_names=None if names is None else [str(n) for n in names])


def from_arrays(X: Any, y: Any, task: str | None = None,
                feature_names: Sequence[str] | None = None) -> Dataset:
    """Validate in-memory arrays (X [n, d]; y [n] or [n, k]) into a Dataset."""
    if feature_names is None and hasattr(X, "columns"):  # a pandas DataFrame
        feature_names = [str(c) for c in X.columns]
    X = _features(X)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise DataError(f"y must be 1-D [n] or 2-D [n, k], got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X and y lengths differ: X has {X.shape[0]} rows, y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise DataError("the data has no rows")
    if X.shape[1] == 0:
        raise DataError("the data has no feature columns")
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(X.shape[1])]
    feature_names = tuple(str(n) for n in feature_names)
    if len(feature_names) != X.shape[1]:
        raise DataError(f"{len(feature_names)} feature names for {X.shape[1]} columns")
    bad = ~np.isfinite(X)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        raise DataError(f"feature {feature_names[j]!r} has {int(bad[:, j].sum())} "
                        "NaN/inf values")
    if task is not None and task not in TASKS:
        raise DataError(f"data.task: unknown task {task!r}; expected one of {list(TASKS)}")
    y, task, classes, n_outputs = _target(y, task)
    X = np.ascontiguousarray(X, np.float32)
    X.setflags(write=False)
    y.setflags(write=False)
    if classes is not None:
        classes.setflags(write=False)
    return Dataset(X=X, y=y, task=task, feature_names=feature_names, classes=classes,
                   n_outputs=n_outputs)


def check_folds(dataset: Dataset, folds: int, stratified: bool = True) -> None:
    """DataError unless every fold can get rows (and, stratified, every class in each)."""
    n = dataset.n_samples
    if n < folds:
        raise DataError(f"cv.folds: {folds} folds need at least {folds} samples, "
                        f"the data has {n}")
    if stratified and dataset.task in CLASSIFICATION_TASKS:
        counts = np.bincount(dataset.y, minlength=len(dataset.classes))
        c = int(np.argmin(counts))
        if counts[c] < folds:
            raise DataError(f"cv.folds: class {_label(dataset.classes[c])!r} has "
                            f"{int(counts[c])} samples, fewer than the {folds} folds")


# --------------------------------------------------------------------------- helpers


def _existing_file(path: str | os.PathLike, kind: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DataError(f"data.source: {kind} file not found: {path}")
    return path


def _close(word: str, choices: list[str]) -> str:
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; columns: {choices[:20]}"


def _label(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _features(X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D [n, d], got shape {X.shape}")
    if X.dtype == bool:
        return X.astype(np.float64)
    if not np.issubdtype(X.dtype, np.number):
        try:
            return X.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"X must be numeric, got dtype {X.dtype}") from None
    return X


def _is_01(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0, 1)).all())


def _target(y: np.ndarray, task: str | None) -> tuple[np.ndarray, str, np.ndarray | None, int]:
    """(encoded y, task, classes, n_outputs) after inferring or checking the task."""
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
                                f"(regression), got dtype {y.dtype}; set data.task")
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
        return _regression(y, numeric)

    if task is None:
        task = "regression" if floating else "classification"
    if task == "multilabel":
        raise DataError(f"data.task: multilabel needs a 2-D target [n, k], got shape {y.shape}")
    if task == "regression":
        return _regression(y, numeric)

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
        raise DataError(f"the target has a single class {_label(classes[0])!r}; "
                        "classification needs at least 2")
    if task == "classification":
        task = "binary" if n_classes == 2 else "multiclass"
    if task == "binary" and n_classes != 2:
        raise DataError(f"data.task: binary needs 2 classes, the target has {n_classes}: "
                        f"{[_label(c) for c in classes[:10]]}")
    n_outputs = 1 if task == "binary" else n_classes
    return ids.reshape(-1).astype(np.int32), task, classes, n_outputs


def _regression(y: np.ndarray, numeric: bool) -> tuple[np.ndarray, str, None, int]:
    if not numeric:
        raise DataError(f"data.task: regression needs a numeric target, got dtype {y.dtype}")
    y = y.astype(np.float32)
    return y, "regression", None, 1 if y.ndim == 1 else int(y.shape[1])
