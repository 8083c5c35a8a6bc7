"""Validation metrics and the training loss, in pure JAX (jit- and vmap-compatible).

Shapes for one lane (vmap adds leading axes; n rows may include padding):

    logits   regression [n, k] predictions in standardised units
             binary     [n, 1] logit of class 1
             multiclass [n, C] logits
             multilabel [n, k] logits, one sigmoid per label
    y        binary/multiclass int [n] class ids; regression float [n, k]
             standardised targets; multilabel float 0/1 [n, k]
    w        float [n] sample weights: 1 for a real row, 0 for padding
    y_shift, y_scale  float [k]: regression metrics are in original units,
             value = standardised * y_scale + y_shift (ignored for classification)

Rows with weight 0 have no effect on any value, whatever their logits or labels.
Every metric matches scikit-learn called with ``sample_weight`` on the rows with
weight > 0, with these deliberate differences:

* roc_auc ranks log-probabilities (the logit for binary and multilabel, log_softmax
  for multiclass). The order is that of the probabilities, but confident predictions
  do not collapse into spurious ties at p = 0 or 1. Ties count 1/2, as in sklearn.
  A class (multiclass) or label (multilabel) without both positive and negative real
  rows is skipped (sklearn raises); with none left, roc_auc is NaN.
* log_loss is computed from logits, so it is finite for any finite logits (sklearn
  clips the probabilities). For multilabel it is the weighted mean over rows of the
  mean over labels of the binary cross-entropy.
* With no real rows at all (sum(w) == 0) every metric is NaN.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """One validation metric: which tasks it scores and which way is better."""

    name: str
    greater_is_better: bool
    classification: bool  # binary/multiclass/multilabel, else regression


# The one table of metrics; everything below is derived from it.
METRIC_TABLE: tuple[MetricInfo, ...] = (
    MetricInfo("accuracy", True, True),
    MetricInfo("f1_macro", True, True),
    MetricInfo("roc_auc", True, True),
    MetricInfo("log_loss", False, True),
    MetricInfo("mse", False, False),
    MetricInfo("rmse", False, False),
    MetricInfo("mae", False, False),
    MetricInfo("r2", True, False),
)
METRICS: dict[str, MetricInfo] = {m.name: m for m in METRIC_TABLE}
CLASSIFICATION_METRICS = tuple(m.name for m in METRIC_TABLE if m.classification)
REGRESSION_METRICS = tuple(m.name for m in METRIC_TABLE if not m.classification)
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": CLASSIFICATION_METRICS,
    "multiclass": CLASSIFICATION_METRICS,
    "multilabel": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
}
GREATER_IS_BETTER: dict[str, bool] = {m.name: m.greater_is_better for m in METRIC_TABLE}
DEFAULT_METRIC: dict[str, str] = {"binary": "accuracy", "multiclass": "accuracy",
                                  "multilabel": "accuracy", "regression": "r2"}


def compute_metrics(task: str, logits, y, w, y_shift, y_scale) -> dict[str, jax.Array]:
    """All metrics of ``METRICS_BY_TASK[task]`` as scalars (``task`` is static).

    ``y_shift`` cancels in every regression metric (each depends on differences
    only), so it is accepted for a uniform signature and not used.
    """
    logits, y, w = _clean(task, logits, y, w)
    if task == "regression":
        dt = logits.dtype
        out = _regression_metrics(logits, y, w, jnp.asarray(y_scale, dt))
    elif task in ("binary", "multiclass", "multilabel"):
        out = _classification_metrics(task, logits, y, w)
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {list(METRICS_BY_TASK)}")
    total = jnp.sum(w)
    return {name: jnp.where(total > 0, v, jnp.nan) for name, v in out.items()}


def loss_from_logits(task: str, logits, y, w) -> jax.Array:
    """Weighted mean training loss in standardised units (a scalar).

    Per row: regression = squared error averaged over the k outputs (no 1/2);
    binary = binary cross-entropy; multiclass = cross-entropy; multilabel = binary
    cross-entropy averaged over the k labels. Rows are weighted by ``w`` and the sum
    divided by max(sum(w), 1), so an all-padding batch gives 0 rather than NaN.
    """
    logits, y, w = _clean(task, logits, y, w)
    if task == "regression":
        per_row = jnp.mean((logits - y) ** 2, axis=-1)
    else:
        per_row = _cross_entropy(task, logits, y)
    return jnp.sum(w * per_row) / jnp.maximum(jnp.sum(w), 1.0)


def _clean(task: str, logits, y, w):
    """Cast to one float dtype and zero the logits and labels of padding rows.

    Zeroing (rather than multiplying by w) is what makes padding harmless: 0 * inf
    from a huge padded logit would otherwise turn a sum into NaN.
    """
    logits = jnp.asarray(logits)
    dt = jnp.promote_types(logits.dtype, jnp.float32)
    w = jnp.asarray(w, dt)
    real = w > 0
    logits = jnp.where(real[:, None], logits.astype(dt), 0)
    if task in ("binary", "multiclass"):
        y = jnp.where(real, jnp.asarray(y, jnp.int32), 0)
    else:
        y = jnp.where(real[:, None], jnp.asarray(y, dt), 0)
    return logits, y, w


def _cross_entropy(task: str, logits, y) -> jax.Array:
    """Per-row cross-entropy [n] from logits, via log_sigmoid / log_softmax."""
    if task == "binary":
        z = logits[:, 0]
        return -jnp.where(y == 1, jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z))
    if task == "multiclass":
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    # multilabel: y * log sigmoid(z) + (1 - y) * log sigmoid(-z), averaged over labels
    bce = -(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))
    return jnp.mean(bce, axis=-1)


def _weighted_mean(values, w) -> jax.Array:
    """Weighted mean over the row axis 0 (values [n] or [n, k])."""
    w = w.reshape(w.shape + (1,) * (values.ndim - 1))
    return jnp.sum(w * values, axis=0) / jnp.sum(w)


def _regression_metrics(logits, y, w, y_scale) -> dict[str, jax.Array]:
    # Differences are taken in standardised units and then scaled: the shift cancels
    # exactly, which avoids float32 cancellation when targets have a large offset.
    err = (logits - y) * y_scale
    mse_k = _weighted_mean(err**2, w)
    mae_k = _weighted_mean(jnp.abs(err), w)
    centred = (y - _weighted_mean(y, w)) * y_scale
    num = jnp.sum(w[:, None] * err**2, axis=0)
    den = jnp.sum(w[:, None] * centred**2, axis=0)
    # sklearn's force_finite: constant targets score 1 if predicted exactly, else 0.
    r2_k = jnp.where(den > 0, 1 - num / jnp.where(den > 0, den, 1),
                     jnp.where(num == 0, 1.0, 0.0))
    return {
        "mse": jnp.mean(mse_k),
        # sklearn's root_mean_squared_error averages the per-output RMSEs
        "rmse": jnp.mean(jnp.sqrt(mse_k)),
        "mae": jnp.mean(mae_k),
        "r2": jnp.mean(r2_k),
    }


def _classification_metrics(task: str, logits, y, w) -> dict[str, jax.Array]:
    real = w > 0
    if task == "multilabel":
        pred = logits > 0
        truth = y > 0.5
        accuracy = _weighted_mean(jnp.all(pred == truth, axis=-1), w)
        # sklearn's multilabel macro F1 averages over all k labels
        f1 = jnp.mean(_f1(pred, truth, w))
        scores, positives = logits, truth
    else:
        n_classes = 2 if task == "binary" else logits.shape[-1]
        classes = jnp.arange(n_classes)
        pred_id = (logits[:, 0] > 0).astype(jnp.int32) if task == "binary" \
            else jnp.argmax(logits, axis=-1)
        accuracy = _weighted_mean(pred_id == y, w)
        pred = pred_id[:, None] == classes
        truth = y[:, None] == classes
        # sklearn's default label set: classes seen in y_true or y_pred of real rows
        seen = jnp.any(real[:, None] & (pred | truth), axis=0)
        f1 = jnp.sum(jnp.where(seen, _f1(pred, truth, w), 0)) / jnp.sum(seen)
        if task == "binary":
            scores, positives = logits, truth[:, 1:]
        else:
            scores, positives = jax.nn.log_softmax(logits, axis=-1), truth
    auc, usable = jax.vmap(_binary_auc, in_axes=(1, 1, None))(scores, positives, w)
    roc_auc = jnp.sum(jnp.where(usable, auc, 0)) / jnp.sum(usable)  # 0/0 = NaN if none
    # A diverged model (NaN logits) must not get a rank-based score.
    roc_auc = jnp.where(jnp.any(real[:, None] & jnp.isnan(scores)), jnp.nan, roc_auc)
    log_loss = _weighted_mean(_cross_entropy(task, logits, y), w)
    return {"accuracy": accuracy, "f1_macro": f1, "roc_auc": roc_auc, "log_loss": log_loss}


def _f1(pred, truth, w) -> jax.Array:
    """Per-column weighted F1 [m] of boolean [n, m] predictions; 0 where undefined."""
    wc = w[:, None]
    tp = jnp.sum(wc * (pred & truth), axis=0)
    denom = jnp.sum(wc * pred, axis=0) + jnp.sum(wc * truth, axis=0)
    return jnp.where(denom > 0, 2 * tp / jnp.where(denom > 0, denom, 1), 0)


def _binary_auc(score, positive, w) -> tuple[jax.Array, jax.Array]:
    """Weighted ROC AUC of scores [n] for boolean labels [n]; also whether defined.

    AUC = P(score_pos > score_neg) + P(tie) / 2 over weighted pairs. After sorting,
    each positive beats the negative weight below its tie group and ties with the
    negative weight inside it; both come from a cumulative sum indexed at the tie
    group's bounds (searchsorted), so the cost is O(n log n). Padding rows have zero
    positive and negative weight and so add nothing wherever they sort.
    """
    order = jnp.argsort(score)
    s = score[order]
    w_pos = jnp.where(positive, w, 0)[order]
    w_neg = jnp.where(positive, 0, w)[order]
    cum_neg = jnp.concatenate([jnp.zeros(1, w.dtype), jnp.cumsum(w_neg)])
    below = cum_neg[jnp.searchsorted(s, s, side="left")]
    below_or_tied = cum_neg[jnp.searchsorted(s, s, side="right")]
    area = jnp.sum(w_pos * (below + below_or_tied)) / 2
    n_pos, n_neg = jnp.sum(w_pos), cum_neg[-1]
    usable = (n_pos > 0) & (n_neg > 0)
    return area / jnp.where(usable, n_pos * n_neg, 1), usable
