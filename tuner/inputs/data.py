"""Load and validate data into a ``Dataset``: scikit-learn's built-ins, NPZ arrays,
in-memory arrays, and tables (CSV, Parquet, pandas DataFrames: tuner.inputs.tables).

Every problem is a ``DataError``; a table reports all of its problems at once, one line
each. Missing feature values are kept as NaN and imputed per training fold
(tuner.inputs.cv); infinite values are an error. Task inference: tuner.inputs.targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuner.errors import DataError
from tuner.inputs.spec import ARRAYS_SOURCE, SKLEARN_SOURCES, DataSpec, parse_data_spec
from tuner.inputs.targets import CLASSIFICATION_TASKS, encode_target, inferred_notice, label

__all__ = ["CLASSIFICATION_TASKS", "Dataset", "check_folds", "from_arrays", "load_data",
           "load_npz", "load_sklearn"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Validated data, ready for cross-validation (arrays are read-only).

    X: float32 [n, d] the numeric table (a table's columns encoded); NaN where a value is
       missing (imputed per training fold).
    y: int32 [n] class ids (binary, multiclass); float32 [n] or [n, k] (regression);
       float32 0/1 [n, k] (multilabel).
    task: one of ``models.hparams.TASKS``.
    feature_names: d names of X's columns.
    classes: the original labels of class ids 0..C-1 (classification), else None.
    n_outputs: 1 for binary and single-target regression, C for multiclass,
       k for multilabel and multi-target regression.
    frame: a table's raw feature columns (pandas, as read), else None; encoding: the
       fitted ``TableEncoding`` turning such rows into X, else None.
    class_weight: "balanced" to weigh training rows by class (binary/multiclass).
    sample_weight: float [n] weights of the rows in training (multiplied with the class
       weights), or None; validation rows always weigh 1 (scikit-learn's estimators).
    notices: one-line messages for the user (columns left out, values imputed, ...).
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    classes: np.ndarray | None
    n_outputs: int
    frame: Any = None
    encoding: Any = None
    class_weight: str | None = None
    notices: tuple[str, ...] = ()
    sample_weight: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def fingerprint(self) -> str:
        """sha256 over X, y (values, shapes, dtypes), the task and the class weights."""
        h = hashlib.sha256()
        h.update(self.task.encode())
        if self.class_weight not in (None, "none"):
            h.update(f"|class_weight={self.class_weight}".encode())
        arrays = (self.X, self.y) if self.sample_weight is None else (
            self.X, self.y, self.sample_weight)
        for a in arrays:
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
                        "with tuner.inputs.data.from_arrays(X, y)")
    kind, _, rest = data_spec.source.partition(":")
    if kind == "sklearn":
        return load_sklearn(rest, task=data_spec.task)
    if kind in ("csv", "parquet"):
        from tuner.inputs.tables.load import from_frame
        from tuner.inputs.tables.reading import read_file

        return from_frame(read_file(kind, rest), data_spec, where=rest)
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


def load_npz(path: str | os.PathLike, task: str | None = None) -> Dataset:
    """An ``.npz`` file with arrays ``X`` [n, d] and ``y`` [n] or [n, k]
    (and optionally ``feature_names`` [d])."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DataError(f"data.source: npz file not found: {path}")
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
                feature_names: Sequence[str] | None = None,
                class_weight: str | None = None) -> Dataset:
    """Validate in-memory arrays (X [n, d]; y [n] or [n, k]) into a Dataset. A pandas
    DataFrame with non-numeric columns or missing values goes through the table path."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame
        from tuner.inputs.tables.load import frame_is_numeric, from_frame_and_target

        if not frame_is_numeric(X):
            return from_frame_and_target(X, y, task=task, class_weight=class_weight)
        feature_names = feature_names or [str(c) for c in X.columns]
    X = _features(X, feature_names)
    y_dtype = str(getattr(y, "dtype", "")) or None  # a pandas category stays "category"
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
    problems = []
    for j in np.flatnonzero(np.isinf(X).any(axis=0)):
        problems.append(f"data: feature {feature_names[j]!r} has "
                        f"{int(np.isinf(X[:, j]).sum())} infinite values")
    for j in np.flatnonzero(np.isnan(X).all(axis=0)):
        problems.append(f"data: feature {feature_names[j]!r} has no values (every cell "
                        "is missing)")
    if problems:
        from tuner.inputs.tables.reading import TableProblems

        raise TableProblems(problems)
    raw_y = y
    y, task_, classes, n_outputs = encode_target(y, task, dtype=y_dtype)
    notices = [] if task is not None else [inferred_notice(raw_y, task_, n_outputs)]
    task = task_
    n_missing = int(np.isnan(X).sum())
    if n_missing:
        notices.append(missing_notice({feature_names[j]: int(np.isnan(X[:, j]).sum())
                                       for j in np.flatnonzero(np.isnan(X).any(axis=0))}))
    return _frozen(Dataset(X=np.ascontiguousarray(X, np.float32), y=y, task=task,
                           feature_names=feature_names, classes=classes, n_outputs=n_outputs,
                           class_weight=class_weight, notices=tuple(notices)))


def missing_notice(counts: Mapping[str, int]) -> str:
    """One line: how many values of which columns are imputed."""
    total = sum(counts.values())
    listed = ", ".join(f"{name} {n}" for name, n in list(counts.items())[:8])
    more = f" and {len(counts) - 8} more columns" if len(counts) > 8 else ""
    return (f"data: {total} missing values imputed, fit on each training fold "
            f"(numeric: median; categorical: a level of its own): {listed}{more}")


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
            raise DataError(f"cv.folds: class {label(dataset.classes[c])!r} has "
                            f"{int(counts[c])} samples, fewer than the {folds} folds")


# --------------------------------------------------------------------------- helpers


def _frozen(ds: Dataset) -> Dataset:
    for a in (ds.X, ds.y, ds.classes):
        if a is not None:
            a.setflags(write=False)
    return ds


def _features(X: Any, names: Sequence[str] | None = None) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D [n, d], got shape {X.shape}")
    if X.dtype == bool:
        return X.astype(np.float64)
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        names = list(names) if names is not None else [f"x{i}" for i in range(X.shape[1])]
        try:
            if np.issubdtype(X.dtype, np.complexfloating):
                raise TypeError
            return X.astype(np.float64)
        except (TypeError, ValueError):
            bad = [names[j] for j in range(X.shape[1]) if not _castable(X[:, j])]
            listed = ", ".join(f"{n!r} ({X.dtype})" for n in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(f"X must be numeric; columns that are not numbers: "
                            f"{listed}{more} (pass a pandas DataFrame to one-hot encode "
                            "text and category columns)") from None
    return X


def _castable(column: np.ndarray) -> bool:
    if np.issubdtype(column.dtype, np.complexfloating):
        return False
    try:
        column.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return True
