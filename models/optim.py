"""Optimizers and learning-rate schedules with traced, per-lane hyperparameters.

Every optimizer is built with ``optax.inject_hyperparams`` inside the traced program,
so its numbers (learning rate, momentum, betas, weight decay, ...) live in the optimizer
state as arrays: vmapping over lanes with different values never recompiles.

A program can hold several update rules (``Signature.optimizers``, e.g. sgd and adam);
each lane selects one by ``hp.optimizer``. Rules that differ only in numbers share one
family (sgd is momentum 0, adam is adamw with weight decay 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from models.hparams import Signature


def _weights_only(params):
    """Decoupled weight decay, like the L1/L2 penalties, applies to weight matrices only,
    not to biases or norm/prelu terms."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "w", params
    )


def _family_rule(learning_rate, weight_decay, clip_norm, momentum, beta1, beta2, rho, eps,
                 *, family: str, use_clip: bool = True, use_decay: bool = True
                 ) -> optax.GradientTransformation:
    """clip -> direction of the family -> decoupled decay -> scale by -learning_rate.

    Clipping and decay are left out when no lane of the program uses them."""
    if family == "sgd":
        direction = optax.trace(decay=momentum, nesterov=False)
    elif family == "nesterov":
        direction = optax.trace(decay=momentum, nesterov=True)
    elif family == "adagrad":
        direction = optax.scale_by_rss(initial_accumulator_value=0.1, eps=eps)
    elif family == "rmsprop":
        direction = optax.scale_by_rms(decay=rho, eps=eps)
    elif family == "adam":
        direction = optax.scale_by_adam(b1=beta1, b2=beta2, eps=eps)
    else:
        raise ValueError(f"unknown optimizer family {family!r}")
    # Named, so that a lane's optimizer state reads the same (by name, not position)
    # whether or not its program includes clipping or decay: a paused trial can go on in
    # another program (models.train.resize_state).
    parts = [("clip", optax.clip_by_global_norm(clip_norm))] if use_clip else []
    parts.append(("direction", direction))
    if use_decay:
        parts.append(("decay", optax.add_decayed_weights(weight_decay, mask=_weights_only)))
    parts.append(("learning_rate", optax.scale_by_learning_rate(learning_rate)))
    return optax.named_chain(*parts)


_injected_rule = optax.inject_hyperparams(
    _family_rule, static_args=("family", "use_clip", "use_decay"))


def make_optimizers(sig: Signature, hp) -> tuple[optax.GradientTransformation, ...]:
    """One injected-hyperparameter optimizer per family of the program, for one lane."""
    return tuple(
        _injected_rule(
            learning_rate=hp.learning_rate, weight_decay=hp.weight_decay,
            clip_norm=hp.clip_norm, momentum=hp.momentum, beta1=hp.beta1, beta2=hp.beta2,
            rho=hp.rho, eps=hp.eps, family=family, use_clip=sig.clip,
            use_decay=sig.weight_decay,
        )
        for family in sig.optimizers
    )


def init_optimizer_state(optimizers, params):
    return tuple(opt.init(params) for opt in optimizers)


def optimizer_step(optimizers, states, grads, params, hp, learning_rate):
    """Apply the lane's optimizer with this step's learning rate; returns (params, states).

    With several families every rule updates its own state (cheap elementwise work) and
    the lane keeps the update of its own family.
    """
    new_states, all_updates = [], []
    for opt, state in zip(optimizers, states):
        state = state._replace(hyperparams={
            **state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32)})
        updates, state = opt.update(grads, state, params)
        new_states.append(state)
        all_updates.append(updates)
    updates = all_updates[0]
    for i, other in enumerate(all_updates[1:], start=1):
        updates = jax.tree_util.tree_map(
            lambda u, o, i=i: jnp.where(hp.optimizer == i, o, u), updates, other
        )
    return optax.apply_updates(params, updates), tuple(new_states)


# --------------------------------------------------------------------------- schedules
def _schedule_factor(name: str, hp, step, steps_per_epoch, total_steps):
    """Multiplier of the base learning rate before update ``step`` (0-based).

    Written out here rather than with optax's schedule builders because those check
    their (here per-lane, traced) arguments with Python conditionals.
    """
    epoch = step / steps_per_epoch
    progress = jnp.clip(step / jnp.maximum(total_steps, 1.0), 0.0, 1.0)
    if name == "constant":
        return jnp.float32(1.0)
    if name == "exponential":
        return hp.decay_rate ** (epoch / hp.decay_epochs)
    if name == "step":
        return hp.decay_rate ** jnp.floor(epoch / hp.decay_epochs)
    if name == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    if name == "warmup_cosine":
        warm = jnp.maximum(hp.warmup_fraction * total_steps, 1.0)
        rising = (step + 1.0) / warm
        after = jnp.clip((step - warm) / jnp.maximum(total_steps - warm, 1.0), 0.0, 1.0)
        return jnp.where(step < warm, rising, 0.5 * (1.0 + jnp.cos(jnp.pi * after)))
    raise ValueError(f"unknown schedule {name!r}")


def learning_rate_at(sig: Signature, hp, step, steps_per_epoch, total_steps):
    """The lane's learning rate before update ``step`` under its selected schedule."""
    factor = jnp.float32(0.0)
    for i, name in enumerate(sig.schedules):
        f = _schedule_factor(name, hp, step, steps_per_epoch, total_steps)
        factor = f if len(sig.schedules) == 1 else jnp.where(hp.schedule == i, f, factor)
    return hp.learning_rate * factor
