"""Train P trials x F folds in one program: the pure training functions.

``fit_segment(sig, hp, folds, seed, state, fresh, start_epoch, n_epochs)`` runs
``vmap(trials) . vmap(folds) . loop(epochs) . scan(minibatches)`` for a segment of
epochs from a given state and returns the new state, so training can stop (a pruned
trial) and go on (a promoted one). ``models.programs.ProgramCache`` compiles it once per
(Signature, array shapes). Numeric hyperparameters, the start epoch and the segment
length are arrays and never trigger a recompilation.

Per lane, per epoch: the real training rows are reshuffled (padding rows sort last),
split into minibatches of ``sig.batch_size``; batches made only of padding, epochs
past the lane's own ``epochs`` and steps after a divergence leave the lane unchanged.
At the end of each epoch the validation rows are scored.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from models import network, optim
from models.folds import FoldStack
from models.hparams import INT_FIELDS, LaneHparams, Signature
from models.metrics import METRICS_BY_TASK, compute_metrics, loss_from_logits


# Epochs one call of a training program can train: the length of its (static) curve
# buffers. Longer training runs as several segments of one program, so the epoch count
# never shapes a program (a sweep over epochs compiles nothing more).
SEGMENT_EPOCHS = 64


class SegmentResult(NamedTuple):
    """Outputs of ``fit_segment``; P trials, F folds, S = ``SEGMENT_EPOCHS``. Only the
    first ``n_epochs`` entries of the curves are written.

    state:       the lanes' training state after the segment, flat (``state_leaves``)
    train_loss:  [P, F, S] mean minibatch loss of each epoch (data loss + penalty)
    val_loss:    [P, F, S] validation data loss
    val_metrics: {name: [P, F, S]} validation metrics (``sig.metrics``, default all)
    """

    state: tuple
    train_loss: jax.Array
    val_loss: jax.Array
    val_metrics: dict


class FitResult(NamedTuple):
    """A whole training from scratch (``ProgramCache.fit``); E = the largest epochs.

    train_loss, val_loss: [P, F, E]; val_metrics: {name: [P, F, E]}
    diverged_epoch: [P, F] int32, first epoch with a non-finite loss, -1 if none
    params, norm_state: trained parameters, leaves with leading [P, F]
    """

    train_loss: jax.Array
    val_loss: jax.Array
    val_metrics: dict
    diverged_epoch: jax.Array
    params: dict
    norm_state: dict


class TrainState(NamedTuple):
    """Lanes mid-training: everything a segment needs to go on where the last ended.
    Every leaf has leading axes [P, F]. (Dropout keys and minibatch orders are derived
    from (seed, trial, fold, epoch), so they need no state.)"""

    params: dict            # {"hidden": [...], "out": {...}}, see models.network
    norm_state: dict        # batch-norm running statistics ({} without batch norm)
    opt_state: tuple        # the optax state of the lane's optimizer (models.optim)
    steps: jax.Array        # [P, F] float32: updates taken so far (schedules read it)
    diverged_at: jax.Array  # [P, F] int32: first epoch with a non-finite loss, -1 if none


def lane_key(seed, trial, fold):
    """A lane's key comes from (seed, trial, fold), never from its slot in the batch."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), trial), fold)


def _where_tree(cond, new, old):
    """Per-lane select; ``cond`` [P, F] broadcasts over each leaf's trailing axes."""
    def pick(a, b):
        c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
        return jnp.where(c, a, b)
    return jax.tree_util.tree_map(pick, new, old)


def _lanes(fn, trial_axes, fold_axes):
    """vmap ``fn`` over folds (inner) and trials (outer)."""
    return jax.vmap(jax.vmap(fn, in_axes=fold_axes), in_axes=trial_axes)


def _init_lane(sig: Signature, hp: LaneHparams, fold_id, seed) -> TrainState:
    key = lane_key(seed, hp.trial, fold_id)
    params = network.init_params(sig, hp, jax.random.fold_in(key, 0))
    opt_state = optim.make_optimizer(sig, hp).init(params)
    return TrainState(params, network.init_norm_state(sig), opt_state,
                      jnp.zeros((), jnp.float32), jnp.full((), -1, jnp.int32))


def _dropout_key(sig: Signature, hp: LaneHparams, fold_id, seed):
    return jax.random.fold_in(lane_key(seed, hp.trial, fold_id), 1)


