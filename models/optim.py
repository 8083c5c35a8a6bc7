"""Optimizers and learning-rate schedules with traced, per-lane hyperparameters.

Every optimizer is built with ``optax.inject_hyperparams`` inside the traced program,
so its numbers live in the optimizer state as arrays: vmapping over lanes with
different values never recompiles.

Every optimizer family is one update rule with per-lane coefficients
(``scale_by_family``), so a program whose lanes mix sgd, momentum, nesterov, adagrad,
rmsprop and adam computes one direction per parameter, not one per family (which
doubled the step time of a five-family program). With moments ``m``, ``v``::

    m <- m_decay * m + m_gain * g
    v <- v_decay * v + v_gain * g^2
    direction = (g_weight * g + m_weight' * m) / (sqrt(v_weight' * v + eps_in) + eps_out)

where ``m_weight' = m_weight / (1 - m_decay^t)`` and ``v_weight' = 1 / (1 - v_decay^t)``
for adam (bias correction), else ``m_weight`` and 1. ``family_coefficients`` gives each
family's numbers; each is tested against optax's own rule (tests/models/test_optim.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:
    from models.hparams import Signature


def _weights_only(params):
    """Decoupled weight decay, like the L1/L2 penalties, applies to weight matrices only,
    not to biases or norm/prelu terms."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "w", params
    )


class ScaleByFamilyState(NamedTuple):
    count: jax.Array        # int32: updates taken
    m: optax.Updates        # first moment / momentum trace
    v: optax.Updates        # second moment / squared-gradient accumulator


def scale_by_family(m_decay, m_gain, m_weight, g_weight, v_decay, v_gain, v_init, eps_in,
                    eps_out, bias_correction) -> optax.GradientTransformation:
    """The direction of every optimizer family (module docstring), as one rule."""

    def init(params):
        return ScaleByFamilyState(
            jnp.zeros((), jnp.int32),
            jax.tree_util.tree_map(jnp.zeros_like, params),
            jax.tree_util.tree_map(lambda p: jnp.full_like(p, v_init), params))

    def update(updates, state, params=None):  # noqa: ARG001
        count = state.count + 1
        m = jax.tree_util.tree_map(lambda g, a: m_decay * a + m_gain * g, updates, state.m)
        v = jax.tree_util.tree_map(lambda g, a: v_decay * a + v_gain * jnp.square(g),
                                   updates, state.v)
        t = count.astype(jnp.float32)
        corrected = bias_correction > 0
        m_scale = jnp.where(corrected, m_weight / (1.0 - m_decay ** t), m_weight)
        v_scale = jnp.where(corrected, 1.0 / (1.0 - v_decay ** t), 1.0)
        direction = jax.tree_util.tree_map(
            lambda g, a, b: (g_weight * g + m_scale * a) / (jnp.sqrt(v_scale * b + eps_in)
                                                            + eps_out),
            updates, m, v)
        return direction, ScaleByFamilyState(count, m, v)

    return optax.GradientTransformation(init, update)


def family_coefficients(family: str, momentum: float, beta1: float, beta2: float,
                        rho: float, eps: float) -> dict[str, float]:
    """The coefficients of ``scale_by_family`` that give ``family``'s rule (optax's:
    trace, trace with nesterov, scale_by_rss with initial accumulator 0.1,
    scale_by_rms, scale_by_adam)."""
    none = dict(m_decay=0.0, m_gain=0.0, m_weight=0.0, g_weight=1.0, v_decay=0.0,
                v_gain=0.0, v_init=0.0, eps_in=1.0, eps_out=0.0, bias_correction=0.0)
    if family == "sgd":  # momentum 0 for sgd and gd
        return {**none, "m_decay": momentum, "m_gain": 1.0, "m_weight": 1.0, "g_weight": 0.0}
    if family == "nesterov":
        return {**none, "m_decay": momentum, "m_gain": 1.0, "m_weight": momentum}
    if family == "adagrad":
        return {**none, "v_decay": 1.0, "v_gain": 1.0, "v_init": 0.1, "eps_in": eps}
    if family == "rmsprop":
        return {**none, "v_decay": rho, "v_gain": 1.0 - rho, "eps_in": eps}
    if family == "adam":
        return {**none, "m_decay": beta1, "m_gain": 1.0 - beta1, "m_weight": 1.0,
                "g_weight": 0.0, "v_decay": beta2, "v_gain": 1.0 - beta2, "eps_in": 0.0,
                "eps_out": eps, "bias_correction": 1.0}
    raise ValueError(f"unknown optimizer family {family!r}")


COEFFICIENT_NAMES = tuple(family_coefficients("sgd", 0, 0, 0, 0, 0))


def _rule(learning_rate, weight_decay, clip_norm, m_decay, m_gain, m_weight, g_weight,
          v_decay, v_gain, v_init, eps_in, eps_out, bias_correction, *,
          use_clip: bool = True, use_decay: bool = True) -> optax.GradientTransformation:
    """clip -> the family's direction -> decoupled decay -> scale by -learning_rate.

    Clipping and decay are left out when no lane of the program uses them. Named, so
    that a lane's optimizer state reads the same (by name, not position) whether or not
    its program includes clipping or decay: a paused trial can go on in another program
    (models.train.resize_state)."""
    parts = [("clip", optax.clip_by_global_norm(clip_norm))] if use_clip else []
    parts.append(("direction", scale_by_family(m_decay, m_gain, m_weight, g_weight, v_decay,
                                               v_gain, v_init, eps_in, eps_out,
                                               bias_correction)))
    if use_decay:
        parts.append(("decay", optax.add_decayed_weights(weight_decay, mask=_weights_only)))
    parts.append(("learning_rate", optax.scale_by_learning_rate(learning_rate)))
    return optax.named_chain(*parts)


_injected_rule = optax.inject_hyperparams(_rule, static_args=("use_clip", "use_decay"))


def make_optimizer(sig: "Signature", hp) -> optax.GradientTransformation:
    """The injected-hyperparameter optimizer of one lane."""
    return _injected_rule(
        learning_rate=hp.learning_rate, weight_decay=hp.weight_decay, clip_norm=hp.clip_norm,
        **{name: getattr(hp, name) for name in COEFFICIENT_NAMES},
        use_clip=sig.clip, use_decay=sig.weight_decay)


def optimizer_step(optimizer, state, grads, params, learning_rate):
    """Apply the lane's optimizer with this step's learning rate; returns (params, state)."""
    state = state._replace(hyperparams={
        **state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32)})
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state


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


def learning_rate_at(sig: "Signature", hp, step, steps_per_epoch, total_steps):
    """The lane's learning rate before update ``step`` under its selected schedule."""
    factor = jnp.float32(0.0)
    for i, name in enumerate(sig.schedules):
        f = _schedule_factor(name, hp, step, steps_per_epoch, total_steps)
        factor = f if len(sig.schedules) == 1 else jnp.where(hp.schedule == i, f, factor)
    return hp.learning_rate * factor
