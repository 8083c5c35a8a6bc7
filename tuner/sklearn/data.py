"""Rows and targets as scikit-learn passes them -> the engine's ``Dataset``.

scikit-learn validates (``validate_data``: ``n_features_in_``, ``feature_names_in_``,
finite values, NaN allowed: the engine imputes it per training fold); this module
decides the task from the target with scikit-learn's ``type_of_target`` and encodes
class labels with ``LabelEncoder`` (multilabel targets stay 0/1 indicator columns).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, column_or_1d, validate_data

from tuner.errors import InputError
from tuner.inputs.data import Dataset, from_arrays

# type_of_target -> our task (classifiers); other kinds have no head.
CLASSIFIER_TASKS = {"binary": "binary", "multiclass": "multiclass",
                    "multilabel-indicator": "multilabel"}


class EstimatorInputError(InputError, ValueError):
    """Bad input to a scikit-learn estimator of ours: one line, and a ValueError as
    scikit-learn's own checks and callers expect."""


def check_input(estimator, X, y, *, classifier: bool, sample_weight=None):
    """Validated (X float [n, d], y, sample_weight or None); sets ``n_features_in_`` and
    ``feature_names_in_`` on ``estimator``."""
    X, y = validate_data(estimator, X, y, ensure_all_finite="allow-nan", multi_output=True,
                         y_numeric=not classifier, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                             ensure_non_negative=True)
        if not sample_weight.any():
            raise EstimatorInputError("sample_weight: every weight is 0; nothing to fit")
    return X, y, sample_weight


def classifier_target(y) -> tuple[np.ndarray, str, np.ndarray | None]:
    """(encoded y, task, classes): class ids 0..C-1 for binary/multiclass with the
    original labels as ``classes``; 0/1 indicator columns for multilabel."""
    check_classification_targets(y)
    if np.ndim(y) == 2 and np.shape(y)[1] == 1:  # a column: warn and ravel, as sklearn
        y = column_or_1d(y, warn=True)
    kind = type_of_target(y)
    if kind not in CLASSIFIER_TASKS:
        raise EstimatorInputError(
            f"y: a {kind} target has no head here; the classifier takes binary, "
            "multiclass or multilabel-indicator targets")
    task = CLASSIFIER_TASKS[kind]
    if task == "multilabel":
        return np.asarray(y, np.float32), task, np.arange(np.shape(y)[1])
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise EstimatorInputError(f"y has 1 class ({encoder.classes_[0]!r}); a "
                                  "classifier needs at least 2 classes")
    return encoder.transform(y).astype(np.int32), task, encoder.classes_


def regressor_target(y) -> np.ndarray:
    y = np.asarray(y, np.float64)
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def to_dataset(X: np.ndarray, y: np.ndarray, task: str, sample_weight=None,
               feature_names=None) -> Dataset:
    """The engine's Dataset of validated arrays (task given, never inferred)."""
    try:
        dataset = from_arrays(X, y, task=task, feature_names=feature_names)
    except InputError as e:
        raise EstimatorInputError(str(e)) from None
    if sample_weight is not None:
        weight = np.asarray(sample_weight, np.float32)
        weight.setflags(write=False)
        dataset = dataclasses.replace(dataset, sample_weight=weight)
    return dataset
