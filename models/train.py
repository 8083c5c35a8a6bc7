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
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models import network, optim, program_store
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


def compiler_options() -> dict[str, str]:
    """XLA options of the training programs. On CPU, LLVM at optimisation level 1
    compiles a training program about a quarter faster than the default level 2 with
    the same run time (the matrix products are library calls; what LLVM compiles is
    simple elementwise loops). Other backends keep their defaults."""
    return {"xla_backend_optimization_level": "1"} if jax.default_backend() == "cpu" else {}


@functools.cache
def _jitted_program():
    return jax.jit(_fit_program, static_argnames=("sig", "mesh"),
                   compiler_options=compiler_options())


def _fit_program(sig: Signature, hp: LaneHparams, folds: FoldStack, seed,
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


# Exported programs name their argument and result types; register them once.
for _cls in (LaneHparams, FoldStack, FitResult):
    export.register_namedtuple_serialization(_cls, serialized_name=f"models.{_cls.__name__}")

_STORED: dict[str, Callable] = {}  # program key -> callable of an exported program


def _mesh_for(devices: list, n_trials: int) -> Mesh | None:
    if len(devices) > 1 and n_trials % len(devices) == 0:
        return Mesh(np.asarray(devices), ("lanes",))
    return None


def _program_devices(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.devices.size


def program_key(sig: Signature, n_trials: int, folds: FoldStack, n_devices: int) -> str:
    """Everything besides models/ itself that shapes a training program."""
    shapes = tuple((tuple(np.shape(a)), str(jax.dtypes.canonicalize_dtype(a.dtype))) for a in folds)
    return repr((sig, n_trials, shapes, n_devices, bool(jax.config.jax_enable_x64)))


def program_is_stored(sig: Signature, n_trials: int, folds: FoldStack,
                      devices: list | None = None) -> bool:
    """Whether ``fit`` would load this program from the program store (no trace)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    mesh = _mesh_for(devices, n_trials)
    return program_store.is_stored(program_key(sig, n_trials, folds, _program_devices(mesh)))


def _stored_program(sig: Signature, mesh: Mesh | None, hp, folds, seed) -> Callable:
    n_trials = int(np.shape(hp.learning_rate)[0])
    key = program_key(sig, n_trials, folds, _program_devices(mesh))
    program = _STORED.get(key)
    if program is None:
        shardings = None
        if mesh is not None:
            shardings = (NamedSharding(mesh, PartitionSpec("lanes")),
                         NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec()))
        jitted = jax.jit(lambda h, f, s: _fit_program(sig, h, f, s, mesh), in_shardings=shardings)
        program = program_store.load_or_export(key, jitted, (hp, folds, seed),
                                               compiler_options())
        _STORED[key] = program
    return program


def fit(sig: Signature, hp: LaneHparams, folds: FoldStack, seed: int = 0,
        devices: list | None = None) -> FitResult:
    """Train every trial of ``hp`` (arrays [P]) on every fold of ``folds``.

    Compiles once per ``sig`` and shapes (P, F, rows); call with the same P to reuse
    the program (the executor pads the trial axis). With several local devices (GPUs,
    TPU cores, or CPU devices from --xla_force_host_platform_device_count) and P a
    multiple of their count, the trial axis is split across them (``shard_map``: each
    device trains its own lanes, with no communication) and the folds are replicated;
    results are the same as on one device. With a program store directory set (see
    program_store), the program is loaded from disk instead of traced when it is there.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    n_trials = int(np.shape(hp.learning_rate)[0])
    mesh = _mesh_for(devices, n_trials)
    if mesh is not None:
        hp = jax.device_put(LaneHparams(*(jnp.asarray(v) for v in hp)),
                            NamedSharding(mesh, PartitionSpec("lanes")))
        folds = jax.device_put(FoldStack(*(jnp.asarray(v) for v in folds)),
                               NamedSharding(mesh, PartitionSpec()))
    else:
        hp = LaneHparams(*(jnp.asarray(v) for v in hp))
        folds = FoldStack(*(jnp.asarray(v) for v in folds))
    seed = jnp.asarray(seed, jnp.uint32)
    if program_store.directory() is None:
        return _jitted_program()(sig, hp, folds, seed, mesh)
    return _stored_program(sig, mesh, hp, folds, seed)(hp, folds, seed)


def lane_multiple() -> int:
    """Trial-axis sizes should be multiples of this to use every local device."""
    return jax.local_device_count()


def compiled_programs() -> int:
    """How many training programs this process has compiled (for no-recompile checks)."""
    return (_jitted_program()._cache_size()
            + sum(p._cache_size() for p in _STORED.values()))
