"""models.metrics against scikit-learn, padding invariance, jit/vmap and float64."""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_softmax, softmax
from sklearn import metrics as skm

from models.metrics import (
    GREATER_IS_BETTER,
    METRICS_BY_TASK,
    compute_metrics,
    loss_from_logits,
)

# One jitted function for the whole file: jax caches one compilation per
# (task, shapes, dtypes), and the cases below share a handful of shapes.
METRICS = jax.jit(compute_metrics, static_argnums=0)
N_ROWS = 64  # real + padding rows in every sklearn case
K, C = 3, 4  # outputs/labels and classes, shared so that cases share compilations
WILD = np.array([3e38, -3e38, 1e30, -1e30, 1e4, -1e4, 0.0])  # finite in float32


def make_real(task, n, rng, *, k=K, n_classes=C, ties=False, absent=None,
              weighted=False, one_class=False):
    """Real rows: (logits, y, w) in numpy float64 / int32."""
    width = {"binary": 1, "multiclass": n_classes}.get(task, k)
    if ties and task == "multiclass":
        # Repeated logit rows: exact ties of every class probability.
        logits = rng.normal(size=(4, width))[rng.integers(0, 4, n)]
    elif ties:
        # Few distinct values, including ones whose float32 probabilities saturate
        # to exactly 0 or 1 (but sklearn's float64 log_loss does not clip them).
        logits = rng.choice([-25.0, -20.0, -0.5, 0.0, 0.5, 20.0, 25.0], size=(n, width))
    else:
        logits = rng.normal(scale=2.0, size=(n, width))
    if task == "binary":
        y = np.full(n, 1) if one_class else rng.integers(0, 2, n)
    elif task == "multiclass":
        labels = [c for c in range(n_classes) if c != absent]
        y = rng.choice(labels, n)
        if absent is not None:
            logits[:, absent] -= 3.0  # rarely predicted, but it may be
    elif task == "multilabel":
        y = (rng.random((n, k)) < 0.4).astype(np.float64)
        y[:, 0] = 1.0  # one label with no negatives: roc_auc must skip it
    else:
        y = rng.normal(size=(n, k))
        logits = y + rng.normal(scale=0.7, size=(n, k))
    w = rng.uniform(0.2, 3.0, n) if weighted else np.ones(n)
    return logits, y.astype(np.int32 if task in ("binary", "multiclass") else np.float64), w


def add_padding(task, logits, y, w, n_total, rng, n_classes=C):
    """Append weight-0 rows with wild logits and random labels, then shuffle."""
    n_pad = n_total - len(w)
    pad_logits = rng.choice(WILD, size=(n_pad,) + logits.shape[1:])
    if task == "binary":
        pad_y = rng.integers(0, 2, n_pad)
    elif task == "multiclass":
        pad_y = rng.integers(0, n_classes, n_pad)
    elif task == "multilabel":
        pad_y = rng.integers(0, 2, (n_pad,) + y.shape[1:])
    else:
        pad_y = rng.choice(WILD, size=(n_pad,) + y.shape[1:])
    perm = rng.permutation(n_total)
    cat = lambda a, b: np.concatenate([a, b.astype(a.dtype)])[perm]  # noqa: E731
    return cat(logits, pad_logits), cat(y, pad_y), cat(w, np.zeros(n_pad))


