"""models.train: batch invariance, padding, divergence, masking and compilation reuse.

Compilations dominate the run time, so the programs are few and module-scoped: one
probe trial alone, the same trial among 16 lanes of one shape (reused by the
divergence, no-recompilation and padding-row tests), the 16 lanes on more padded rows,
and the trial in a wider/deeper bucket. Every lane uses batch norm, so the invariances
also cover its batch statistics.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from models import ProgramCache, network
from models.folds import stack_folds
from models.hparams import LaneHparams, TrialConfig, lane_hparams, signature_for

RNG = np.random.default_rng(0)
X = RNG.normal(size=(61, 5)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.4 + 0.3 * RNG.normal(size=61) > 0).astype(np.int32)
# unequal folds (40/21 and 45/16 rows): the smaller one is padded even when minimal
RAW_FOLDS = [(X[:40], Y[:40], X[40:], Y[40:]), (X[16:], Y[16:], X[:16], Y[:16])]
FOLDS = stack_folds(RAW_FOLDS)
PROGRAMS = ProgramCache()  # one cache for the module: counts its own compilations

PROBE = dict(depth=1, width=8, activation="tanh", norm="batch", optimizer="adam",
             batch_size=16, epochs=4, learning_rate=0.02, dropout=0.2, l2=1e-3)
PROBE_TRIAL, PROBE_SLOT = 7, 5
# The probe's 15 neighbours share its shapes but differ in everything that is traced.
OTHERS = [
    dict(optimizer="sgd", learning_rate=0.05, activation="relu"),
    dict(optimizer="momentum", learning_rate=0.01, momentum=0.8, activation="prelu"),
    dict(optimizer="sgd", learning_rate=0.1, activation="relu", l1=1e-3),  # slot 2
    dict(optimizer="adamw", learning_rate=0.005, weight_decay=0.01, activation="elu"),
    dict(optimizer="rmsprop", learning_rate=0.003, dropout=0.0, activation="tanh"),
    dict(optimizer="adam", learning_rate=0.05, dropout=0.5, init="xavier_normal"),
    dict(optimizer="adam", learning_rate=0.01, schedule="cosine", activation="prelu"),
    dict(optimizer="sgd", learning_rate=0.2, clip_norm=0.5, activation="relu"),
    dict(optimizer="momentum", learning_rate=0.02, init="gaussian", init_scale=0.3),
    dict(optimizer="adam", learning_rate=1e-3, beta1=0.5, activation="elu"),
    dict(optimizer="rmsprop", learning_rate=0.01, rho=0.8, dropout=0.1),
    dict(optimizer="adamw", learning_rate=0.02, schedule="cosine", activation="prelu"),
    dict(optimizer="sgd", learning_rate=0.3, l2=0.01),
    dict(optimizer="adam", learning_rate=0.1, eps=1e-4, activation="relu"),
    dict(optimizer="momentum", learning_rate=0.05, init="xavier_uniform"),
]
DIVERGE_SLOT = 2
# In the padded program the neighbours are wider and deeper; a few stay narrow so that
# masking is exercised under l1, weight decay and prelu too.
PADDED_OTHERS = [
    {**o, "width": 16, "depth": 2, "epochs": 6} if i % 3 else {**o, "width": 5, "depth": 1}
    for i, o in enumerate(OTHERS)
]
PADDED_SLOT = 11


def configs_for(others, slot, trial_offset=0, **probe_changes):
    configs = [TrialConfig.from_dict({**PROBE, **o}, trial=100 + i + trial_offset)
               for i, o in enumerate(others)]
    configs.insert(slot, TrialConfig.from_dict({**PROBE, **probe_changes}, trial=PROBE_TRIAL))
    return configs


def run(configs, folds=FOLDS, task="binary", n_outputs=1, seed=0):
    sig = signature_for(configs, task, folds.n_features, n_outputs, folds.n_train)
    result = PROGRAMS.fit(sig, lane_hparams(configs, sig), folds, seed=seed)
    return sig, jax.tree_util.tree_map(np.asarray, result)


def curves(result, i, epochs=None):
    """Every per-epoch curve of lane i: {name: [F, E]}."""
    out = {"train_loss": result.train_loss[i], "val_loss": result.val_loss[i],
           **{f"val_{k}": v[i] for k, v in result.val_metrics.items()}}
    return {k: v[:, :epochs] for k, v in out.items()}


def assert_curves_close(a, b, rtol, atol=1e-7):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def alone():
    return run([TrialConfig.from_dict(PROBE, trial=PROBE_TRIAL)])


@pytest.fixture(scope="module")
def batch16():
    configs = configs_for(OTHERS, PROBE_SLOT)
    assert len(configs) == 16
    return (configs, *run(configs))


@pytest.fixture(scope="module")
def padded():
    """The probe among wider and deeper lanes; also counts the compilation it causes."""
    configs = configs_for(PADDED_OTHERS, PADDED_SLOT)
    before = PROGRAMS.stats.snapshot()
    sig, result = run(configs)
    return configs, sig, result, before, PROGRAMS.stats.snapshot()


# --------------------------------------------------------------------------- invariance
def test_curves_do_not_depend_on_the_batch(alone, batch16):
    sig1, r1 = alone
    _, sig16, r16 = batch16
    assert r1.train_loss.shape == (1, 2, 4) and r16.train_loss.shape == (16, 2, 4)
    assert len(sig16.activations) > 1 and len(sig1.activations) == 1
    assert_curves_close(curves(r1, 0), curves(r16, PROBE_SLOT), rtol=1e-5)
    np.testing.assert_array_equal(r1.diverged_epoch[0], r16.diverged_epoch[PROBE_SLOT])
    for name in ("w", "gamma", "beta"):
        np.testing.assert_allclose(r1.params["hidden"][0][name][0],
                                   r16.params["hidden"][0][name][PROBE_SLOT], rtol=1e-5, atol=1e-7)
    for k in ("mean", "var"):
        np.testing.assert_allclose(r1.norm_state[k][0], r16.norm_state[k][PROBE_SLOT],
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r1.params["out"]["w"][0], r16.params["out"]["w"][PROBE_SLOT],
                               rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(r16.train_loss)) and np.all(r16.diverged_epoch == -1)


def test_curves_do_not_depend_on_width_and_depth_padding(alone, padded):
    _, r1 = alone
    configs, sig, r, _, _ = padded
    assert (sig.width, sig.depth, r.train_loss.shape[-1]) == (16, 2, 6)
    assert_curves_close(curves(r1, 0), curves(r, PADDED_SLOT, epochs=4), rtol=1e-4, atol=1e-6)
    w_alone = r1.params["hidden"][0]["w"][0]
    np.testing.assert_allclose(r.params["hidden"][0]["w"][PADDED_SLOT][..., :8], w_alone,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.params["out"]["w"][PADDED_SLOT][:, :8],
                               r1.params["out"]["w"][0], rtol=1e-4, atol=1e-6)
    for k in ("mean", "var"):  # the first layer's batch-norm statistics of real units
        np.testing.assert_allclose(r.norm_state[k][PADDED_SLOT][:, 0, :8],
                                   r1.norm_state[k][0][:, 0], rtol=1e-4, atol=1e-6)


def test_lanes_freeze_after_their_epochs(padded):
    """The probe has 4 of the program's 6 epochs: its validation curve then stays put."""
    configs, _, r, _, _ = padded
    val = r.val_loss[PADDED_SLOT]
    np.testing.assert_array_equal(val[:, 4:], val[:, 3:4].repeat(2, axis=1))
    for m in r.val_metrics.values():
        m = m[PADDED_SLOT]
        np.testing.assert_array_equal(m[:, 4:], m[:, 3:4].repeat(2, axis=1))
    six = next(i for i, c in enumerate(configs) if c.epochs == 6)
    assert np.all(r.val_loss[six][:, 5] != r.val_loss[six][:, 4])  # a 6-epoch lane moves on