def _step_lane(sig: Signature, hp: LaneHparams, params, norm_state, opt_states, step,
               dropout_key, xb, yb, wb, steps_per_epoch, total_steps):
    """One minibatch update of one lane; returns the new state and the batch loss."""
    def loss_fn(p, ns):
        logits, new_ns = network.forward(sig, p, ns, hp, xb, wb, train=True, key=dropout_key)
        return loss_from_logits(sig.task, logits, yb, wb) + network.penalty(sig, p, hp), new_ns

    (loss, new_ns), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, norm_state)
    lr = optim.learning_rate_at(sig, hp, step, steps_per_epoch, total_steps)
    new_params, new_opt = optim.optimizer_step(optim.make_optimizer(sig, hp), opt_states,
                                               grads, params, lr)
    return new_params, new_ns, new_opt, loss


def _eval_logits(sig: Signature, hp: LaneHparams, params, norm_state, x):
    logits, _ = network.forward(sig, params, norm_state, hp, x)
    return logits


def _score_lane(sig: Signature, logits, y, w, y_shift, y_scale):
    metrics = compute_metrics(sig.task, logits, y, w, y_shift, y_scale)
    if sig.metrics:  # metrics left out are dead code to XLA and never computed
        metrics = {name: metrics[name] for name in sig.metrics}
    return loss_from_logits(sig.task, logits, y, w), metrics


# Evaluation scores the validation rows in chunks, so that no array of size rows x lanes
# x width exists: a chunk's hidden activations hold about EVAL_CHUNK_FLOATS floats.
EVAL_CHUNK_FLOATS = 1 << 23


def eval_chunk_rows(n_lanes: int, n_folds: int, width: int, n_val: int) -> int:
    """Validation rows per chunk (a power of two, at most the padded rows)."""
    rows = max(64, EVAL_CHUNK_FLOATS // max(1, n_lanes * n_folds * width))
    rows = 1 << (rows.bit_length() - 1)
    return max(1, min(rows, n_val))


def _features(folds: FoldStack, rows):
    """Rows [F, n] of the table as fold f's program sees them: [F, n, d]."""
    x = folds.x[rows]
    x = jnp.where(jnp.isnan(x), folds.x_fill[:, None, :], x)
    return (x - folds.x_shift[:, None, :]) * folds.x_inv_scale[:, None, :]


def _targets(sig: Signature, folds: FoldStack, rows):
    """Targets of rows [F, n]; regression targets standardised per fold."""
    y = folds.y[rows]
    if sig.task == "regression":
        y = (y - folds.y_shift[:, None, :]) / folds.y_scale[:, None, :]
    return y


def _evaluate(sig: Signature, hp: LaneHparams, params, norm_state, folds: FoldStack):
    """(val_loss [P, F], {metric: [P, F]}) of every lane on its fold's validation rows.

    Logits are computed chunk by chunk (hidden activations [P, F, chunk, W]); only the
    logits [P, F, n_val, outputs] of all rows are kept, which rank metrics need."""
    n_lanes = hp.learning_rate.shape[0]
    n_folds, n_val = folds.val_idx.shape
    chunk = eval_chunk_rows(n_lanes, n_folds, max(sig.width, sig.n_outputs), n_val)
    n_chunks = -(-n_val // chunk)
    forward = _lanes(functools.partial(_eval_logits, sig), (0, 0, 0, None), (None, 0, 0, 0))

    def chunk_logits(c):
        pos = jnp.minimum(c * chunk + jnp.arange(chunk), n_val - 1)
        return forward(hp, params, norm_state, _features(folds, folds.val_idx[:, pos]))

    logits = jax.lax.map(chunk_logits, jnp.arange(n_chunks))          # [C, P, F, c, k]
    logits = jnp.moveaxis(logits, 0, 2).reshape(n_lanes, n_folds, n_chunks * chunk, -1)
    logits = logits[:, :, :n_val]
    score = _lanes(functools.partial(_score_lane, sig), (0, None, None, None, None),
                   (0, 0, 0, 0, 0))
    return score(logits, _targets(sig, folds, folds.val_idx), folds.w_val, folds.y_shift,
                 folds.y_scale)


def _epoch_order(key, w_train, n_batches: int, batch: int):
    """Row indices [n_batches, batch] of one fold's epoch: real rows in random order,
    padding rows last. A 1-D uniform draw is prefix-stable, so extra padding does not
    change the order of the real rows."""
    n_rows = w_train.shape[0]
    u = jax.random.uniform(key, (n_rows,))
    order = jnp.argsort(jnp.where(w_train > 0, u, 2.0))
    return jnp.pad(order, (0, n_batches * batch - n_rows)).reshape(n_batches, batch)


def _one_lane_hp(sig: Signature) -> LaneHparams:
    return LaneHparams(*(jax.ShapeDtypeStruct((), jnp.int32 if name in INT_FIELDS
                                              else jnp.float32)
                         for name in LaneHparams._fields))


@functools.cache
def state_layout(sig: Signature) -> tuple[jax.tree_util.PyTreeDef, tuple]:
    """(treedef, one lane's leaf ShapeDtypeStructs) of a program's ``TrainState``.

    Programs take and return the state as a flat tuple of leaves with leading [P, F]:
    plain arrays cross the program boundary (and ``jax.export``), never optax's own
    state classes."""
    lane = jax.eval_shape(functools.partial(_init_lane, sig), _one_lane_hp(sig),
                          jax.ShapeDtypeStruct((), jnp.int32),
                          jax.ShapeDtypeStruct((), jnp.uint32))
    leaves, treedef = jax.tree_util.tree_flatten(lane)
    return treedef, tuple(leaves)


def blank_state(sig: Signature, n_trials: int, n_folds: int) -> tuple[np.ndarray, ...]:
    """Zeros in the shape of a program's state: the input of lanes that start fresh."""
    _, leaves = state_layout(sig)
    return tuple(np.zeros((n_trials, n_folds, *leaf.shape), leaf.dtype) for leaf in leaves)


def lane_state(sig: Signature, leaves: Sequence, lane: int) -> TrainState:
    """One lane's state (leaves [F, ...]) out of a program's flat state [P, F, ...]."""
    treedef, _ = state_layout(sig)
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(leaf[lane]) for leaf in leaves])


