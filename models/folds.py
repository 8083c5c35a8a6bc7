"""FoldStack: K cross-validation folds padded to one shape.

Every fold's training and validation rows are padded to the same row count so the
folds stack into one array and a single compiled program trains them all with vmap.
Padded rows carry weight 0 and never influence a loss, gradient, normalisation
statistic or metric.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FoldStack(NamedTuple):
    """Arrays for F folds (a pytree; every leaf has a leading fold axis).

    x_train: float32 [F, n_train, d]   scaled features, padded rows are 0
    y_train: [F, n_train] int32 class ids (binary/multiclass),
             [F, n_train, k] float32 (regression: k targets, multilabel: k labels)
    w_train: float32 [F, n_train]      1 for a real row, 0 for padding
    x_val, y_val, w_val: the same for the validation rows.
    y_shift, y_scale: float32 [F, k] regression targets were standardised per training
             fold as (y - shift) / scale; metrics undo it so they are in the original
             units. Zeros/ones (k = 1) for classification.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    w_val: np.ndarray
    y_shift: np.ndarray
    y_scale: np.ndarray

    @property
    def n_folds(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def n_train(self) -> int:
        """Padded training rows per fold."""
        return int(self.x_train.shape[1])


def pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 of ``a`` with zeros up to ``n`` rows."""
    if a.shape[0] > n:
        raise ValueError(f"cannot pad {a.shape[0]} rows down to {n}")
    pad = [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return np.pad(a, pad)


def stack_folds(
    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    n_train: int | None = None,
    n_val: int | None = None,
    y_shift: np.ndarray | None = None,
    y_scale: np.ndarray | None = None,
) -> FoldStack:
    """Stack per-fold ``(x_train, y_train, x_val, y_val)`` into a padded FoldStack.

    ``n_train``/``n_val`` force a padded size (at least the largest fold); by default
    the largest fold sets it. ``y_shift``/``y_scale`` [F, k] describe how regression
    targets were standardised (default: not at all).
    """
    n_train = n_train or max(f[0].shape[0] for f in folds)
    n_val = n_val or max(f[2].shape[0] for f in folds)
    xs_t, ys_t, ws_t, xs_v, ys_v, ws_v = [], [], [], [], [], []
    for x_tr, y_tr, x_va, y_va in folds:
        xs_t.append(pad_rows(np.asarray(x_tr, np.float32), n_train))
        ys_t.append(pad_rows(_target_array(y_tr), n_train))
        ws_t.append(pad_rows(np.ones(len(x_tr), np.float32), n_train))
        xs_v.append(pad_rows(np.asarray(x_va, np.float32), n_val))
        ys_v.append(pad_rows(_target_array(y_va), n_val))
        ws_v.append(pad_rows(np.ones(len(x_va), np.float32), n_val))
    k = ys_t[0].shape[1] if ys_t[0].ndim == 2 else 1
    if y_shift is None:
        y_shift = np.zeros((len(folds), k), np.float32)
    if y_scale is None:
        y_scale = np.ones((len(folds), k), np.float32)
    return FoldStack(
        np.stack(xs_t), np.stack(ys_t), np.stack(ws_t),
        np.stack(xs_v), np.stack(ys_v), np.stack(ws_v),
        np.asarray(y_shift, np.float32), np.asarray(y_scale, np.float32),
    )


def _target_array(y: np.ndarray) -> np.ndarray:
    """Class ids as int32, everything else (regression, multilabel) as float32 [n, k]."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) and y.ndim == 1:
        return y.astype(np.int32)
    y = y.astype(np.float32)
    return y[:, None] if y.ndim == 1 else y
