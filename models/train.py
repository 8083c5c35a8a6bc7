"""Train P trials x F folds in one compiled program.

``fit(sig, hp, folds)`` jit-compiles once per (Signature, array shapes) and runs
``vmap(trials) . vmap(folds) . scan(epochs) . scan(minibatches)``. Numeric
hyperparameters are arrays in ``hp`` and never trigger a recompilation.

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

from models import network, optim
from models.folds import FoldStack
from models.hparams import LaneHparams, Signature
from models.metrics import compute_metrics, loss_from_logits


class FitResult(NamedTuple):
    """Outputs of ``fit``; P trials, F folds, E = ``sig.epochs``.

    train_loss:     [P, F, E] mean minibatch loss of the epoch (data loss + penalty)
    val_loss:       [P, F, E] validation data loss
    val_metrics:    {name: [P, F, E]} every metric of the task on the validation rows
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
    return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def _fit_lane(sig: Signature, hp: LaneHparams, fold: FoldStack, fold_id, seed):
    key = lane_key(seed, hp.trial, fold_id)
    k_init, k_dropout = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    # The minibatch order depends on (seed, fold) only, as in scikit-learn where every
    # candidate shares random_state: all trials of a fold then read the same rows, and
    # the first layer of every lane becomes one wide matrix product.
    k_shuffle = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), fold_id), 2**20)

    params = network.init_params(sig, hp, k_init)
    norm_state = network.init_norm_state(sig)
    optimizers = optim.make_optimizers(sig, hp)
    opt_states = optim.init_optimizer_state(optimizers, params)

    n_rows, batch = fold.x_train.shape[0], sig.batch_size
    n_batches = -(-n_rows // batch)
    n_real = jnp.sum(fold.w_train)
    steps_per_epoch = jnp.maximum(jnp.ceil(n_real / batch), 1.0)
    total_steps = steps_per_epoch * hp.epochs
    row_valid = (jnp.arange(n_batches * batch) < n_rows).reshape(n_batches, batch)

    def loss_fn(p, ns, xb, yb, wb, drop_key):
        logits, new_ns = network.forward(sig, p, ns, hp, xb, wb, train=True, key=drop_key)
        return loss_from_logits(sig.task, logits, yb, wb) + network.penalty(sig, p, hp), new_ns

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def epoch_fn(carry, epoch):
        u = jax.random.uniform(jax.random.fold_in(k_shuffle, epoch), (n_rows,))
        order = jnp.argsort(jnp.where(fold.w_train > 0, u, 2.0))
        order = jnp.pad(order, (0, n_batches * batch - n_rows)).reshape(n_batches, batch)
        in_epochs = epoch < hp.epochs

        def step_fn(carry, b):
            params, norm_state, opt_states, step, diverged_at = carry
            idx = order[b]
            xb, yb = fold.x_train[idx], fold.y_train[idx]
            wb = fold.w_train[idx] * row_valid[b]
            drop_key = jax.random.fold_in(jax.random.fold_in(k_dropout, epoch), b)
            (loss, new_ns), grads = grad_fn(params, norm_state, xb, yb, wb, drop_key)
            lr = optim.learning_rate_at(sig, hp, step, steps_per_epoch, total_steps)
            new_params, new_opt = optim.optimizer_step(optimizers, opt_states, grads, params,
                                                       hp, lr)
            n_b = jnp.sum(wb)
            live = (n_b > 0) & in_epochs & (diverged_at < 0) & jnp.isfinite(loss)
            carry = (
                _where_tree(live, new_params, params),
                _where_tree(live, new_ns, norm_state),
                _where_tree(live, new_opt, opt_states),
                step + live.astype(jnp.float32),
                diverged_at,
            )
            return carry, (loss * n_b, n_b)

        carry, (loss_sums, counts) = jax.lax.scan(step_fn, carry, jnp.arange(n_batches))
        params, norm_state, opt_states, step, diverged_at = carry
        train_loss = jnp.sum(loss_sums) / jnp.maximum(jnp.sum(counts), 1.0)

        logits, _ = network.forward(sig, params, norm_state, hp, fold.x_val, fold.w_val)
        val_loss = loss_from_logits(sig.task, logits, fold.y_val, fold.w_val)
        metrics = compute_metrics(sig.task, logits, fold.y_val, fold.w_val,
                                  fold.y_shift, fold.y_scale)
        bad = in_epochs & ~(jnp.isfinite(train_loss) & jnp.isfinite(val_loss))
        diverged_at = jnp.where((diverged_at < 0) & bad, epoch, diverged_at)
        carry = (params, norm_state, opt_states, step, diverged_at)
        return carry, (train_loss, val_loss, metrics)

    carry = (params, norm_state, opt_states, jnp.float32(0.0), jnp.int32(-1))
    carry, (train_loss, val_loss, metrics) = jax.lax.scan(
        epoch_fn, carry, jnp.arange(sig.epochs)
    )
    params, norm_state, _, _, diverged_at = carry
    return FitResult(train_loss, val_loss, metrics, diverged_at, params, norm_state)


@functools.partial(jax.jit, static_argnames=("sig",))
def _fit_program(sig: Signature, hp: LaneHparams, folds: FoldStack, seed) -> FitResult:
    lane = functools.partial(_fit_lane, sig)
    over_folds = jax.vmap(lane, in_axes=(None, 0, 0, None))
    over_trials = jax.vmap(over_folds, in_axes=(0, None, None, None))
    return over_trials(hp, folds, jnp.arange(folds.x_train.shape[0]), seed)


def fit(sig: Signature, hp: LaneHparams, folds: FoldStack, seed: int = 0) -> FitResult:
    """Train every trial of ``hp`` (arrays [P]) on every fold of ``folds``.

    Compiles once per ``sig`` and shapes (P, F, rows); call with the same P to reuse
    the program (the executor pads the trial axis).
    """
    hp = LaneHparams(*(jnp.asarray(v) for v in hp))
    folds = FoldStack(*(jnp.asarray(v) for v in folds))
    return _fit_program(sig, hp, folds, jnp.asarray(seed, jnp.uint32))


def compiled_programs() -> int:
    """How many training programs this process has compiled (for no-recompile checks)."""
    return _fit_program._cache_size()