def resize_state(state: TrainState, sig: Signature) -> tuple[np.ndarray, ...]:
    """A lane's state (leaves [F, ...]) moved into a program of ``sig``, flat.

    Between batches a trial may land in a wider or deeper bucket, or a narrower one that
    still holds its real units and layers. Its real values are kept; the rest is zero.
    Padding never reaches an output (masked units, pass-through layers), and a lane's
    padded weights are zero and stay zero, so the move changes no result."""
    n_folds = np.shape(state.steps)[0]
    treedef, leaves = state_layout(sig)
    source = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    target_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        jax.tree_util.tree_unflatten(treedef, list(leaves)))[0]]
    out = []
    for path, leaf in zip(target_paths, leaves):
        new = np.zeros((n_folds, *leaf.shape), leaf.dtype)
        old = source.get(path)
        if old is not None:
            if old.shape == new.shape:
                new = old.astype(leaf.dtype, copy=False)
            else:
                common = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape))
                new[common] = old[common]
        out.append(new)
    return tuple(out)


def fit_segment(sig: Signature, hp: LaneHparams, folds: FoldStack, seed, state: tuple,
                fresh, start_epoch, n_epochs, mesh: Mesh | None = None) -> SegmentResult:
    """Train every lane for ``n_epochs`` (<= SEGMENT_EPOCHS) epochs from ``start_epoch``.

    state: the flat ``TrainState`` leaves [P, F, ...] the last segment returned (or
        ``blank_state`` for a first segment); lanes with ``fresh`` [P] true start
        from their initialisation instead.
    start_epoch, n_epochs: int32 scalars (traced: any segment runs on one program).

    Minibatch order, dropout keys and learning-rate schedules follow the absolute epoch
    and step, so a trial trained in segments gives the curves of one trained in one go.
    """
    if mesh is None:
        return _segment_lanes(sig, hp, folds, seed, state, fresh, start_epoch, n_epochs)
    # Lanes are independent: each device trains its own share of the trial axis with no
    # communication at all (a global "all lanes live?" test would cost an all-reduce and
    # a rendezvous of the devices on every minibatch step).
    lanes, every = PartitionSpec("lanes"), PartitionSpec()
    return jax.shard_map(functools.partial(_segment_lanes, sig), mesh=mesh,
                         in_specs=(lanes, every, every, lanes, lanes, every, every),
                         out_specs=lanes, check_vma=False)(
        hp, folds, seed, state, fresh, start_epoch, n_epochs)