def sklearn_metrics(task, logits, y, w, shift, scale):
    """Reference values from sklearn on the real rows (float64)."""
    real = w > 0
    z, y, w = logits[real], y[real], w[real]
    if task == "regression":
        pred, true = z * scale + shift, y * scale + shift
        kw = dict(sample_weight=w, multioutput="uniform_average")
        return {
            "mse": skm.mean_squared_error(true, pred, **kw),
            "rmse": skm.root_mean_squared_error(true, pred, **kw),
            "mae": skm.mean_absolute_error(true, pred, **kw),
            "r2": skm.r2_score(true, pred, **kw),
        }
    if task == "binary":
        pred = (z[:, 0] > 0).astype(int)
        usable = len(set(y)) == 2
        auc = skm.roc_auc_score(y, z[:, 0], sample_weight=w) if usable else np.nan
        loss = skm.log_loss(y, y_proba=expit(z[:, 0]), sample_weight=w, labels=[0, 1])
    elif task == "multiclass":
        n_classes = z.shape[1]
        proba = softmax(z, axis=1)
        pred = z.argmax(axis=1)
        if len(set(y)) == n_classes:
            auc = skm.roc_auc_score(y, proba, sample_weight=w, multi_class="ovr",
                                    average="macro", labels=np.arange(n_classes))
        else:  # sklearn raises; the contract is the mean over classes it can score
            auc = np.mean([skm.roc_auc_score(y == c, proba[:, c], sample_weight=w)
                           for c in range(n_classes) if 0 < np.sum(y == c) < len(y)])
        loss = skm.log_loss(y, y_proba=proba, sample_weight=w,
                            labels=np.arange(n_classes))
    else:
        pred = (z > 0).astype(int)
        both = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
        auc = (skm.roc_auc_score(y[:, both], z[:, both], sample_weight=w, average="macro")
               if both else np.nan)
        loss = np.mean([skm.log_loss(y[:, j], y_proba=expit(z[:, j]), sample_weight=w,
                                     labels=[0, 1]) for j in range(y.shape[1])])
    return {
        "accuracy": skm.accuracy_score(y, pred, sample_weight=w),
        "f1_macro": skm.f1_score(y, pred, average="macro", zero_division=0, sample_weight=w),
        "roc_auc": auc,
        "log_loss": loss,
    }


def regression_units(k, rng):
    """y_shift, y_scale with a large offset, as after standardising real targets."""
    return rng.normal(scale=50.0, size=k) + 1000.0, rng.uniform(0.5, 20.0, k)


def units(task, k, rng):
    # Classification folds carry zeros/ones of length 1 (see models.folds).
    return regression_units(k, rng) if task == "regression" else (np.zeros(1), np.ones(1))


def as_jax_inputs(task, logits, y, w):
    """float32 logits/weights, int32 class ids or float32 targets (numpy)."""
    y = np.asarray(y, np.int32 if task in ("binary", "multiclass") else np.float32)
    return np.asarray(logits, np.float32), y, np.asarray(w, np.float32)


def pad_zeros(task, logits, y, w, n_total=N_ROWS):
    """Append plain zero rows of weight 0 (reuses the compilations of N_ROWS rows)."""
    n_pad = n_total - len(w)
    logits = np.concatenate([logits, np.zeros((n_pad,) + logits.shape[1:])])
    y = np.concatenate([y, np.zeros((n_pad,) + np.shape(y)[1:], np.asarray(y).dtype)])
    return as_jax_inputs(task, logits, y, np.concatenate([w, np.zeros(n_pad)]))


LOSS_AND_GRAD = jax.jit(jax.value_and_grad(loss_from_logits, argnums=1), static_argnums=0)


