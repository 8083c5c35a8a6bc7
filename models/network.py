"""The MLP of one lane: parameters, initialisation and the forward pass.

Shapes are those of the program (``Signature``): ``depth`` hidden layers of ``width``
units. A lane whose own width or depth is smaller uses a unit mask and passes through
the extra layers; its padded weights start at zero, get zero gradient and so stay zero.

Parameters (a pytree):
    {"hidden": [ {"w": [d_in, W], "b": [W], "gamma"/"beta": [W] (norm), "alpha": [W] (prelu)}, ... ],
     "out": {"w": [W or n_features, n_outputs], "b": [n_outputs]}}
Batch-norm running statistics live apart, in ``norm_state = {"mean": [D, W], "var": [D, W]}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.hparams import Signature

PRELU_INIT = 0.25
NORM_EPS = 1e-5
BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch (PyTorch's convention)


# --------------------------------------------------------------------------- masks
def unit_mask(sig: Signature, width) -> jax.Array:
    """float [W]: 1 for the lane's real hidden units."""
    return (jnp.arange(sig.width) < width).astype(jnp.float32)


def layer_active(k: int, depth) -> jax.Array:
    """Whether hidden layer ``k`` exists for a lane of depth ``depth`` (traced)."""
    return k < depth


def weight_masks(sig: Signature, hp) -> dict:
    """0/1 masks shaped like the weight matrices: real connections of this lane."""
    units = unit_mask(sig, hp.width)
    hidden = []
    for k in range(sig.depth):
        rows = jnp.ones(sig.n_features) if k == 0 else units
        live = layer_active(k, hp.depth).astype(jnp.float32)
        hidden.append(jnp.outer(rows, units) * live)
    rows = units if sig.depth else jnp.ones(sig.n_features)
    return {"hidden": hidden, "out": jnp.outer(rows, jnp.ones(sig.n_outputs))}


def penalty(sig: Signature, params: dict, hp) -> jax.Array:
    """l1 * sum|W| + 0.5 * l2 * sum W^2 over the weight matrices (biases excluded).

    Padded and absent weights are exactly zero and must stay so. |w| is written as
    sign(w) * w, whose gradient is sign(w): 0 at w = 0 (jax's own d|w|/dw there is 1,
    which would push padded weights away from zero).
    """
    weights = [layer["w"] for layer in params["hidden"]] + [params["out"]["w"]]
    total = jnp.float32(0.0)
    if sig.l1:
        total += hp.l1 * sum(jnp.sum(jax.lax.stop_gradient(jnp.sign(w)) * w) for w in weights)
    if sig.l2:
        total += 0.5 * hp.l2 * sum(jnp.sum(jnp.square(w)) for w in weights)
    return total


# --------------------------------------------------------------------------- init
def _init_std_and_bound(sig: Signature, hp, fan_in, fan_out):
    """Per-scheme (normal std, uniform bound); the lane's scheme is selected by id."""
    stds, uniform = [], []
    for scheme in sig.inits:
        if scheme == "gaussian":
            stds.append(hp.init_scale); uniform.append(False)
        elif scheme == "xavier_normal":
            stds.append(jnp.sqrt(2.0 / (fan_in + fan_out))); uniform.append(False)
        elif scheme in ("xavier_uniform", "glorot_uniform"):
            stds.append(jnp.sqrt(6.0 / (fan_in + fan_out))); uniform.append(True)
        elif scheme == "kaiming_normal":
            stds.append(jnp.sqrt(2.0 / fan_in)); uniform.append(False)
        else:  # kaiming_uniform
            stds.append(jnp.sqrt(6.0 / fan_in)); uniform.append(True)
    ids = jnp.arange(len(sig.inits))
    scale = jnp.sum(jnp.where(ids == hp.init, jnp.stack(stds), 0.0))
    is_uniform = jnp.any((ids == hp.init) & jnp.asarray(uniform))
    return scale, is_uniform


