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

from models.folds import FoldStack, stack_folds
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
               shuffle: bool = True, seed: int = 0) -> tuple[FoldStack, list[Split]]:
    """K folds as a padded FoldStack [F, n, d] and the (train_idx, val_idx) list.

    Padding rows have weight 0; each fold's real rows have weight 1.
    """
    splits = splitter(dataset, folds, stratified, shuffle, seed)
    parts, shifts, scales = [], [], []
    for tr, va in splits:
        scaler = _fit_scaler(dataset.X[tr])
        y_tr, y_va, shift, scale = _scale_targets(dataset, tr, va)
        parts.append((_scale(scaler, dataset.X[tr]), y_tr, _scale(scaler, dataset.X[va]), y_va))
        shifts.append(shift)
        scales.append(scale)
    stack = stack_folds(parts, y_shift=np.stack(shifts), y_scale=np.stack(scales))
    return stack, splits


def make_full_fit(dataset: Dataset) -> FullFit:
    """A 1-fold stack for the final refit: train and val rows are all the data."""
    every = np.arange(dataset.n_samples)
    scaler = _fit_scaler(dataset.X)
    y, _, shift, scale = _scale_targets(dataset, every, every)
    x = _scale(scaler, dataset.X)
    stack = stack_folds([(x, y, x, y)], y_shift=shift[None], y_scale=scale[None])
    return FullFit(stack, scaler, shift, scale)


def _fit_scaler(X: np.ndarray) -> StandardScaler:
    # float64 statistics; a constant column gets scale 1 (sklearn), so no NaN.
    return StandardScaler().fit(np.asarray(X, np.float64))


def _scale(scaler: StandardScaler, X: np.ndarray) -> np.ndarray:
    return scaler.transform(np.asarray(X, np.float64)).astype(np.float32)


def _scale_targets(dataset: Dataset, tr: np.ndarray, va: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y_train, y_val, shift [k], scale [k]); only regression targets are changed."""
    y = dataset.y
    k = 1 if y.ndim == 1 else y.shape[1]
    if dataset.task != "regression":
        return y[tr], y[va], np.zeros(k, np.float32), np.ones(k, np.float32)
    y64 = y.astype(np.float64).reshape(len(y), k)
    shift = y64[tr].mean(axis=0)
    scale = y64[tr].std(axis=0)
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(shift))] = 1.0  # constant target
    y_tr = ((y64[tr] - shift) / scale).astype(np.float32)
    y_va = ((y64[va] - shift) / scale).astype(np.float32)
    return y_tr, y_va, shift.astype(np.float32), scale.astype(np.float32)