CASES = [
    # id, task, real rows, options
    ("binary", "binary", 50, {}),
    ("binary-weighted", "binary", 40, {"weighted": True}),
    ("binary-ties", "binary", 57, {"ties": True}),
    ("binary-one-class", "binary", 20, {"one_class": True}),
    ("binary-no-padding", "binary", N_ROWS, {}),
    ("multiclass", "multiclass", 50, {}),
    ("multiclass-weighted-ties", "multiclass", 45, {"ties": True, "weighted": True}),
    # Class 3 is never true but is predicted (so it is in f1's label set); class 1
    # is neither true nor predicted. Padding rows may carry either label.
    ("multiclass-absent-class", "multiclass", 40, {"absent": 3}),
    ("multiclass-absent-ties", "multiclass", 30, {"absent": 1, "ties": True}),
    ("multilabel", "multilabel", 50, {}),
    ("multilabel-weighted-ties", "multilabel", 44, {"ties": True, "weighted": True}),
    ("regression-k1", "regression", 50, {"k": 1}),
    ("regression-k3-weighted", "regression", 40, {"weighted": True}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_sklearn(case):
    name, task, n_real, opts = case
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    logits, y, w = add_padding(task, *make_real(task, n_real, rng, **opts), N_ROWS, rng)
    logits, y, w = as_jax_inputs(task, logits, y, w)
    shift, scale = (np.float32(a) for a in units(task, logits.shape[1], rng))
    got = METRICS(task, logits, y, w, shift, scale)
    # sklearn sees the same float32 values, upcast.
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    y64 = y if task in ("binary", "multiclass") else f64(y)
    want = sklearn_metrics(task, f64(logits), y64, f64(w), f64(shift), f64(scale))
    assert set(got) == set(METRICS_BY_TASK[task])
    for metric in METRICS_BY_TASK[task]:
        assert got[metric].shape == () and got[metric].dtype == jnp.float32
        np.testing.assert_allclose(got[metric], want[metric], rtol=2e-5, atol=2e-6,
                                   equal_nan=True, err_msg=metric)


def test_roc_auc_ties_count_half():
    # Every positive ties every negative: AUC is exactly 1/2.
    logits, y = np.zeros((6, 1)), np.array([0, 1, 0, 1, 1, 0])
    got = METRICS("binary", *pad_zeros("binary", logits, y, np.ones(6)), *units("binary", 1, None))
    assert float(got["roc_auc"]) == 0.5


@pytest.mark.parametrize("task", list(METRICS_BY_TASK))
def test_float64(task):
    rng = np.random.default_rng(7)
    logits, y, w = make_real(task, 30, rng, ties=task != "regression", weighted=True)
    logits, y, w = add_padding(task, logits, y, w, 40, rng)
    logits = np.where(np.abs(logits) > 1e5, np.sign(logits) * 1e300, logits)
    shift, scale = units(task, logits.shape[1], rng)
    with jax.enable_x64(True):
        got = METRICS(task, jnp.asarray(logits), y, jnp.asarray(w), shift, scale)
        got = {m: (v.dtype, float(v)) for m, v in got.items()}
    want = sklearn_metrics(task, logits, y, w, shift, scale)
    for metric, (dtype, value) in got.items():
        assert dtype == jnp.float64, metric
        # sklearn's log_loss takes log(1 - p) of p = expit(25), which loses ~1e-7.
        rtol = 1e-6 if metric == "log_loss" else 1e-10
        np.testing.assert_allclose(value, want[metric], rtol=rtol, atol=1e-12,
                                   equal_nan=True, err_msg=metric)


def padded_pair(task, seed, n_real):
    """The same real rows twice: first with zero padding, then shuffled among wild
    padding rows (huge logits, random labels)."""
    rng = np.random.default_rng(seed)
    real = make_real(task, n_real, rng, ties=bool(seed % 2), weighted=bool(seed % 3))
    wild = as_jax_inputs(task, *add_padding(task, *real, N_ROWS, rng))
    return pad_zeros(task, *real), wild


@settings(max_examples=12, deadline=None)
@given(task=st.sampled_from(list(METRICS_BY_TASK)), seed=st.integers(0, 2**31),
       n_real=st.integers(1, N_ROWS - 1))
def test_padding_has_no_effect(task, seed, n_real):
    tame, wild = padded_pair(task, seed, n_real)
    shift, scale = units(task, K, np.random.default_rng(seed))
    a, b = METRICS(task, *tame, shift, scale), METRICS(task, *wild, shift, scale)
    for metric in a:
        assert np.isfinite(b[metric]) or metric == "roc_auc", metric
        np.testing.assert_allclose(a[metric], b[metric], rtol=1e-5, atol=1e-6,
                                   equal_nan=True, err_msg=metric)
    (loss_a, _), (loss_b, grad_b) = LOSS_AND_GRAD(task, *tame), LOSS_AND_GRAD(task, *wild)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert np.all(grad_b[wild[2] == 0] == 0) and np.all(np.isfinite(grad_b))


@pytest.mark.parametrize("task", list(METRICS_BY_TASK))
def test_vmap_and_jit(task):
    lanes = [padded_pair(task, seed, n_real)[1] for seed, n_real in ((1, 5), (2, 20), (3, 63))]
    logits, y, w = (np.stack(a) for a in zip(*lanes))
    shift, scale = (np.stack([a, a + 1]).astype(np.float32)
                    for a in units(task, K, np.random.default_rng(0)))
    batched = jax.jit(jax.vmap(functools.partial(compute_metrics, task)))(
        logits[:2], y[:2], w[:2], shift, scale)
    losses = jax.jit(jax.vmap(functools.partial(loss_from_logits, task)))(logits, y, w)
    for i in range(2):
        one = METRICS(task, logits[i], y[i], w[i], shift[i], scale[i])
        for metric in one:
            assert batched[metric].shape == (2,)
            np.testing.assert_allclose(batched[metric][i], one[metric], rtol=1e-6,
                                       atol=1e-7, equal_nan=True, err_msg=metric)
    for i in range(3):
        np.testing.assert_allclose(losses[i], LOSS_AND_GRAD(task, logits[i], y[i], w[i])[0],
                                   rtol=1e-6)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_log_loss_finite_for_huge_logits(task):
    big = 1e4
    if task == "binary":
        logits, y = np.array([[big], [-big], [big]]), np.array([1, 1, 0])
        want = 2 * big / 3  # two confident misses of 1e4 nats, one confident hit
    elif task == "multiclass":
        logits, y = np.array([[big, -big, 0, 0], [big, -big, 0, 0]]), np.array([0, 1])
        want = 2 * big / 2
    else:
        logits = np.array([[big, -big, big], [big, -big, -big]])
        y = np.array([[1, 0, 1], [0, 0, 1]])
        want = (0 + 2 * big / 3) / 2
    inputs = pad_zeros(task, logits, y, np.ones(len(y)))
    got = METRICS(task, *inputs, *units(task, K, None))
    assert all(np.isfinite(v) for v in got.values())
    np.testing.assert_allclose(got["log_loss"], want, rtol=1e-6)
    loss, grad = LOSS_AND_GRAD(task, *inputs)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("task", list(METRICS_BY_TASK))
def test_loss_from_logits(task):
    rng = np.random.default_rng(11)
    n = 10
    logits, y, w = make_real(task, n, rng, weighted=True)
    if task == "regression":
        per_row = np.mean((logits - y) ** 2, axis=1)  # mean over outputs, no 1/2
    elif task == "multiclass":
        per_row = -log_softmax(logits, axis=1)[np.arange(n), y]
    else:
        t = y[:, None] if task == "binary" else y
        per_row = -np.mean(t * np.log(expit(logits)) + (1 - t) * np.log(expit(-logits)),
                           axis=1)
    want = np.sum(w * per_row) / np.sum(w)
    logits, y, w = as_jax_inputs(task, *add_padding(task, logits, y, w, N_ROWS, rng))
    loss, grad = LOSS_AND_GRAD(task, logits, y, w)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert np.all(grad[w == 0] == 0) and np.all(np.isfinite(grad))
    # An all-padding batch has loss 0 (not NaN) and no gradient.
    loss0, grad0 = LOSS_AND_GRAD(task, logits, y, 0 * w)
    assert float(loss0) == 0.0 and np.all(grad0 == 0)


def test_no_real_rows_gives_nan():
    inputs = pad_zeros("multiclass", np.ones((1, C)), np.zeros(1, np.int32), np.zeros(1))
    got = METRICS("multiclass", *inputs, *units("multiclass", C, None))
    assert all(np.isnan(v) for v in got.values())


def test_nan_logits_give_nan_auc():
    logits, y = np.array([[0.3], [np.nan], [-1.0], [2.0]]), np.array([0, 1, 1, 0])
    got = METRICS("binary", *pad_zeros("binary", logits, y, np.ones(4)),
                  *units("binary", 1, None))
    assert np.isnan(got["roc_auc"]) and np.isnan(got["log_loss"])


def test_tables():
    assert set(METRICS_BY_TASK) == {"binary", "multiclass", "multilabel", "regression"}
    assert set(GREATER_IS_BETTER) == {m for ms in METRICS_BY_TASK.values() for m in ms}
    assert [m for m, up in GREATER_IS_BETTER.items() if up] == [
        "accuracy", "f1_macro", "roc_auc", "r2"]
    with pytest.raises(ValueError, match="unknown task"):
        compute_metrics("ranking", np.zeros((2, 1)), np.zeros(2), np.ones(2),
                        np.zeros(1), np.ones(1))
