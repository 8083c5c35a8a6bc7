"""tuner.cv: folds partition the data, scaling never sees validation rows."""

from __future__ import annotations

import numpy as np
import pytest

from models.folds import FoldStack
from tuner.inputs.cv import make_folds, make_full_fit
from tuner.inputs.data import from_arrays
from tuner.errors import DataError


def classification(n=103, d=4, seed=0, ratios=(0.6, 0.3, 0.1)):
    rng = np.random.default_rng(seed)
    X = rng.normal(3.0, 2.0, size=(n, d))
    X[:, -1] = 7.0  # a constant column must not produce NaN
    y = rng.choice(len(ratios), size=n, p=ratios)
    return from_arrays(X, y)


def regression(n=61, d=3, k=1, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=(d, k)) * 10 + 50 + rng.normal(size=(n, k))
    return from_arrays(X, y[:, 0] if k == 1 else y)


@pytest.mark.parametrize("folds, shuffle", [(5, True), (3, False), (4, True)])
def test_folds_partition_the_data(folds, shuffle):
    ds = classification()
    stack, splits = make_folds(ds, folds=folds, shuffle=shuffle, seed=3)
    assert isinstance(stack, FoldStack) and stack.n_folds == folds == len(splits)
    vals = np.concatenate([va for _, va in splits])
    assert sorted(vals.tolist()) == list(range(ds.n_samples))  # each row validates once
    for tr, va in splits:
        assert not set(tr) & set(va)
        assert len(tr) + len(va) == ds.n_samples


def test_padding_weights_sum_to_fold_sizes():
    ds = classification(n=103)
    stack, splits = make_folds(ds, folds=5)
    assert stack.train_idx.shape == (5, max(len(tr) for tr, _ in splits))
    assert stack.x.shape == (ds.n_samples, ds.n_features)  # one copy of the table
    for f, (tr, va) in enumerate(splits):
        assert stack.w_train[f].sum() == len(tr)
        assert stack.w_val[f].sum() == len(va)
        # real rows first (the fold's own rows), padding rows weigh 0
        assert np.all(stack.w_train[f, :len(tr)] == 1) and np.all(stack.w_train[f, len(tr):] == 0)
        np.testing.assert_array_equal(stack.train_idx[f, :len(tr)], tr)
        np.testing.assert_array_equal(stack.val_idx[f, :len(va)], va)


def test_scaler_fit_on_training_fold_only():
    ds = classification()
    stack, splits = make_folds(ds, folds=5)
    X = ds.X.astype(np.float64)
    for f, (tr, va) in enumerate(splits):
        x_tr, x_va = stack.fold_x(f, "train")[:len(tr)], stack.fold_x(f, "val")[:len(va)]
        assert np.all(np.isfinite(x_tr)) and np.all(np.isfinite(x_va))
        mean, std = X[tr].mean(0), X[tr].std(0)
        std[std == 0] = 1.0
        np.testing.assert_allclose(x_tr, (X[tr] - mean) / std, atol=1e-5)
        np.testing.assert_allclose(x_va, (X[va] - mean) / std, atol=1e-5)
        # training rows are standardised exactly; the constant column is 0, not NaN
        np.testing.assert_allclose(x_tr[:, :-1].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(x_tr[:, :-1].std(0), 1, atol=1e-5)
        assert np.all(x_tr[:, -1] == 0)


def test_changing_a_validation_row_leaves_training_arrays_unchanged():
    ds = classification()
    stack, splits = make_folds(ds, folds=5)
    _, va = splits[0]
    X = ds.X.copy()
    X[va[0]] = 1e6  # an outlier in fold 0's validation rows
    stack2, splits2 = make_folds(from_arrays(X, ds.y), folds=5)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(splits, splits2))
    for field in ("x_shift", "x_inv_scale", "x_fill", "train_idx", "val_idx"):
        np.testing.assert_array_equal(getattr(stack, field)[0], getattr(stack2, field)[0])
    np.testing.assert_array_equal(stack.fold_x(0), stack2.fold_x(0))
    np.testing.assert_array_equal(stack.fold_y(0), stack2.fold_y(0))
    # its own validation row changed, no other fold-0 validation row did
    changed = np.any(stack.fold_x(0, "val") != stack2.fold_x(0, "val"), axis=1)
    assert changed.tolist() == [True] + [False] * (len(changed) - 1)