def _segment_lanes(sig: Signature, hp: LaneHparams, folds: FoldStack, seed, state_leaves,
                   fresh, start_epoch, n_epochs) -> SegmentResult:
    n_folds, n_rows = folds.train_idx.shape
    n_trials = hp.learning_rate.shape[0]
    batch = sig.batch_size
    n_batches = -(-n_rows // batch)
    fold_ids = jnp.arange(n_folds)
    # The minibatch order depends on (seed, fold) only, as in scikit-learn where every
    # candidate shares random_state: all trials of a fold read the same rows, so the
    # first layer of every lane becomes one wide matrix product.
    fold_keys = jax.vmap(
        lambda f: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), f), 2**20)
    )(fold_ids)
    n_real = jnp.sum(folds.w_train > 0, axis=1)                      # [F]
    steps_per_epoch = jnp.maximum(jnp.ceil(n_real / batch), 1.0)     # [F]
    total_steps = steps_per_epoch[None, :] * hp.epochs[:, None]      # [P, F]
    row_valid = (jnp.arange(n_batches * batch) < n_rows).reshape(n_batches, batch)

    treedef, _ = state_layout(sig)
    state = jax.tree_util.tree_unflatten(treedef, list(state_leaves))
    init = _lanes(functools.partial(_init_lane, sig), (0, None, None), (None, 0, None))
    fresh_lanes = jnp.broadcast_to(fresh[:, None], (n_trials, n_folds))
    # Initialise only when some lane starts here (its draws cost a pass over the weights).
    state = jax.lax.cond(jnp.any(fresh),
                         lambda: _where_tree(fresh_lanes, init(hp, fold_ids, seed), state),
                         lambda: state)
    dropout_keys = _lanes(functools.partial(_dropout_key, sig), (0, None, None),
                          (None, 0, None))(hp, fold_ids, seed)
    step_all = _lanes(functools.partial(_step_lane, sig),
                      (0, 0, 0, 0, 0, 0, None, None, None, None, 0),
                      (None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    def epoch_fn(i, carry):
        state, curves = carry
        params, norm_state, opt_states, steps, diverged_at = state
        epoch = start_epoch + i
        order = jax.vmap(lambda k, w: _epoch_order(jax.random.fold_in(k, epoch), w,
                                                   n_batches, batch))(fold_keys, folds.w_train)
        in_epochs = (epoch < hp.epochs)[:, None]                     # [P, 1]

        def step_fn(carry, b):
            params, norm_state, opt_states, steps, diverged_at = carry
            pos = order[:, b]                                         # [F, B]
            take = jax.vmap(lambda a, i: a[i])
            rows = take(folds.train_idx, pos)                         # [F, B] table rows
            xb, yb = _features(folds, rows), _targets(sig, folds, rows)
            wb = take(folds.w_train, pos) * row_valid[b]
            keys = jax.vmap(jax.vmap(
                lambda k: jax.random.fold_in(jax.random.fold_in(k, epoch), b)))(dropout_keys)
            new_params, new_ns, new_opt, loss = step_all(
                hp, params, norm_state, opt_states, steps, keys, xb, yb, wb,
                steps_per_epoch, total_steps)
            live = ((jnp.sum(wb, axis=1) > 0)[None, :] & in_epochs & (diverged_at < 0)
                    & jnp.isfinite(loss))                             # [P, F]
            new = (new_params, new_ns, new_opt)
            old = (params, norm_state, opt_states)
            # Usually every lane steps: skip the per-lane select then (it costs a pass
            # over every parameter and optimizer state).
            params, norm_state, opt_states = jax.lax.cond(
                jnp.all(live), lambda: new, lambda: _where_tree(live, new, old))
            n_b = jnp.sum(wb, axis=1)[None, :]
            carry = (params, norm_state, opt_states, steps + live, diverged_at)
            return carry, (jnp.where(live | ~jnp.isfinite(loss), loss, 0.0) * n_b,
                           jnp.broadcast_to(n_b, loss.shape))

        carry = (params, norm_state, opt_states, steps, diverged_at)
        carry, (loss_sums, counts) = jax.lax.scan(step_fn, carry, jnp.arange(n_batches))
        params, norm_state, opt_states, steps, diverged_at = carry
        train_loss = jnp.sum(loss_sums, 0) / jnp.maximum(jnp.sum(counts, 0), 1.0)
        val_loss, metrics = _evaluate(sig, hp, params, norm_state, folds)
        bad = in_epochs & ~(jnp.isfinite(train_loss) & jnp.isfinite(val_loss))
        diverged_at = jnp.where((diverged_at < 0) & bad, epoch, diverged_at)
        state = TrainState(params, norm_state, opt_states, steps, diverged_at)
        curves = jax.tree_util.tree_map(lambda buf, v: buf.at[i].set(v), curves,
                                        (train_loss, val_loss, metrics))
        return state, curves

    metric_names = sig.metrics or METRICS_BY_TASK[sig.task]
    empty = jnp.zeros((SEGMENT_EPOCHS, n_trials, n_folds), jnp.float32)
    curves = (empty, empty, {name: empty for name in metric_names})
    state, (train_loss, val_loss, metrics) = jax.lax.fori_loop(
        0, n_epochs, epoch_fn, (TrainState(*state), curves))
    move = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731 - [S, P, F] -> [P, F, S]
    return SegmentResult(tuple(jax.tree_util.tree_leaves(state)), move(train_loss),
                         move(val_loss), {k: move(v) for k, v in metrics.items()})
