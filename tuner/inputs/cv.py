"""K-fold splits of a ``Dataset`` into a ``models.folds.FoldStack``.

Every statistic is fit on each training fold only and applied to that fold's training
and validation rows, so nothing of a validation row reaches training:

- missing values: scikit-learn's SimpleImputer (median) fit on the fold's training rows;
- scaling: a StandardScaler fit on the fold's training rows (after imputation);
- one-hot columns of categories the fold's training rows never saw are dropped from that
  fold (as OneHotEncoder fit on the fold would ignore them);
- class weights (``class_weight: balanced``): scikit-learn's, from the fold's training
  labels; times the rows' own ``sample_weight`` when the data has one;
- regression targets: standardised, the fold's (mean, std) kept so metrics report
  original units.

The table itself is held once (the FoldStack keeps row indices and these per-fold
numbers).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from models.folds import FoldStack, fold_stack
from tuner.inputs.data import CLASSIFICATION_TASKS, Dataset, check_folds

Split = tuple[np.ndarray, np.ndarray]
CHUNK_ROWS = 1 << 16


class Preprocessing(NamedTuple):
    """What one fold's training rows (or all rows, for the refit) give."""

    imputer: SimpleImputer       # medians of every column (0 where never missing)
    scaler: StandardScaler       # mean/scale after imputation
    inv_scale: np.ndarray        # 1/scale, 0 for columns the rows never vary in
    weights: np.ndarray | None   # class weights of the rows, or None


class FullFit(NamedTuple):
    """Everything needed to refit on all data and apply the model to new raw rows.

    stack: a 1-fold FoldStack; train rows = all data, val rows = the same data.
    imputer, scaler: scikit-learn's, fit on all rows (the model's pipeline reuses them).
    y_shift, y_scale: float32 [k] regression target mean/std (zeros/ones otherwise).
    """

    stack: FoldStack
    imputer: SimpleImputer
    scaler: StandardScaler
    y_shift: np.ndarray
    y_scale: np.ndarray

    def transform_x(self, X: np.ndarray) -> np.ndarray:
        """Numeric features [n, d] -> imputed, scaled float32 [n, d], as trained."""
        filled = self.imputer.transform(np.asarray(X, np.float64))
        return self.scaler.transform(filled).astype(np.float32)

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
    ``splits`` given (a caller's own cross-validation) replace the spec's K folds."""
    if splits is None:
        splits = splitter(dataset, folds, stratified, shuffle, seed)
    else:
        splits = [(np.asarray(tr), np.asarray(va)) for tr, va in splits]
    stack, _ = stack_splits(dataset, splits)
    return stack, splits


def stack_splits(dataset: Dataset, splits: list[Split]
                 ) -> tuple[FoldStack, list[tuple[np.ndarray, np.ndarray]]]:
    """The FoldStack of ``splits``, each fold's preprocessing fit on its own training
    rows, and each fold's target (shift, scale)."""
    fits = [fit_preprocessing(dataset, tr) for tr, _ in splits]
    targets = [target_scaling(dataset, tr) for tr, _ in splits]
    stack = fold_stack(
        dataset.X, dataset.y, splits,
        x_fill=np.stack([f.imputer.statistics_ for f in fits]),
        x_shift=np.stack([f.scaler.mean_ for f in fits]),
        x_inv_scale=np.stack([f.inv_scale for f in fits]),
        y_shift=np.stack([t[0] for t in targets]), y_scale=np.stack([t[1] for t in targets]),
        train_weights=None if fits[0].weights is None else [f.weights for f in fits])
    return stack, targets


def make_full_fit(dataset: Dataset, n_rows: int | None = None) -> FullFit:
    """A 1-fold stack for the final refit: train and val rows are all the data.
    ``n_rows`` pads the table and both parts to that many rows (weight 0), so that data
    of similar sizes share one compiled program."""
    every = np.arange(dataset.n_samples)
    fit = fit_preprocessing(dataset, every)
    shift, scale = target_scaling(dataset, every)
    x, y = dataset.X, dataset.y
    if n_rows is not None and n_rows > len(x):  # rows no index points to
        x = np.concatenate([x, np.zeros((n_rows - len(x),) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros((n_rows - len(y),) + y.shape[1:], y.dtype)])
    stack = fold_stack(x, y, [(every, every)],
                       x_fill=fit.imputer.statistics_[None], x_shift=fit.scaler.mean_[None],
                       x_inv_scale=fit.inv_scale[None], y_shift=shift[None],
                       y_scale=scale[None],
                       train_weights=None if fit.weights is None else [fit.weights],
                       n_train=n_rows, n_val=n_rows)
    return FullFit(stack, fit.imputer, fit.scaler, shift, scale)


def fit_preprocessing(dataset: Dataset, rows: np.ndarray) -> Preprocessing:
    """The imputer, scaler and class weights of ``rows`` (module docstring)."""
    X = dataset.X
    rows = np.asarray(rows)
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    if np.isnan(X).any():
        imputer.fit(np.asarray(X[rows], np.float64))
    else:  # nothing to impute: skip a float64 copy of the rows
        imputer.fit(np.zeros((1, X.shape[1])))
    fill = imputer.statistics_
    scaler = StandardScaler()
    # In chunks: no float64 copy of the whole table.
    for start in range(0, len(rows), CHUNK_ROWS):
        part = np.asarray(X[rows[start:start + CHUNK_ROWS]], np.float64)
        scaler.partial_fit(np.where(np.isnan(part), fill, part))
    inv_scale = 1.0 / scaler.scale_
    if dataset.encoding is not None:
        # A one-hot column the rows never set: a category this fold has not seen.
        unseen = dataset.encoding.one_hot & (scaler.var_ == 0) & (scaler.mean_ == 0)
        inv_scale = np.where(unseen, 0.0, inv_scale)
    weights = None
    if dataset.class_weight == "balanced":
        y = dataset.y[rows]
        present = np.unique(y)
        per_class = compute_class_weight("balanced", classes=present, y=y)
        lookup = np.zeros(int(dataset.y.max()) + 1)
        lookup[present] = per_class
        weights = lookup[y].astype(np.float32)
    if dataset.sample_weight is not None:
        own = np.asarray(dataset.sample_weight, np.float32)[rows]
        weights = own if weights is None else weights * own
    return Preprocessing(imputer, scaler, inv_scale, weights)


def target_scaling(dataset: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