def test_stratification_keeps_class_ratios():
    ds = classification(n=200, ratios=(0.7, 0.2, 0.1))
    counts = np.bincount(ds.y)
    stack, splits = make_folds(ds, folds=5, stratified=True)
    for f, (_, va) in enumerate(splits):
        fold_counts = np.bincount(ds.y[va], minlength=3)
        assert np.all(np.abs(fold_counts - counts / 5) <= 1)
        np.testing.assert_array_equal(stack.fold_y(f, "val")[:len(va)], ds.y[va])
    assert stack.y.dtype == np.int32


def test_shuffle_seed_changes_folds_and_is_reproducible():
    ds = classification()
    _, a = make_folds(ds, seed=0)
    _, b = make_folds(ds, seed=0)
    _, c = make_folds(ds, seed=1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    _, d = make_folds(ds, shuffle=False, stratified=False, folds=4)
    assert d[0][1].tolist() == list(range(len(d[0][1])))  # unshuffled KFold: contiguous


def test_too_few_samples_per_class():
    ds = from_arrays(np.arange(20.0).reshape(10, 2), [0] * 7 + [1] * 3)
    with pytest.raises(DataError, match=r"class 1 has 3 samples, fewer than the 5 folds"):
        make_folds(ds, folds=5)
    make_folds(ds, folds=5, stratified=False)


@pytest.mark.parametrize("k", [1, 2])
def test_regression_targets_standardised_per_training_fold(k):
    ds = regression(k=k)
    stack, splits = make_folds(ds, folds=4)
    assert stack.y.shape[1] == k and stack.y_shift.shape == stack.y_scale.shape == (4, k)
    y = ds.y.astype(np.float64).reshape(ds.n_samples, k)
    for f, (tr, va) in enumerate(splits):
        np.testing.assert_allclose(stack.y_shift[f], y[tr].mean(0), rtol=1e-5)
        np.testing.assert_allclose(stack.y_scale[f], y[tr].std(0), rtol=1e-5)
        standard = stack.fold_y(f, "train", standardise=True)[:len(tr)]
        np.testing.assert_allclose(standard.mean(0), 0, atol=1e-5)
        # the table keeps the original targets
        np.testing.assert_allclose(stack.fold_y(f, "val")[:len(va)], y[va], rtol=1e-5)


def test_classification_y_shift_scale_are_identity():
    stack, _ = make_folds(classification(), folds=3)
    assert stack.y_shift.shape == (3, 1)
    assert np.all(stack.y_shift == 0) and np.all(stack.y_scale == 1)


def test_multilabel_uses_plain_kfold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 3))
    ds = from_arrays(rng.normal(size=(40, 2)), y)
    stack, splits = make_folds(ds, folds=4, stratified=True)  # stratified is ignored
    assert stack.y.shape == (40, 3) and stack.y.dtype == np.float32 and stack.n_train == 30
    assert len(splits) == 4


def test_constant_regression_target_does_not_divide_by_zero():
    ds = from_arrays(np.arange(20.0).reshape(10, 2), np.full(10, 3.0), task="regression")
    stack, _ = make_folds(ds, folds=2)
    assert np.all(stack.y_scale == 1) and np.all(stack.fold_y(0, standardise=True) == 0)


def test_full_fit():
    ds = regression()
    fit = make_full_fit(ds)
    s = fit.stack
    assert s.n_folds == 1 and s.n_train == ds.n_samples
    np.testing.assert_array_equal(s.train_idx, s.val_idx)
    assert s.w_train.sum() == ds.n_samples
    np.testing.assert_allclose(s.fold_x(0).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(fit.transform_x(ds.X), s.fold_x(0), atol=1e-5)
    np.testing.assert_allclose(fit.y_shift, [ds.y.mean()], rtol=1e-5)
    standard = s.fold_y(0, standardise=True)
    np.testing.assert_allclose(fit.restore_y(standard[:, 0]), ds.y, rtol=1e-5)
    np.testing.assert_allclose(fit.restore_y(standard), ds.y[:, None], rtol=1e-5)
    assert np.all(s.y_shift == fit.y_shift) and np.all(s.y_scale == fit.y_scale)


def test_full_fit_classification():
    ds = classification()
    fit = make_full_fit(ds)
    np.testing.assert_array_equal(fit.stack.fold_y(0), ds.y)
    assert np.all(np.isfinite(fit.transform_x(np.full((2, ds.n_features), 5.0))))