def _init_matrix(key, sig: Signature, hp, d_in: int, d_out: int, fan_in, fan_out):
    """[d_in, d_out] weights drawn column by column.

    Each output unit has its own key and draws a 1-D vector, and jax's partitionable
    threefry makes a 1-D draw prefix-stable: a lane's real weights are the same whatever
    bucket width pads them, so results do not depend on the batch a trial ran in.
    """
    scale, is_uniform = _init_std_and_bound(sig, hp, fan_in, fan_out)
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(d_out))
    normal = jax.vmap(lambda k: jax.random.normal(k, (d_in,)))(keys).T
    unif = jax.vmap(lambda k: jax.random.uniform(k, (d_in,), minval=-1.0, maxval=1.0))(keys).T
    return jnp.where(is_uniform, unif, normal) * scale


def _init_bias(key, sig: Signature, hp, d_out: int, fan_in, fan_out):
    """[d_out] biases: for glorot_uniform U(+-sqrt(6 / (fan_in + fan_out))), the
    weights' bound (as scikit-learn's MLP), else 0. One 1-D draw: prefix-stable across
    bucket widths."""
    if "glorot_uniform" not in sig.inits:
        return jnp.zeros(d_out)
    bound, _ = _init_std_and_bound(sig, hp, fan_in, fan_out)
    u = jax.random.uniform(jax.random.fold_in(key, 2**30), (d_out,), minval=-1.0, maxval=1.0)
    return jnp.where(hp.init == sig.inits.index("glorot_uniform"), u * bound, 0.0)


def init_params(sig: Signature, hp, key) -> dict:
    """Initial parameters of one lane; padded units and absent layers are zero."""
    masks = weight_masks(sig, hp)
    width = hp.width.astype(jnp.float32)
    hidden = []
    for k in range(sig.depth):
        d_in = sig.n_features if k == 0 else sig.width
        fan_in = jnp.float32(sig.n_features) if k == 0 else width
        w = _init_matrix(jax.random.fold_in(key, k), sig, hp, d_in, sig.width, fan_in, width)
        b = _init_bias(jax.random.fold_in(key, k), sig, hp, sig.width, fan_in, width)
        # batch norm cancels a hidden bias: it stays 0 (forward)
        b = b * unit_mask(sig, hp.width) * layer_active(k, hp.depth) \
            * (1.0 - _uses(sig, hp, "batch"))
        layer = {"w": w * masks["hidden"][k], "b": b}
        if any(n != "none" for n in sig.norms):
            layer["gamma"] = jnp.ones(sig.width)
            layer["beta"] = jnp.zeros(sig.width)
        if "prelu" in sig.activations:
            layer["alpha"] = jnp.full(sig.width, PRELU_INIT)
        hidden.append(layer)
    d_in = sig.width if sig.depth else sig.n_features
    fan_in = width if sig.depth else jnp.float32(sig.n_features)
    # The output layer's key follows the lane's own depth, not the program's, so a lane
    # draws the same weights whatever deeper bucket it runs in.
    w_out = _init_matrix(jax.random.fold_in(key, hp.depth), sig, hp, d_in, sig.n_outputs,
                         fan_in, jnp.float32(sig.n_outputs))
    b_out = _init_bias(jax.random.fold_in(key, hp.depth), sig, hp, sig.n_outputs,
                       fan_in, jnp.float32(sig.n_outputs))
    return {"hidden": hidden, "out": {"w": w_out * masks["out"], "b": b_out}}


def init_norm_state(sig: Signature) -> dict:
    if "batch" not in sig.norms:
        return {}
    return {"mean": jnp.zeros((sig.depth, sig.width)), "var": jnp.ones((sig.depth, sig.width))}


