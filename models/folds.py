"""FoldStack: K cross-validation folds over one copy of the data.

The table is held once, raw (``x`` [N, d], ``y``); each fold is a list of row indices
(its training rows and its validation rows, padded to one length with weight-0 rows)
and the per-fold preprocessing fit on its training rows: missing values filled, columns
standardised, regression targets standardised. A program gathers a minibatch's rows and
applies its fold's transform to them, so memory grows with the data, not with
folds x rows (nor lanes x rows x width: see models.train for evaluation in chunks).

Padded rows carry weight 0 and never influence a loss, gradient, normalisation
statistic or metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class FoldStack(NamedTuple):
    """F folds over N rows of d features (a pytree of arrays).

    x:         float32 [N, d]  raw features; NaN where a value is missing
    y:         int32 [N] class ids (binary/multiclass), float32 [N, k] (regression:
               raw targets; multilabel: 0/1 labels)
    train_idx: int32 [F, n_train] rows of each fold's training part (padding: row 0)
    w_train:   float32 [F, n_train] row weights: 1 (or a class weight) for a real row,
               0 for padding
    val_idx, w_val: the same for the validation rows [F, n_val]
    x_fill:    float32 [F, d] what a missing value of each column becomes, per fold
    x_shift:   float32 [F, d] per fold, features become (x - shift) * inv_scale
    x_inv_scale: float32 [F, d] (0 drops a column from that fold: a one-hot column of a
               category its training rows never saw, as OneHotEncoder would ignore it)
    y_shift, y_scale: float32 [F, k] regression targets are standardised per training
               fold as (y - shift) / scale; metrics undo it, so they are in original
               units. Zeros/ones (k = 1) for classification.
    """

    x: np.ndarray
    y: np.ndarray
    train_idx: np.ndarray
    w_train: np.ndarray
    val_idx: np.ndarray
    w_val: np.ndarray
    x_fill: np.ndarray
    x_shift: np.ndarray
    x_inv_scale: np.ndarray
    y_shift: np.ndarray
    y_scale: np.ndarray

    @property
    def n_folds(self) -> int:
        return int(self.train_idx.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_train(self) -> int:
        """Padded training rows per fold."""
        return int(self.train_idx.shape[1])

    @property
    def n_val(self) -> int:
        """Padded validation rows per fold."""
        return int(self.val_idx.shape[1])

    def nbytes(self) -> int:
        return int(sum(np.asarray(a).nbytes for a in self))

    # Materialised views of one fold, for tests and inspection (the programs gather).
    def fold_x(self, fold: int, part: str = "train", rows: np.ndarray | None = None
               ) -> np.ndarray:
        """[n, d] the fold's rows (padding included; ``rows``: only these positions of
        the fold's part), transformed as a program sees them."""
        idx = (self.train_idx if part == "train" else self.val_idx)[fold]
        x = self.x[idx if rows is None else idx[rows]]
        x = np.where(np.isnan(x), self.x_fill[fold], x)
        return (x - self.x_shift[fold]) * self.x_inv_scale[fold]

    def fold_y(self, fold: int, part: str = "train", standardise: bool = False,
               rows: np.ndarray | None = None) -> np.ndarray:
        """The fold's targets (padding included; ``rows`` as in ``fold_x``);
        ``standardise`` applies the fold's (shift, scale), as a regression program does."""
        idx = (self.train_idx if part == "train" else self.val_idx)[fold]
        y = self.y[idx if rows is None else idx[rows]]
        return (y - self.y_shift[fold]) / self.y_scale[fold] if standardise else y


def pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 of ``a`` with zeros up to ``n`` rows."""
    if a.shape[0] > n:
        raise ValueError(f"cannot pad {a.shape[0]} rows down to {n}")
    pad = [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return np.pad(a, pad)


def fold_stack(x: np.ndarray, y: np.ndarray,
               splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
               x_fill: np.ndarray | None = None, x_shift: np.ndarray | None = None,
               x_inv_scale: np.ndarray | None = None, y_shift: np.ndarray | None = None,
               y_scale: np.ndarray | None = None,
               train_weights: Sequence[np.ndarray] | None = None,
               n_train: int | None = None, n_val: int | None = None) -> FoldStack:
    """Folds over one table: ``splits`` are (train_idx, val_idx) per fold; the
    transforms are [F, d] / [F, k] (defaults: nothing filled, identity);
    ``train_weights`` [F] x [n_f] weigh each fold's training rows (class weights, in the
    order of its indices; default 1; validation rows weigh 1). ``n_train``/``n_val``
    force a padded length (at least the largest fold)."""
    x = np.ascontiguousarray(x, np.float32)
    y = _target_array(y)
    n_folds, d = len(splits), x.shape[1]
    k = y.shape[1] if y.ndim == 2 else 1
    n_train = n_train or max(len(tr) for tr, _ in splits)
    n_val = n_val or max(len(va) for _, va in splits)
    def part(indices: list[np.ndarray], n: int, weights) -> tuple[np.ndarray, np.ndarray]:
        idx = np.stack([pad_rows(np.asarray(i, np.int32), n) for i in indices])
        w = np.stack([pad_rows(np.ones(len(i), np.float32) if weights is None else
                               np.asarray(weights[f], np.float32), n)
                      for f, i in enumerate(indices)])
        return idx, w

    train_idx, w_train = part([tr for tr, _ in splits], n_train, train_weights)
    val_idx, w_val = part([va for _, va in splits], n_val, None)

    def per_fold(a: np.ndarray | None, width: int, value: float) -> np.ndarray:
        if a is None:
            return np.full((n_folds, width), value, np.float32)
        return np.asarray(a, np.float32).reshape(n_folds, width)

    return FoldStack(x, y, train_idx, w_train, val_idx, w_val,
                     per_fold(x_fill, d, 0.0), per_fold(x_shift, d, 0.0),
                     per_fold(x_inv_scale, d, 1.0), per_fold(y_shift, k, 0.0),
                     per_fold(y_scale, k, 1.0))


def stack_folds(
    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    n_train: int | None = None,
    n_val: int | None = None,
    y_shift: np.ndarray | None = None,
    y_scale: np.ndarray | None = None,
) -> FoldStack:
    """Folds given as already prepared per-fold arrays ``(x_train, y_train, x_val,
    y_val)`` (regression targets already standardised by ``y_shift``/``y_scale`` [F, k]).

    The arrays are concatenated into one table (each fold's rows its own), so this suits
    small data and tests; ``fold_stack`` is the one-copy form for real data."""
    xs, ys, splits, start = [], [], [], 0
    k = None
    for f, (x_tr, y_tr, x_va, y_va) in enumerate(folds):
        y_tr, y_va = _target_array(y_tr), _target_array(y_va)
        k = y_tr.shape[1] if y_tr.ndim == 2 else 1
        if y_shift is not None and y_tr.dtype == np.float32:  # back to original units
            shift = np.asarray(y_shift, np.float32)[f].reshape(1, k)
            scale = np.asarray(y_scale, np.float32)[f].reshape(1, k)
            y_tr, y_va = y_tr * scale + shift, y_va * scale + shift
        n_tr, n_va = len(x_tr), len(x_va)
        xs += [np.asarray(x_tr, np.float32), np.asarray(x_va, np.float32)]
        ys += [y_tr, y_va]
        splits.append((np.arange(start, start + n_tr), np.arange(start + n_tr,
                                                                start + n_tr + n_va)))
        start += n_tr + n_va
    return fold_stack(np.concatenate(xs), np.concatenate(ys), splits, y_shift=y_shift,
                      y_scale=y_scale, n_train=n_train, n_val=n_val)


def _target_array(y: np.ndarray) -> np.ndarray:
    """Class ids as int32, everything else (regression, multilabel) as float32 [n, k]."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) and y.ndim == 1:
        return y.astype(np.int32)
    y = y.astype(np.float32)
    return y[:, None] if y.ndim == 1 else y
