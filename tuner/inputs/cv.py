"""K-fold splits of a ``Dataset`` into a padded ``models.folds.FoldStack``.

Scaling is fit on each training fold only and applied to that fold's training and
validation rows, so no statistic of a validation row reaches training. Regression
targets are standardised the same way; the fold's (mean, std) go into the stack's
``y_shift``/``y_scale`` so metrics can report original units.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from models.folds import FoldStack, fold_stack
from tuner.inputs.data import CLASSIFICATION_TASKS, Dataset, check_folds

Split = tuple[np.ndarray, np.ndarray]


class FullFit(NamedTuple):
    """Everything needed to refit on all data and apply the model to new raw X.

    stack: a 1-fold FoldStack; train rows = all data, val rows = the same data.
    scaler: StandardScaler fit on all of X.
    y_shift, y_scale: float32 [k] regression target mean/std (zeros/ones otherwise).
    """

    stack: FoldStack
    scaler: StandardScaler
    y_shift: np.ndarray
    y_scale: np.ndarray

    def transform_x(self, X: np.ndarray) -> np.ndarray:
        """Raw features [n, d] -> scaled float32 [n, d], as the model was trained."""
        return _scale(self.scaler, X)

    def restore_y(self, y: np.ndarray) -> np.ndarray:
        """Standardised regression outputs [n, k] or [n] -> original units."""
        y = np.asarray(y, np.float32)
        shift, scale = (self.y_shift, self.y_scale) if y.ndim == 2 else (
            self.y_shift[0], self.y_scale[0])
        return y * scale + shift


def splitter(dataset: Dataset, folds: int = 5, stratified: bool = True,
             shuffle: bool = True, seed: int = 0) -> list[Split]:
    """(train_idx, val_idx) per fold: stratified for binary/multiclass when asked."""
    check_folds(dataset, folds, stratified)
    random_state = seed if shuffle else None
    if stratified and dataset.task in CLASSIFICATION_TASKS:
        kf = StratifiedKFold(folds, shuffle=shuffle, random_state=random_state)
    else:
        kf = KFold(folds, shuffle=shuffle, random_state=random_state)
    return [(tr, va) for tr, va in kf.split(dataset.X, dataset.y)]


def make_folds(dataset: Dataset, folds: int = 5, stratified: bool = True,
               shuffle: bool = True, seed: int = 0, splits: list[Split] | None = None
               ) -> tuple[FoldStack, list[Split]]:
    """K folds over the one table (``FoldStack``) and the (train_idx, val_idx) list.

    Each fold's scaler (and regression target mean/std) is fit on its training rows
    only; the table itself is not copied per fold. ``splits`` given (a caller's own
    cross-validation) replace the spec's K folds."""
    if splits is None:
        splits = splitter(dataset, folds, stratified, shuffle, seed)
    else:
        splits = [(np.asarray(tr), np.asarray(va)) for tr, va in splits]
    shifts, scales, y_shifts, y_scales = [], [], [], []
    for tr, _ in splits:
        scaler = _fit_scaler(dataset.X, tr)
        shifts.append(scaler.mean_)
        scales.append(1.0 / scaler.scale_)
        y_shift, y_scale = _target_scaling(dataset, tr)
        y_shifts.append(y_shift)
        y_scales.append(y_scale)
    stack = fold_stack(dataset.X, dataset.y, splits, x_shift=np.stack(shifts),
                       x_inv_scale=np.stack(scales), y_shift=np.stack(y_shifts),
                       y_scale=np.stack(y_scales))
    return stack, splits


def make_full_fit(dataset: Dataset) -> FullFit:
    """A 1-fold stack for the final refit: train and val rows are all the data."""
    every = np.arange(dataset.n_samples)
    scaler = _fit_scaler(dataset.X, every)
    shift, scale = _target_scaling(dataset, every)
    stack = fold_stack(dataset.X, dataset.y, [(every, every)], x_shift=scaler.mean_[None],
                       x_inv_scale=1.0 / scaler.scale_[None], y_shift=shift[None],
                       y_scale=scale[None])
    return FullFit(stack, scaler, shift, scale)


def _fit_scaler(X: np.ndarray, rows: np.ndarray, chunk: int = 1 << 16) -> StandardScaler:
    """StandardScaler statistics of ``X[rows]`` in float64, fed in chunks (``partial_fit``)
    so that no float64 copy of the whole table exists; a constant column gets scale 1."""
    scaler = StandardScaler()
    rows = np.asarray(rows)
    for start in range(0, len(rows), chunk):
        scaler.partial_fit(np.asarray(X[rows[start:start + chunk]], np.float64))
    return scaler


def _scale(scaler: StandardScaler, X: np.ndarray) -> np.ndarray:
    return scaler.transform(np.asarray(X, np.float64)).astype(np.float32)


def _target_scaling(dataset: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift [k], scale [k]) standardising the targets of ``rows``; only regression
    targets are scaled (zeros/ones otherwise)."""
    y = dataset.y
    k = 1 if y.ndim == 1 else y.shape[1]
    if dataset.task != "regression":
        return np.zeros(k, np.float32), np.ones(k, np.float32)
    y64 = y.astype(np.float64).reshape(len(y), k)[rows]
    shift = y64.mean(axis=0)
    scale = y64.std(axis=0)
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(shift))] = 1.0  # constant target
    return shift.astype(np.float32), scale.astype(np.float32)