# --------------------------------------------------------------------------- activations
# A program whose lanes mix activations computes each family once for every lane and
# selects per lane, so activations that can share one computation are written as one:
# the piecewise-linear ones are where(z > 0, z, slope * z) with a per-lane slope, and
# sigmoid is (1 + tanh(z / 2)) / 2, which shares tanh's transcendental pass (and is the
# same formula in every program, so a sigmoid lane gives the same numbers whatever
# activations its neighbours use).
_PIECEWISE_LINEAR = ("identity", "relu", "leaky_relu", "prelu")
_TANH_FORM = {"tanh": (1.0, 1.0, 0.0), "sigmoid": (0.5, 0.5, 0.5)}  # inner, scale, shift


def _lane_value(sig: Signature, hp, names: tuple[str, ...], values: dict):
    """``values[name]`` of the lane's activation among ``names`` (per-lane select)."""
    out = values[names[0]]
    for name in names[1:]:
        out = jnp.where(hp.activation == sig.activations.index(name), values[name], out)
    return out


def _piecewise_linear(sig: Signature, z, hp, alpha, names):
    if names == ("identity",):
        return z
    slopes = {"identity": 1.0, "relu": 0.0, "leaky_relu": hp.leaky_slope, "prelu": alpha}
    return jnp.where(z > 0, z, _lane_value(sig, hp, names, slopes) * z)


def _tanh_form(sig: Signature, z, hp, names):
    inner, scale, shift = (
        _lane_value(sig, hp, names, {n: jnp.float32(_TANH_FORM[n][i]) for n in names})
        for i in range(3))
    return jnp.tanh(z * inner) * scale + shift


def activate(sig: Signature, z, hp, alpha=None):
    """The lane's activation, chosen by ``hp.activation`` among ``sig.activations``."""
    families = {}
    linear = tuple(n for n in sig.activations if n in _PIECEWISE_LINEAR)
    tanh_like = tuple(n for n in sig.activations if n in _TANH_FORM)
    if linear:
        families[linear] = _piecewise_linear(sig, z, hp, alpha, linear)
    if tanh_like:
        families[tanh_like] = _tanh_form(sig, z, hp, tanh_like)
    if "elu" in sig.activations:
        families[("elu",)] = jax.nn.elu(z)
    unknown = set(sig.activations) - {n for names in families for n in names}
    if unknown:
        raise ValueError(f"unknown activation {sorted(unknown)[0]!r}")
    groups = list(families.items())
    out = groups[0][1]
    for names, value in groups[1:]:
        member = jnp.any(jnp.asarray([hp.activation == sig.activations.index(n) for n in names]))
        out = jnp.where(member, value, out)
    return out


# --------------------------------------------------------------------------- forward
@jax.custom_vjp
def dense(x, w):
    """``x @ w`` whose weight gradient is formed as ``x.T @ g``, in ``w``'s own [in, out]
    order. JAX's rule forms ``g.T @ x`` and transposes it; vmapped over trials that read
    the rows x that all trials share, the result is a [trials * out, in] matrix, and every
    optimizer pass over the weights would then read it across its rows (slow strided
    reads). Here it comes out [in, trials * out]: rows of ``out`` contiguous values."""
    return x @ w


def _dense_fwd(x, w):
    return x @ w, (x, w)


def _dense_bwd(residuals, g):
    x, w = residuals
    return g @ w.T, x.T @ g


dense.defvjp(_dense_fwd, _dense_bwd)


def _batch_norm(z, row_w, running_mean, running_var, train: bool):
    if not train:
        return (z - running_mean) / jnp.sqrt(running_var + NORM_EPS), running_mean, running_var
    n = jnp.sum(row_w)
    denom = jnp.maximum(n, 1.0)
    mean = jnp.sum(z * row_w[:, None], axis=0) / denom
    var = jnp.sum(jnp.square(z - mean) * row_w[:, None], axis=0) / denom
    # A batch made only of padding leaves the running statistics alone.
    has_rows = n > 0
    new_mean = jnp.where(has_rows, BN_MOMENTUM * running_mean + (1 - BN_MOMENTUM) * mean,
                         running_mean)
    new_var = jnp.where(has_rows, BN_MOMENTUM * running_var + (1 - BN_MOMENTUM) * var,
                        running_var)
    return (z - mean) / jnp.sqrt(var + NORM_EPS), new_mean, new_var