def test_padded_weights_stay_zero(padded):
    """Padded units and absent layers end training exactly as init left them, under
    every optimizer, l1/l2, weight decay and prelu; prelu slopes of real units train."""
    configs, sig, r, _, _ = padded
    hp = lane_hparams(configs, sig)
    for i, cfg in enumerate(configs):
        lane_hp = LaneHparams(*(v[i] for v in hp))
        masks = network.weight_masks(sig, lane_hp)
        units = np.asarray(network.unit_mask(sig, cfg.width)) > 0
        for k, mask in enumerate(masks["hidden"]):
            layer = {name: v[i] for name, v in r.params["hidden"][k].items()}  # [F, ...]
            assert np.all(layer["w"][:, np.asarray(mask) == 0] == 0), (i, k)
            # biases before batch norm (every lane here) are cancelled by it: they stay 0
            assert np.all(layer["b"] == 0), (i, k)
            assert np.all(layer["alpha"][:, ~units] == network.PRELU_INIT), (i, k)
            if cfg.activation == "prelu" and k < cfg.depth:
                moved = np.abs(layer["alpha"][:, units] - network.PRELU_INIT)
                assert moved.mean() > 1e-4, (i, k)
        assert np.all(r.params["out"]["w"][i][:, np.asarray(masks["out"]) == 0] == 0), i


def test_prelu_slope_is_trained(batch16):
    configs, _, r = batch16
    prelu = [i for i, c in enumerate(configs) if c.activation == "prelu"]
    others = [i for i, c in enumerate(configs) if c.activation != "prelu"]
    alpha = r.params["hidden"][0]["alpha"]  # [P, F, W]
    assert prelu and np.all(np.abs(alpha[prelu] - network.PRELU_INIT).mean(axis=-1) > 1e-4)
    assert np.all(alpha[others] == network.PRELU_INIT)  # unused: zero gradient


