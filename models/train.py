"""Train P trials x F folds in one program: the pure training functions.

``fit_program(sig, hp, folds, seed, mesh)`` runs ``vmap(trials) . vmap(folds) .
scan(epochs) . scan(minibatches)``; ``models.programs.ProgramCache`` compiles it once
per (Signature, array shapes). Numeric hyperparameters are arrays in ``hp`` and never
trigger a recompilation.

Per lane, per epoch: the real training rows are reshuffled (padding rows sort last),
split into minibatches of ``sig.batch_size``; batches made only of padding, epochs
past the lane's own ``epochs`` and steps after a divergence leave the lane unchanged.
At the end of each epoch the validation rows are scored.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from models import network, optim
from models.folds import FoldStack
from models.hparams import LaneHparams, Signature
from models.metrics import compute_metrics, loss_from_logits


class FitResult(NamedTuple):
    """Outputs of ``fit``; P trials, F folds, E = ``sig.epochs``.

    train_loss:     [P, F, E] mean minibatch loss of the epoch (data loss + penalty)
    val_loss:       [P, F, E] validation data loss
    val_metrics:    {name: [P, F, E]} validation metrics (``sig.metrics``, default all)
    diverged_epoch: [P, F] int32, first epoch with a non-finite loss, -1 if none
    params, norm_state: trained parameters, leaves with leading [P, F]
    """

    train_loss: jax.Array
    val_loss: jax.Array
    val_metrics: dict
    diverged_epoch: jax.Array
    params: dict
    norm_state: dict


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


def _init_lane(sig: Signature, hp: LaneHparams, fold_id, seed):
    key = lane_key(seed, hp.trial, fold_id)
    params = network.init_params(sig, hp, jax.random.fold_in(key, 0))
    opt_states = optim.init_optimizer_state(optim.make_optimizers(sig, hp), params)
    return params, network.init_norm_state(sig), opt_states, jax.random.fold_in(key, 1)


def _step_lane(sig: Signature, hp: LaneHparams, params, norm_state, opt_states, step,
               dropout_key, xb, yb, wb, steps_per_epoch, total_steps):
    """One minibatch update of one lane; returns the new state and the batch loss."""
    def loss_fn(p, ns):
        logits, new_ns = network.forward(sig, p, ns, hp, xb, wb, train=True, key=dropout_key)
        return loss_from_logits(sig.task, logits, yb, wb) + network.penalty(sig, p, hp), new_ns

    (loss, new_ns), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, norm_state)
    lr = optim.learning_rate_at(sig, hp, step, steps_per_epoch, total_steps)
    new_params, new_opt = optim.optimizer_step(optim.make_optimizers(sig, hp), opt_states,
                                               grads, params, hp, lr)
    return new_params, new_ns, new_opt, loss


def _eval_lane(sig: Signature, hp: LaneHparams, params, norm_state, x, y, w, y_shift, y_scale):
    logits, _ = network.forward(sig, params, norm_state, hp, x, w)
    metrics = compute_metrics(sig.task, logits, y, w, y_shift, y_scale)
    if sig.metrics:  # metrics left out are dead code to XLA and never computed
        metrics = {name: metrics[name] for name in sig.metrics}
    return loss_from_logits(sig.task, logits, y, w), metrics


def _epoch_order(key, w_train, n_batches: int, batch: int):
    """Row indices [n_batches, batch] of one fold's epoch: real rows in random order,
    padding rows last. A 1-D uniform draw is prefix-stable, so extra padding does not
    change the order of the real rows."""
    n_rows = w_train.shape[0]
    u = jax.random.uniform(key, (n_rows,))
    order = jnp.argsort(jnp.where(w_train > 0, u, 2.0))
    return jnp.pad(order, (0, n_batches * batch - n_rows)).reshape(n_batches, batch)


def fit_program(sig: Signature, hp: LaneHparams, folds: FoldStack, seed,
                 mesh: Mesh | None = None) -> FitResult:
    if mesh is None:
        return _fit_lanes(sig, hp, folds, seed)
    # Lanes are independent: each device trains its own share of the trial axis with no
    # communication at all (a global "all lanes live?" test would cost an all-reduce and
    # a rendezvous of the devices on every minibatch step).
    lanes = PartitionSpec("lanes")
    return jax.shard_map(functools.partial(_fit_lanes, sig), mesh=mesh,
                         in_specs=(lanes, PartitionSpec(), PartitionSpec()),
                         out_specs=lanes, check_vma=False)(hp, folds, seed)


def _fit_lanes(sig: Signature, hp: LaneHparams, folds: FoldStack, seed) -> FitResult:
    n_folds, n_rows = folds.x_train.shape[:2]
    batch = sig.batch_size
    n_batches = -(-n_rows // batch)
    fold_ids = jnp.arange(n_folds)
    # The minibatch order depends on (seed, fold) only, as in scikit-learn where every
    # candidate shares random_state: all trials of a fold read the same rows, so the
    # first layer of every lane becomes one wide matrix product.
    fold_keys = jax.vmap(
        lambda f: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), f), 2**20)
    )(fold_ids)
    n_real = jnp.sum(folds.w_train, axis=1)                          # [F]
    steps_per_epoch = jnp.maximum(jnp.ceil(n_real / batch), 1.0)     # [F]
    total_steps = steps_per_epoch[None, :] * hp.epochs[:, None]      # [P, F]
    row_valid = (jnp.arange(n_batches * batch) < n_rows).reshape(n_batches, batch)

    init = _lanes(functools.partial(_init_lane, sig), (0, None, None), (None, 0, None))
    step_all = _lanes(functools.partial(_step_lane, sig),
                      (0, 0, 0, 0, 0, 0, None, None, None, None, 0),
                      (None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    eval_all = _lanes(functools.partial(_eval_lane, sig),
                      (0, 0, 0, None, None, None, None, None),
                      (None, 0, 0, 0, 0, 0, 0, 0))
    params, norm_state, opt_states, dropout_keys = init(hp, fold_ids, seed)
    n_trials = hp.learning_rate.shape[0]
    steps = jnp.zeros((n_trials, n_folds))
    diverged_at = jnp.full((n_trials, n_folds), -1, jnp.int32)

    def epoch_fn(carry, epoch):
        order = jax.vmap(lambda k, w: _epoch_order(jax.random.fold_in(k, epoch), w,
                                                   n_batches, batch))(fold_keys, folds.w_train)
        in_epochs = (epoch < hp.epochs)[:, None]                     # [P, 1]

        def step_fn(carry, b):
            params, norm_state, opt_states, steps, diverged_at = carry
            idx = order[:, b]                                         # [F, B]
            take = jax.vmap(lambda a, i: a[i])
            xb, yb = take(folds.x_train, idx), take(folds.y_train, idx)
            wb = take(folds.w_train, idx) * row_valid[b]
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

        carry, (loss_sums, counts) = jax.lax.scan(step_fn, carry, jnp.arange(n_batches))
        params, norm_state, opt_states, steps, diverged_at = carry
        train_loss = jnp.sum(loss_sums, 0) / jnp.maximum(jnp.sum(counts, 0), 1.0)
        val_loss, metrics = eval_all(hp, params, norm_state, folds.x_val, folds.y_val,
                                     folds.w_val, folds.y_shift, folds.y_scale)
        bad = in_epochs & ~(jnp.isfinite(train_loss) & jnp.isfinite(val_loss))
        diverged_at = jnp.where((diverged_at < 0) & bad, epoch, diverged_at)
        return (params, norm_state, opt_states, steps, diverged_at), (train_loss, val_loss,
                                                                        metrics)

    carry = (params, norm_state, opt_states, steps, diverged_at)
    carry, (train_loss, val_loss, metrics) = jax.lax.scan(epoch_fn, carry,
                                                          jnp.arange(sig.epochs))
    params, norm_state, _, _, diverged_at = carry
    move = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731 - [E, P, F] -> [P, F, E]
    return FitResult(move(train_loss), move(val_loss),
                     {k: move(v) for k, v in metrics.items()}, diverged_at, params, norm_state)