def _layer_norm(z, units):
    count = jnp.maximum(jnp.sum(units), 1.0)
    mean = jnp.sum(z * units, axis=-1, keepdims=True) / count
    var = jnp.sum(jnp.square(z - mean) * units, axis=-1, keepdims=True) / count
    return (z - mean) / jnp.sqrt(var + NORM_EPS)


def _uses(sig: Signature, hp, norm: str):
    """1.0 when the lane's normalisation is ``norm`` (0.0 when the program has none)."""
    if norm not in sig.norms:
        return jnp.float32(0.0)
    return (hp.norm == sig.norms.index(norm)).astype(jnp.float32)


def _lane_norm(sig: Signature, hp, normed: dict):
    """The lane's normalised pre-activations among those the program computes."""
    out = normed["none"]
    for name, value in normed.items():
        if name != "none":
            out = jnp.where(hp.norm == sig.norms.index(name), value, out)
    return out


def forward(sig: Signature, params: dict, norm_state: dict, hp, x, row_w=None,
            *, train: bool = False, key=None):
    """Logits [B, n_outputs] for rows ``x`` [B, n_features] of one lane.

    ``row_w`` [B] marks real rows (batch-norm statistics ignore padding). With
    ``train=True`` dropout is on (needs ``key``) and batch norm uses batch statistics;
    returns ``(logits, new_norm_state)``.
    """
    if row_w is None:
        row_w = jnp.ones(x.shape[0])
    units = unit_mask(sig, hp.width)
    means, vars_ = [], []
    h = x
    for k, layer in enumerate(params["hidden"]):
        z = dense(h, layer["w"])
        # Batch norm subtracts the batch mean, which cancels a bias before it: its exact
        # gradient is 0, and adding it would only feed rounding noise to adaptive
        # optimizers (adam normalises noise into full-size steps that shift the running
        # mean, so evaluation would depend on the batch a trial ran in). It stays 0.
        z = z + layer["b"] * (1.0 - _uses(sig, hp, "batch"))
        normed = {"none": z}
        if "batch" in sig.norms:
            normed["batch"], m, v = _batch_norm(z, row_w, norm_state["mean"][k],
                                                norm_state["var"][k], train)
            means.append(m); vars_.append(v)
        if "layer" in sig.norms:
            normed["layer"] = _layer_norm(z, units)
        if sig.norms == ("none",):
            pass
        elif len(sig.norms) == 1:  # every lane normalises alike: no select
            z = normed[sig.norms[0]] * layer["gamma"] + layer["beta"]
        else:  # the lane's normalisation, then its scale and shift
            z = _lane_norm(sig, hp, normed)
            z = jnp.where(_uses(sig, hp, "none") > 0, z, z * layer["gamma"] + layer["beta"])
        a = activate(sig, z, hp, layer.get("alpha")) * units
        if train and sig.dropout:
            a = _dropout(jax.random.fold_in(key, k), a, hp.dropout)
        # Layers past the lane's depth pass their input through unchanged.
        h = a if k == 0 else jnp.where(layer_active(k, hp.depth), a, h)
    logits = h @ params["out"]["w"] + params["out"]["b"]
    new_state = {"mean": jnp.stack(means), "var": jnp.stack(vars_)} if means else norm_state
    return logits, new_state


def _dropout(key, a, rate):
    """Inverted dropout. The mask is drawn as [W, B] and transposed so that a unit's
    mask does not depend on the bucket width (1-D prefix stability, as for init)."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (a.shape[1], a.shape[0])).T
    return jnp.where(mask, a / keep, 0.0)