# --------------------------------------------------------------------------- compilation
def test_numeric_changes_do_not_recompile(batch16, padded):
    configs, sig, r = batch16
    count = PROGRAMS.stats.compiles
    changed = [
        dict(o, learning_rate=o["learning_rate"] * 1.7, l2=0.02 * (i % 2),
             dropout=0.3 if o.get("dropout", 0.2) else 0.0, momentum=0.7, beta1=0.8,
             init_scale=0.05, leaky_slope=0.2, eps=1e-7, decay_rate=0.3)
        for i, o in enumerate(OTHERS)
    ]
    new_configs = configs_for(changed, PROBE_SLOT, trial_offset=50, learning_rate=0.03,
                              dropout=0.4)
    new_sig, r2 = run(new_configs, seed=3)
    assert new_sig == sig
    assert PROGRAMS.stats.compiles == count
    assert not np.allclose(r2.train_loss, r.train_loss)
    # a different Signature is one more program (the padded fixture compiled one)
    _, _, _, before, after = padded
    assert after.compiles == before.compiles + 1


# --------------------------------------------------------------------------- divergence
def test_divergent_lane_is_flagged_and_isolated(batch16):
    configs, sig, r = batch16
    assert configs[DIVERGE_SLOT].optimizer == "sgd"
    others = [dict(o) for o in OTHERS]
    others[DIVERGE_SLOT] = dict(others[DIVERGE_SLOT], learning_rate=1e6)
    new_sig, r2 = run(configs_for(others, PROBE_SLOT))
    assert new_sig == sig
    assert np.all(r2.diverged_epoch[DIVERGE_SLOT] >= 0)
    bad = r2.diverged_epoch[DIVERGE_SLOT]
    for f, e in enumerate(bad):
        assert not (np.isfinite(r2.train_loss[DIVERGE_SLOT, f, e])
                    and np.isfinite(r2.val_loss[DIVERGE_SLOT, f, e]))
    # the frozen lane keeps finite parameters
    assert all(np.all(np.isfinite(leaf[DIVERGE_SLOT]))
               for leaf in jax.tree_util.tree_leaves(r2.params))
    keep = [i for i in range(16) if i != DIVERGE_SLOT]
    np.testing.assert_array_equal(r2.diverged_epoch[keep], -1)
    for i in keep:
        assert_curves_close(curves(r, i), curves(r2, i), rtol=0, atol=0)


# --------------------------------------------------------------------------- padding rows
def test_extra_padding_rows_change_nothing(batch16):
    """More padding rows, holding junk features and labels (weight 0), leave every
    curve, metric, batch-norm statistic and parameter as with minimal padding."""
    configs, sig, a = batch16
    rng = np.random.default_rng(4)
    wide = stack_folds(RAW_FOLDS, n_train=57, n_val=30)
    assert (FOLDS.n_train, wide.n_train) == (45, 57)
    # Padding rows point at junk rows appended to the table (huge features, label 1).
    n, n_junk = len(wide.x), 7
    junk_x = rng.normal(scale=1e3, size=(n_junk, wide.x.shape[1])).astype(np.float32)
    wide = wide._replace(
        x=np.concatenate([wide.x, junk_x]), y=np.concatenate([wide.y, np.ones(n_junk, np.int32)]),
        train_idx=np.where(wide.w_train > 0, wide.train_idx,
                           n + rng.integers(0, n_junk, wide.train_idx.shape)).astype(np.int32),
        val_idx=np.where(wide.w_val > 0, wide.val_idx, n + n_junk - 1).astype(np.int32))
    wide_sig, b = run(configs, wide)
    assert wide_sig == sig
    assert set(a.val_metrics) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    for i in range(len(configs)):
        assert_curves_close(curves(a, i), curves(b, i), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.diverged_epoch, b.diverged_epoch)
    for k in ("mean", "var"):
        np.testing.assert_allclose(a.norm_state[k], b.norm_state[k], rtol=1e-5, atol=1e-6)
    jax.tree_util.tree_map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a.params, b.params)
    # the running statistics did move away from their (0, 1) start
    assert np.abs(a.norm_state["mean"]).max() > 1e-2


def test_norms_mixed_in_one_program_match_each_alone():
    """Normalisation is a per-lane selector: a batch-norm, a layer-norm and a plain lane
    in one program each train as they do alone (the shared program computes both norms
    and selects; a batch-norm lane's bias stays exactly 0)."""
    mixed = [TrialConfig.from_dict({**PROBE, "norm": norm, "dropout": 0.0}, trial=40 + i)
             for i, norm in enumerate(("batch", "layer", "none"))]
    sig, together = run(mixed)
    assert sig.norms == ("none", "batch", "layer")
    for i, config in enumerate(mixed):
        _, alone = run([config])
        assert_curves_close(curves(together, i), curves(alone, 0), rtol=1e-5, atol=1e-6)
    assert np.all(together.params["hidden"][0]["b"][0] == 0)   # the batch-norm lane
