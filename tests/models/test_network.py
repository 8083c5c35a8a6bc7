"""models.network: gradients, scikit-learn equivalence, init, dropout, norms, masks."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from models import network
from models.hparams import (
    ACTIVATIONS,
    INITS,
    TASKS,
    LaneHparams,
    Signature,
    TrialConfig,
    lane_hparams,
)
from models.metrics import loss_from_logits


def lane(sig: Signature, dtype=jnp.float32, **params) -> LaneHparams:
    """Scalar hyperparameters of one lane (``params`` as in the YAML) for program ``sig``."""
    hp = lane_hparams([TrialConfig.from_dict(params)], sig)
    return LaneHparams(*(
        jnp.asarray(v[0], dtype if v.dtype.kind == "f" else jnp.int32) for v in hp
    ))


def random_params(sig: Signature, hp, rng, scale=0.8) -> dict:
    """Random parameters shaped for ``sig``; padded and absent weights zero (as after
    init); norm and prelu terms present as the signature asks."""
    masks = network.weight_masks(sig, hp)
    hidden = []
    for mask in masks["hidden"]:
        layer = {"w": rng.normal(scale=scale, size=mask.shape) * np.asarray(mask),
                 "b": rng.normal(scale=0.3, size=sig.width)}
        if "prelu" in sig.activations:
            layer["alpha"] = rng.uniform(0.1, 0.4, sig.width)
        if sig.norms != ("none",):
            layer["gamma"] = rng.uniform(0.6, 1.4, sig.width)
            layer["beta"] = rng.normal(scale=0.3, size=sig.width)
        hidden.append(layer)
    out = {"w": rng.normal(scale=scale, size=masks["out"].shape) * np.asarray(masks["out"]),
           "b": rng.normal(scale=0.3, size=sig.n_outputs)}
    return jax.tree_util.tree_map(jnp.asarray, {"hidden": hidden, "out": out})


# --------------------------------------------------------------------------- gradients
# Full training loss (data loss + L1/L2 penalty) against central finite differences in
# float64. One jitted checker per (task, norm), with the activation a traced selector,
# so the 7 activations of a task share one compilation.
N_OUT = {"regression": 2, "binary": 1, "multiclass": 3, "multilabel": 3}
FD_STEP = 1e-6
_CHECKERS: dict = {}


def _grad_problem(task: str, norm: str):
    """(sig, hp, params, norm_state, x, y, w) in float64; call under enable_x64."""
    sig = Signature(task=task, n_features=3, n_outputs=N_OUT[task], depth=2, width=5,
                    activations=ACTIVATIONS, norms=(norm,), l1=True, l2=True)
    # lane width 4 < bucket 5: the padded unit must get (and have) zero gradient
    hp = lane(sig, jnp.float64, depth=2, width=4, l1=0.01, l2=0.05, leaky_slope=0.1,
              norm=norm)
    rng = np.random.default_rng(sum(map(ord, task + norm)))
    params = random_params(sig, hp, rng)
    n = 10
    x = rng.normal(scale=1.5, size=(n, 3))
    w = np.ones(n)
    w[-2:] = 0.0
    x[-2:] = 20.0  # padding rows: never seen by the loss nor the batch statistics
    if task == "regression":
        y = rng.normal(size=(n, 2))
    elif task == "binary":
        y = rng.integers(0, 2, n).astype(np.int32)
    elif task == "multiclass":
        y = rng.integers(0, 3, n).astype(np.int32)
    else:
        y = (rng.random((n, 3)) < 0.5).astype(np.float64)
    state = network.init_norm_state(sig)
    if norm == "batch":  # running stats must not matter in training mode
        state = {"mean": jnp.asarray(rng.normal(size=(2, 5))),
                 "var": jnp.asarray(rng.uniform(0.5, 2.0, (2, 5)))}
    return sig, hp, params, state, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)


def _full_loss(sig, params, state, hp, x, y, w):
    logits, _ = network.forward(sig, params, state, hp, x, w, train=True)
    return loss_from_logits(sig.task, logits, y, w) + network.penalty(sig, params, hp)


def _checker(task: str, norm: str):
    if (task, norm) not in _CHECKERS:
        sig, hp, params, state, x, y, w = _grad_problem(task, norm)
        flat, unravel = ravel_pytree(params)

        def loss(v, act):
            return _full_loss(sig, unravel(v), state, hp._replace(activation=act), x, y, w)

        @jax.jit
        def check(v, act):
            grad = jax.grad(loss)(v, act)
            steps = jnp.eye(v.size, dtype=v.dtype) * FD_STEP
            fd = jax.vmap(lambda e: (loss(v + e, act) - loss(v - e, act)) / (2 * FD_STEP))(steps)
            return grad, fd

        _CHECKERS[task, norm] = (check, flat, (sig, hp, params, state, x, w))
    return _CHECKERS[task, norm]


GRAD_CASES = [(t, "none", a) for t in TASKS for a in ACTIVATIONS] + [
    ("multiclass", norm, a) for norm in ("layer", "batch") for a in ACTIVATIONS
]


@pytest.mark.parametrize("task,norm,activation", GRAD_CASES)
def test_gradient_matches_finite_differences(task, norm, activation, monkeypatch):
    act = ACTIVATIONS.index(activation)
    with jax.enable_x64(True):
        check, flat, (sig, hp, params, state, x, w) = _checker(task, norm)
        assert flat.dtype == jnp.float64

        # Finite differences are only valid away from kinks: every pre-activation of a
        # real row and unit must be clear of 0 (relu, leaky_relu, prelu, elu).
        seen = []
        real_activate = network.activate

        def spy(s, z, h, alpha=None):
            seen.append(z)
            return real_activate(s, z, h, alpha)

        monkeypatch.setattr(network, "activate", spy)
        network.forward(sig, params, state, hp._replace(activation=act), x, w, train=True)
        monkeypatch.undo()
        pre = np.concatenate([np.asarray(z)[np.asarray(w) > 0, :4].ravel() for z in seen])
        assert np.min(np.abs(pre)) > 1e-4

        grad, fd = check(flat, jnp.int32(act))
        grad, fd = np.asarray(grad), np.asarray(fd)
    assert grad.dtype == np.float64
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 1e-3  # not vacuous
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_x64_does_not_leak():
    assert not jax.config.jax_enable_x64
    assert jnp.zeros(1).dtype == jnp.float32


REFERENCE_ACTIVATIONS = {
    "identity": lambda z, slope, alpha: z,
    "sigmoid": lambda z, slope, alpha: jax.nn.sigmoid(z),
    "tanh": lambda z, slope, alpha: jnp.tanh(z),
    "relu": lambda z, slope, alpha: jax.nn.relu(z),
    "leaky_relu": lambda z, slope, alpha: jnp.where(z >= 0, z, slope * z),
    "prelu": lambda z, slope, alpha: jnp.where(z >= 0, z, alpha * z),
    "elu": lambda z, slope, alpha: jax.nn.elu(z),
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("choices", ["alone", "all", "neighbours"])
def test_shared_activations_equal_their_textbook_forms(activation, choices):
    # Mixed programs compute activation families once (slope select, sigmoid via tanh);
    # every lane must still get its own activation, whatever the program's choices.
    others = {"alone": (), "all": ACTIVATIONS,
              "neighbours": ("relu", "tanh", "sigmoid", "elu")}[choices]
    names = tuple(a for a in ACTIVATIONS if a == activation or a in others)
    sig = Signature(task="multiclass", n_features=3, n_outputs=2, depth=1, width=5,
                    activations=names)
    hp = lane(sig, depth=1, width=5, activation=activation, leaky_slope=0.07)
    z = jnp.linspace(-9.0, 9.0, 37).reshape(-1, 1) * jnp.ones(5)
    alpha = jnp.asarray([0.1, 0.2, 0.25, 0.3, 0.5])
    want = REFERENCE_ACTIVATIONS[activation](z, 0.07, alpha)
    np.testing.assert_allclose(network.activate(sig, z, hp, alpha), want, rtol=2e-6, atol=2e-7)


# --------------------------------------------------------------------------- sklearn
SK_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "identity"}


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("sk_activation", list(SK_ACTIVATIONS))
def test_forward_matches_sklearn(sk_activation, task, depth):
    rng = np.random.default_rng(depth)
    n, d, units, bucket = 40, 4, 6, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    if task == "regression":
        est = MLPRegressor(hidden_layer_sizes=(units,) * depth, activation=sk_activation,
                           max_iter=20, random_state=0)
        y = x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    else:
        est = MLPClassifier(hidden_layer_sizes=(units,) * depth, activation=sk_activation,
                            max_iter=20, random_state=0)
        y = rng.integers(0, 2 if task == "binary" else 3, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    n_out = est.coefs_[-1].shape[1]

    # Our program is wider (bucket 8 > 6 units) and deeper (2 layers) than sklearn's
    # depth-1 net; padded units and the absent layer hold garbage that must not matter.
    sig = Signature(task=task, n_features=d, n_outputs=n_out, depth=2, width=bucket,
                    activations=(SK_ACTIVATIONS[sk_activation],))
    hp = lane(sig, depth=depth, width=units, activation=SK_ACTIVATIONS[sk_activation])
    hidden = []
    for k in range(2):
        w = rng.normal(size=(d if k == 0 else bucket, bucket))
        b = rng.normal(size=bucket)
        if k < depth:
            w[: est.coefs_[k].shape[0], :units] = est.coefs_[k]
            b[:units] = est.intercepts_[k]
        hidden.append({"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)})
    w_out = rng.normal(size=(bucket, n_out))
    w_out[:units] = est.coefs_[-1]
    params = {"hidden": hidden, "out": {"w": jnp.asarray(w_out, jnp.float32),
                                        "b": jnp.asarray(est.intercepts_[-1], jnp.float32)}}
    logits, _ = network.forward(sig, params, {}, hp, jnp.asarray(x))
    logits = np.asarray(logits, np.float64)
    if task == "binary":
        ours, theirs = expit(logits[:, 0]), est.predict_proba(x)[:, 1]
    elif task == "multiclass":
        ours, theirs = softmax(logits, axis=1), est.predict_proba(x)
    else:
        ours, theirs = logits[:, 0], est.predict(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- init
INIT_VARIANCE = {
    "gaussian": lambda fan_in, fan_out, scale: scale**2,
    "xavier_normal": lambda fan_in, fan_out, scale: 2.0 / (fan_in + fan_out),
    "xavier_uniform": lambda fan_in, fan_out, scale: 2.0 / (fan_in + fan_out),
    "kaiming_normal": lambda fan_in, fan_out, scale: 2.0 / fan_in,
    "kaiming_uniform": lambda fan_in, fan_out, scale: 2.0 / fan_in,
    "glorot_uniform": lambda fan_in, fan_out, scale: 2.0 / (fan_in + fan_out),
}
INIT_SIG = Signature(task="regression", n_features=300, n_outputs=64, depth=3, width=512,
                     activations=("prelu",), norms=("layer",), inits=INITS)
INIT_WIDTH, INIT_DEPTH, INIT_SCALE = 400, 2, 0.05
_init_jit = jax.jit(network.init_params, static_argnums=0)


@pytest.mark.parametrize("scheme", INITS)
def test_init_variance_and_padding(scheme):
    hp = lane(INIT_SIG, width=INIT_WIDTH, depth=INIT_DEPTH, init=scheme,
              init_scale=INIT_SCALE, activation="prelu", norm="layer")
    params = jax.tree_util.tree_map(np.asarray, _init_jit(INIT_SIG, hp, jax.random.key(0)))
    h0, h1, h2 = params["hidden"]
    u, d, k = INIT_WIDTH, INIT_SIG.n_features, INIT_SIG.n_outputs
    real = [(h0["w"][:, :u], d, u), (h1["w"][:u, :u], u, u), (params["out"]["w"][:u], u, k)]
    biases = [h0["b"][:u], h1["b"][:u], params["out"]["b"]]
    for (w, fan_in, fan_out), b in zip(real, biases):
        if scheme == "glorot_uniform":  # biases drawn like the weights (scikit-learn's)
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            assert np.abs(b).max() <= bound * (1 + 1e-6) and b.std() > 0.4 * bound
        else:
            assert np.all(b == 0)
        var = INIT_VARIANCE[scheme](fan_in, fan_out, INIT_SCALE)
        assert abs(w.mean()) < 5 * np.sqrt(var / w.size)
        np.testing.assert_allclose(w.var(), var, rtol=0.05)
        excess_kurtosis = np.mean((w - w.mean()) ** 4) / w.var() ** 2 - 3
        if scheme.endswith("uniform"):
            bound = np.sqrt(3 * var)
            assert np.abs(w).max() <= bound * (1 + 1e-6)
            assert np.abs(w).max() > 0.99 * bound
            assert excess_kurtosis == pytest.approx(-1.2, abs=0.1)
        else:
            assert excess_kurtosis == pytest.approx(0.0, abs=0.2)
    # padded units and the absent third layer are exactly zero
    assert np.all(h0["w"][:, u:] == 0)
    assert np.all(h1["w"][u:] == 0) and np.all(h1["w"][:, u:] == 0)
    assert np.all(h2["w"] == 0)
    assert np.all(params["out"]["w"][u:] == 0)
    for k, layer in enumerate(params["hidden"]):
        real_units = u if k < INIT_DEPTH else 0  # padded units and absent layers: 0
        assert np.all(layer["b"][real_units:] == 0) and np.all(layer["beta"] == 0)
        assert np.all(layer["gamma"] == 1)
        assert np.all(layer["alpha"] == network.PRELU_INIT)


def test_init_is_prefix_stable_across_width_buckets():
    """A lane's real weights do not depend on the bucket that pads it (wider, deeper,
    other init schemes beside its own): a trial gives the same results in any batch."""
    alone = Signature(task="regression", n_features=300, n_outputs=64, depth=2,
                      width=INIT_WIDTH, activations=("prelu",), norms=("layer",),
                      inits=("xavier_uniform",))
    key = jax.random.key(11)
    params = dict(width=INIT_WIDTH, depth=2, init="xavier_uniform", activation="prelu",
                  norm="layer")
    a = _init_jit(alone, lane(alone, **params), key)
    b = _init_jit(INIT_SIG, lane(INIT_SIG, **params), key)
    for la, lb in zip(a["hidden"], b["hidden"]):
        np.testing.assert_array_equal(la["w"], np.asarray(lb["w"])[: la["w"].shape[0], :INIT_WIDTH])
    np.testing.assert_array_equal(a["out"]["w"], np.asarray(b["out"]["w"])[:INIT_WIDTH])


# --------------------------------------------------------------------------- dropout
DROP_SIG = Signature(task="regression", n_features=256, n_outputs=256, depth=1, width=256,
                     activations=("identity",), dropout=True)


def _identity_params(sig):
    """Hidden and output layers are the identity: logits = dropout(x)."""
    eye = jnp.eye(sig.width)
    return {"hidden": [{"w": eye, "b": jnp.zeros(sig.width)}],
            "out": {"w": eye, "b": jnp.zeros(sig.width)}}


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_keeps_and_rescales(rate):
    hp = lane(DROP_SIG, width=256, activation="identity", dropout=rate)
    params = _identity_params(DROP_SIG)
    x = jnp.ones((64, 256))
    out, _ = network.forward(DROP_SIG, params, {}, hp, x, train=True, key=jax.random.key(0))
    out = np.asarray(out)
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    n = out.size
    assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)  # mean preserved
    again, _ = network.forward(DROP_SIG, params, {}, hp, x, train=True, key=jax.random.key(0))
    np.testing.assert_array_equal(out, again)
    other, _ = network.forward(DROP_SIG, params, {}, hp, x, train=True, key=jax.random.key(1))
    assert np.any(np.asarray(other) != out)


def test_dropout_off_at_evaluation():
    sig = Signature(task="multiclass", n_features=6, n_outputs=3, depth=2, width=16,
                    activations=("relu",), dropout=True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(20, 6)), jnp.float32)
    hp_drop = lane(sig, width=16, depth=2, dropout=0.5)
    hp_none = lane(sig, width=16, depth=2, dropout=0.0)
    params = random_params(sig, hp_drop, np.random.default_rng(1), scale=0.5)
    a, _ = network.forward(sig, params, {}, hp_drop, x)
    b, _ = network.forward(sig, params, {}, hp_drop, x)
    c, _ = network.forward(sig, params, {}, hp_none, x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # and it is on in training
    t, _ = network.forward(sig, params, {}, hp_drop, x, train=True, key=jax.random.key(0))
    assert np.any(np.asarray(t) != np.asarray(a))


# --------------------------------------------------------------------------- batch norm
BN_SIG = Signature(task="regression", n_features=4, n_outputs=2, depth=1, width=6,
                   activations=("tanh",), norms=("batch",))


def _bn_setup():
    rng = np.random.default_rng(5)
    hp = lane(BN_SIG, width=6, depth=1, activation="tanh", norm="batch")
    params = random_params(BN_SIG, hp, rng)
    state = {"mean": jnp.asarray(rng.normal(size=(1, 6)), jnp.float32),
             "var": jnp.asarray(rng.uniform(0.5, 2.0, (1, 6)), jnp.float32)}
    x = jnp.asarray(rng.normal(loc=1.0, scale=2.0, size=(16, 4)), jnp.float32)
    return hp, params, state, x


def test_batch_norm_eval_uses_running_statistics():
    hp, params, state, x = _bn_setup()
    full, new_state = network.forward(BN_SIG, params, state, hp, x)
    assert new_state is state or all(
        np.array_equal(new_state[k], state[k]) for k in state)
    # a row's output does not depend on the rest of the batch
    mixed = jnp.concatenate([x[:3], 5.0 * x[8:] + 3.0])
    part, _ = network.forward(BN_SIG, params, state, hp, mixed)
    np.testing.assert_allclose(part[:3], full[:3], rtol=1e-6, atol=1e-6)
    # and equals the closed form with the running statistics (a bias before batch norm
    # is cancelled by the batch mean in training, so it is left out altogether)
    layer = params["hidden"][0]
    z = (x @ layer["w"] - state["mean"][0]) / jnp.sqrt(state["var"][0] + network.NORM_EPS)
    h = jnp.tanh(z * layer["gamma"] + layer["beta"])
    np.testing.assert_allclose(full, h @ params["out"]["w"] + params["out"]["b"],
                               rtol=1e-5, atol=1e-5)
    # whereas training mode normalises with the batch's own statistics
    t_full, _ = network.forward(BN_SIG, params, state, hp, x, train=True)
    t_part, _ = network.forward(BN_SIG, params, state, hp, mixed, train=True)
    assert not np.allclose(t_part[:3], t_full[:3], atol=1e-3)


def test_batch_norm_running_statistics_move_toward_batch():
    hp, params, state, x = _bn_setup()
    w = np.ones(16, np.float32)
    w[12:] = 0.0
    x = x.at[12:].set(1e3)  # padding rows with garbage: ignored by the statistics
    _, new = network.forward(BN_SIG, params, state, hp, x, jnp.asarray(w), train=True)
    layer = params["hidden"][0]
    z = np.asarray(x @ layer["w"])[:12]
    mean, var = z.mean(axis=0), z.var(axis=0)
    m = network.BN_MOMENTUM
    np.testing.assert_allclose(new["mean"][0], m * state["mean"][0] + (1 - m) * mean, rtol=1e-5)
    np.testing.assert_allclose(new["var"][0], m * state["var"][0] + (1 - m) * var, rtol=1e-5)
    assert np.all(np.abs(new["mean"][0] - mean) < np.abs(state["mean"][0] - mean))
    # an all-padding batch leaves them alone
    _, same = network.forward(BN_SIG, params, state, hp, x, jnp.zeros(16), train=True)
    np.testing.assert_array_equal(same["mean"], state["mean"])
    np.testing.assert_array_equal(same["var"], state["var"])


def test_layer_norm_ignores_padded_units():
    """A lane of width 3 gives the same logits in a width-3 and a width-8 program."""
    rng = np.random.default_rng(8)
    small = Signature(task="binary", n_features=4, n_outputs=1, depth=1, width=3,
                      activations=("elu",), norms=("layer",))
    wide = Signature(task="binary", n_features=4, n_outputs=1, depth=1, width=8,
                     activations=("elu",), norms=("layer",))
    x = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    pw = {"hidden": [{"w": rng.normal(size=(4, 8)), "b": rng.normal(size=8),
                      "gamma": rng.uniform(0.5, 2, 8), "beta": rng.normal(size=8)}],
          "out": {"w": rng.normal(size=(8, 1)), "b": rng.normal(size=1)}}
    pw = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), pw)
    ps = {"hidden": [{k: v[..., :3] for k, v in pw["hidden"][0].items()}],
          "out": {"w": pw["out"]["w"][:3], "b": pw["out"]["b"]}}
    a, _ = network.forward(small, ps, {}, lane(small, width=3, activation="elu", norm="layer"), x)
    b, _ = network.forward(wide, pw, {}, lane(wide, width=3, activation="elu", norm="layer"), x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- masks
MASK_SIG = Signature(task="multiclass", n_features=5, n_outputs=3, depth=3, width=6,
                     activations=("relu",), l1=True, l2=True)


def test_weight_masks():
    hp = lane(MASK_SIG, width=4, depth=2)
    masks = jax.tree_util.tree_map(np.asarray, network.weight_masks(MASK_SIG, hp))
    expected0 = np.zeros((5, 6)); expected0[:, :4] = 1
    expected1 = np.zeros((6, 6)); expected1[:4, :4] = 1
    expected_out = np.zeros((6, 3)); expected_out[:4] = 1
    np.testing.assert_array_equal(masks["hidden"][0], expected0)
    np.testing.assert_array_equal(masks["hidden"][1], expected1)
    np.testing.assert_array_equal(masks["hidden"][2], np.zeros((6, 6)))  # absent layer
    np.testing.assert_array_equal(masks["out"], expected_out)
    linear = Signature(task="binary", n_features=5, n_outputs=1, depth=0, width=1)
    lin_masks = network.weight_masks(linear, lane(linear, depth=0, width=1))
    assert lin_masks["hidden"] == []
    np.testing.assert_array_equal(lin_masks["out"], np.ones((5, 1)))


@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.3), (0.05, 0.2)])
def test_penalty_counts_real_weights_only(l1, l2):
    """Padded and absent weights are zero (as init leaves them): the penalty is that of
    the real weights, its gradient there is exactly 0 (so they stay 0), biases are free."""
    hp = lane(MASK_SIG, width=4, depth=2, l1=l1, l2=l2)
    rng = np.random.default_rng(1)
    masks = network.weight_masks(MASK_SIG, hp)
    params = {"hidden": [{"w": jnp.asarray(rng.normal(size=m.shape) * np.asarray(m), jnp.float32),
                          "b": jnp.asarray(rng.normal(size=6), jnp.float32)}
                         for m in masks["hidden"]],
              "out": {"w": jnp.asarray(rng.normal(size=(6, 3)) * np.asarray(masks["out"]),
                                       jnp.float32),
                      "b": jnp.asarray(rng.normal(size=3), jnp.float32)}}
    real = [np.asarray(params["hidden"][0]["w"])[:, :4],
            np.asarray(params["hidden"][1]["w"])[:4, :4],
            np.asarray(params["out"]["w"])[:4]]
    expected = l1 * sum(np.abs(w).sum() for w in real) + 0.5 * l2 * sum((w**2).sum() for w in real)
    np.testing.assert_allclose(network.penalty(MASK_SIG, params, hp), expected, rtol=1e-5)
    g = jax.grad(lambda q: network.penalty(MASK_SIG, q, hp))(params)
    for gw, w, m in zip([layer["w"] for layer in g["hidden"]] + [g["out"]["w"]],
                        [layer["w"] for layer in params["hidden"]] + [params["out"]["w"]],
                        masks["hidden"] + [masks["out"]]):
        gw, w, m = np.asarray(gw), np.asarray(w), np.asarray(m)
        assert np.all(gw[m == 0] == 0)
        np.testing.assert_allclose(gw[m == 1], (l1 * np.sign(w) + l2 * w)[m == 1], rtol=1e-6)
    for layer in g["hidden"] + [g["out"]]:
        assert np.all(np.asarray(layer["b"]) == 0)


def test_penalty_left_out_when_no_lane_uses_it():
    sig = Signature(task="multiclass", n_features=5, n_outputs=3, depth=1, width=6)
    hp = lane(sig, width=6, depth=1, l1=0.5, l2=0.5)
    params = random_params(sig, hp, np.random.default_rng(0))
    assert float(network.penalty(sig, params, hp)) == 0.0
