"""models.optim: update rules against optax, clipping, schedules, and training progress."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import ProgramCache, optim
from models.folds import stack_folds
from models.hparams import (
    OPTIMIZERS,
    SCHEDULES,
    LaneHparams,
    Signature,
    TrialConfig,
    lane_hparams,
    signature_for,
)


def lane(sig: Signature, **params) -> LaneHparams:
    """Scalar hyperparameters of one lane (``params`` as in the YAML) for program ``sig``."""
    hp = lane_hparams([TrialConfig.from_dict(params)], sig)
    return LaneHparams(*(jnp.asarray(v[0]) for v in hp))


# --------------------------------------------------------------------------- update rules
# Every family is one rule with per-lane coefficients (as in a mixed sweep), with
# clipping and decoupled decay compiled in. Unusual numbers catch hyperparameters routed
# to the wrong argument.
STEP_SIG = Signature(task="binary", n_features=3, n_outputs=1, depth=1, width=4,
                     weight_decay=True, clip=True)
NUMBERS = dict(learning_rate=0.05, momentum=0.8, beta1=0.85, beta2=0.99, rho=0.95, eps=1e-6)


def _weights_mask(params):
    return {"hidden": [{"w": True, "b": False}], "out": {"w": True, "b": False}}


REFERENCE = {
    "gd": lambda: optax.sgd(0.05),
    "sgd": lambda: optax.sgd(0.05),
    "momentum": lambda: optax.sgd(0.05, momentum=0.8),
    "nesterov": lambda: optax.sgd(0.05, momentum=0.8, nesterov=True),
    "adagrad": lambda: optax.adagrad(0.05, initial_accumulator_value=0.1, eps=1e-6),
    "rmsprop": lambda: optax.rmsprop(0.05, decay=0.95, eps=1e-6),
    "adam": lambda: optax.adam(0.05, b1=0.85, b2=0.99, eps=1e-6),
    "adamw": lambda: optax.adamw(0.05, b1=0.85, b2=0.99, eps=1e-6, weight_decay=0.02,
                                 mask=_weights_mask),
}


def _small_params(rng):
    return {"hidden": [{"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                        "b": jnp.asarray(rng.normal(size=4), jnp.float32)}],
            "out": {"w": jnp.asarray(rng.normal(size=(4, 1)), jnp.float32),
                    "b": jnp.asarray(rng.normal(size=1), jnp.float32)}}


@functools.partial(jax.jit, static_argnums=0)
def _run_steps(sig, hp, params, grads_seq, lrs):
    """Apply our optimizer with gradients grads_seq[i] and learning rates lrs[i]."""
    opt = optim.make_optimizer(sig, hp)
    state = opt.init(params)

    def body(carry, xs):
        params, state = carry
        grads, lr = xs
        return optim.optimizer_step(opt, state, grads, params, lr), None

    (params, _), _ = jax.lax.scan(body, (params, state), (grads_seq, lrs))
    return params


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_rule_matches_optax(name):
    rng = np.random.default_rng(0)
    params = _small_params(rng)
    grads_seq = jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.normal(size=(4,) + p.shape), jnp.float32), params)
    extra = {"weight_decay": 0.02} if name == "adamw" else {}
    hp = lane(STEP_SIG, optimizer=name, **NUMBERS, **extra)
    ours = _run_steps(STEP_SIG, hp, params, grads_seq, jnp.full(4, 0.05))

    ref = REFERENCE[name]()
    state, expected = ref.init(params), params
    for i in range(4):
        g = jax.tree_util.tree_map(lambda a: a[i], grads_seq)
        updates, state = ref.update(g, state, expected)
        expected = optax.apply_updates(expected, updates)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), ours, expected)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, params)
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_scheduled_learning_rate_is_used():
    """The per-step learning rate passed to optimizer_step replaces the base one."""
    rng = np.random.default_rng(1)
    params = _small_params(rng)
    grads_seq = jax.tree_util.tree_map(lambda p: jnp.ones((2,) + p.shape), params)
    hp = lane(STEP_SIG, optimizer="sgd", learning_rate=123.0)
    ours = _run_steps(STEP_SIG, hp, params, grads_seq, jnp.asarray([0.1, 0.3]))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b - 0.4, rtol=1e-6, atol=1e-6), ours, params)


@pytest.mark.parametrize("grad_norm,clip,expected_norm", [
    (10.0, 0.5, 0.5),       # clipped to the threshold
    (0.1, 0.5, 0.1),        # below it: untouched
    (10.0, math.inf, 10.0),  # off
])
def test_clip_norm_limits_the_update(grad_norm, clip, expected_norm):
    rng = np.random.default_rng(2)
    params = _small_params(rng)
    g = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                               params)
    norm = optax.global_norm(g)
    g = jax.tree_util.tree_map(lambda a: a * grad_norm / norm, g)
    hp = lane(STEP_SIG, optimizer="sgd", learning_rate=1.0, clip_norm=clip)
    new = _run_steps(STEP_SIG, hp, params, jax.tree_util.tree_map(lambda a: a[None], g),
                     jnp.ones(1))
    delta = jax.tree_util.tree_map(lambda a, b: a - b, new, params)
    np.testing.assert_allclose(optax.global_norm(delta), expected_norm, rtol=1e-5)
    # the direction is kept
    cos = sum(jnp.vdot(d, -gg) for d, gg in zip(jax.tree_util.tree_leaves(delta),
                                                 jax.tree_util.tree_leaves(g)))
    np.testing.assert_allclose(cos / (optax.global_norm(delta) * grad_norm), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- schedules
SCHED_SIG = Signature(task="binary", n_features=3, n_outputs=1, depth=1, width=4,
                      schedules=SCHEDULES)
LR, RATE, DECAY_EPOCHS, WARMUP, SPE, EPOCHS = 0.1, 0.5, 3.0, 0.2, 4.0, 10
TOTAL = SPE * EPOCHS


def _closed_form(name, step):
    epoch = step / SPE
    if name == "constant":
        return np.full_like(step, LR)
    if name == "exponential":
        return LR * RATE ** (epoch / DECAY_EPOCHS)
    if name == "step":
        return LR * RATE ** np.floor(epoch / DECAY_EPOCHS)
    if name == "cosine":
        return LR * 0.5 * (1 + np.cos(np.pi * step / TOTAL))
    warm = WARMUP * TOTAL
    after = (step - warm) / (TOTAL - warm)
    return np.where(step < warm, LR * (step + 1) / warm, LR * 0.5 * (1 + np.cos(np.pi * after)))


@pytest.mark.parametrize("name", SCHEDULES)
def test_learning_rate_schedules(name):
    hp = lane(SCHED_SIG, schedule=name, learning_rate=LR, decay_rate=RATE,
              decay_epochs=DECAY_EPOCHS, warmup_fraction=WARMUP, epochs=EPOCHS)
    steps = np.arange(TOTAL + 1, dtype=np.float32)
    lr = np.asarray(optim.learning_rate_at(SCHED_SIG, hp, jnp.asarray(steps), SPE, TOTAL))
    np.testing.assert_allclose(lr, _closed_form(name, steps.astype(np.float64)),
                               rtol=1e-5, atol=1e-8)
    assert lr[0] == pytest.approx(LR if name != "warmup_cosine" else LR / (WARMUP * TOTAL))
    if name in ("exponential", "step", "cosine", "warmup_cosine"):
        assert lr[-1] < lr[0] or name == "warmup_cosine"
    if name == "step":  # piecewise constant, halving every DECAY_EPOCHS epochs
        assert set(np.round(lr / LR, 6)) == {1.0, 0.5, 0.25, 0.125}
    if name == "cosine":
        assert np.all(np.diff(lr) <= 0)
        assert lr[-2] < 0.01 * LR and lr[-1] == pytest.approx(0.0, abs=1e-9)
    if name == "warmup_cosine":
        warm = int(WARMUP * TOTAL)
        rise = lr[:warm]
        np.testing.assert_allclose(np.diff(rise), LR / warm, rtol=1e-4)  # linear
        assert rise[-1] == pytest.approx(LR)  # peaks at the base rate
        assert np.all(np.diff(lr[warm - 1:]) <= 1e-9)  # then decays
        assert lr[-1] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- training
# Every optimizer and every schedule lowers the training loss of a small MLP. Full
# batches (batch_size >= rows) so that gd shares the program with the others.
RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype(np.float32)
Y = (np.tanh(X @ np.array([1.0, -1.0, 0.5, 0.0])) + 0.1 * RNG.normal(size=48)).astype(np.float32)
FOLDS = stack_folds([(X[:36], Y[:36], X[36:], Y[36:]), (X[12:], Y[12:], X[:12], Y[:12])])
OPT_LR = {"gd": 0.1, "sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.1,
          "rmsprop": 0.01, "adam": 0.02, "adamw": 0.02}
BASE = dict(depth=1, width=8, activation="tanh", batch_size=64, epochs=20)
LANES = (
    [dict(BASE, optimizer=o, learning_rate=lr) for o, lr in OPT_LR.items()]
    + [dict(BASE, optimizer="adam", learning_rate=0.02, schedule=s) for s in SCHEDULES]
    + [dict(BASE, optimizer="sgd", learning_rate=0.1, schedule="warmup_cosine"),
       dict(BASE, optimizer="sgd", learning_rate=0.1, clip_norm=1e-3),  # tightly clipped
       dict(BASE, optimizer="momentum", learning_rate=0.05, l2=1e-3, schedule="step")]
)


@pytest.fixture(scope="module")
def trained():
    configs = [TrialConfig.from_dict(c, trial=i) for i, c in enumerate(LANES)]
    sig = signature_for(configs, "regression", 4, 1, FOLDS.n_train)
    assert len(configs) == 16 and {c.optimizer for c in configs} >= {
        "sgd", "nesterov", "adagrad", "rmsprop", "adam"}
    result = ProgramCache().fit(sig, lane_hparams(configs, sig), FOLDS)
    return jax.tree_util.tree_map(np.asarray, result)


@pytest.mark.parametrize("i", range(len(LANES)), ids=[
    f"{c['optimizer']}-{c.get('schedule', 'constant')}" + ("-clip" if "clip_norm" in c else "")
    for c in LANES])
def test_training_lowers_the_loss(trained, i):
    loss = trained.train_loss[i]  # [F, E]
    assert np.all(np.isfinite(loss)) and np.all(trained.diverged_epoch[i] == -1)
    if "clip_norm" in LANES[i]:
        # each update moves the weights by at most lr * clip_norm = 1e-4: barely any progress
        assert np.all(np.abs(loss[:, -1] - loss[:, 0]) < 0.02 * loss[:, 0])
    else:
        assert np.all(loss[:, -1] < 0.8 * loss[:, 0]), loss[:, [0, -1]]
        assert np.all(trained.val_loss[i, :, -1] < trained.val_loss[i, :, 0])
