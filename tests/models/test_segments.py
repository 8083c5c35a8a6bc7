"""models.train.fit_segment: training that stops and goes on.

A trial trained in several segments (its state carried from one to the next) gives the
curves of one trained in one go, for every optimizer family, learning-rate schedules,
batch norm and dropout; moving a lane into a wider/deeper program between segments
changes nothing; epochs, start epochs and segment lengths never recompile.
"""

from __future__ import annotations

import numpy as np
import pytest

from models import ProgramCache, TrialConfig, lane_hparams, signature_for
from models.folds import stack_folds
from models.train import SEGMENT_EPOCHS, blank_state, lane_state, resize_state

RNG = np.random.default_rng(7)
X = RNG.normal(size=(70, 5)).astype(np.float32)
Y = (X[:, 0] - 0.5 * X[:, 2] + 0.3 * RNG.normal(size=70) > 0).astype(np.int32)
FOLDS = stack_folds([(X[:50], Y[:50], X[50:], Y[50:]), (X[20:], Y[20:], X[:20], Y[:20])])
EPOCHS = 7
BASE = dict(depth=2, width=6, norm="batch", batch_size=16, epochs=EPOCHS, dropout=0.2,
            l2=1e-3, activation="tanh")
LANES = [
    dict(optimizer="sgd", learning_rate=0.1, schedule="cosine"),
    dict(optimizer="momentum", learning_rate=0.05, schedule="step", decay_epochs=2.0),
    dict(optimizer="nesterov", learning_rate=0.05, schedule="warmup_cosine"),
    dict(optimizer="adagrad", learning_rate=0.05, schedule="exponential", decay_epochs=3.0),
    dict(optimizer="rmsprop", learning_rate=0.01, schedule="constant"),
    dict(optimizer="adam", learning_rate=0.02, schedule="cosine", epochs=5),
    dict(optimizer="adamw", learning_rate=0.02, schedule="warmup_cosine", activation="relu"),
    dict(optimizer="gd", learning_rate=0.3, schedule="constant", epochs=4),
]
PROGRAMS = ProgramCache()


def configs(lanes=LANES, **changes):
    return [TrialConfig.from_dict({**BASE, **lane, **changes}, trial=10 + i)
            for i, lane in enumerate(lanes)]


def segmented(sig, hp, cuts, state=None, fresh=None, start=0):
    """Curves [P, F, sum(cuts)] of training in segments of ``cuts`` epochs from ``start``."""
    n = len(hp.learning_rate)
    state = blank_state(sig, n, FOLDS.n_folds) if state is None else state
    fresh = np.ones(n, bool) if fresh is None else fresh
    parts = []
    for cut in cuts:
        seg = PROGRAMS.run_segment(sig, hp, FOLDS, 3, state, fresh, start, cut)
        state, fresh = seg.state, np.zeros(n, bool)
        parts.append((np.asarray(seg.train_loss)[..., :cut], np.asarray(seg.val_loss)[..., :cut],
                      np.asarray(seg.val_metrics["accuracy"])[..., :cut]))
        start += cut
    return [np.concatenate([p[k] for p in parts], axis=-1) for k in range(3)], state


@pytest.fixture(scope="module")
def one_go():
    cfgs = configs()
    # gd needs the full-batch program: keep it apart (its own partition)
    sig = signature_for(cfgs[:-1], "binary", 5, 1, FOLDS.n_train)
    hp = lane_hparams(cfgs[:-1], sig)
    return sig, hp, PROGRAMS.fit(sig, hp, FOLDS, seed=3)


@pytest.mark.parametrize("cuts", [(2, 3, 2), (1, 1, 1, 1, 1, 1, 1), (6, 1)])
def test_segments_give_the_curves_of_one_go(one_go, cuts):
    sig, hp, full = one_go
    compiles = PROGRAMS.stats.compiles
    (train_loss, val_loss, acc), _ = segmented(sig, hp, cuts)
    np.testing.assert_allclose(train_loss, full.train_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(val_loss, full.val_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(acc, full.val_metrics["accuracy"])
    assert PROGRAMS.stats.compiles == compiles  # any start and length: the same program


def test_a_lane_moved_into_a_bigger_program_goes_on_unchanged(one_go):
    sig, hp, full = one_go
    (first, _, _), state = segmented(sig, hp, (3,))
    # Lanes 0 and 4 continue in a program that also holds a wider, deeper newcomer.
    keep = [0, 4]
    newcomer = TrialConfig.from_dict({**BASE, "width": 9, "depth": 3, "optimizer": "adam"},
                                     trial=99)
    cfgs = [configs()[i] for i in keep] + [newcomer]
    big = signature_for(cfgs, "binary", 5, 1, FOLDS.n_train)
    assert (big.width, big.depth) != (sig.width, sig.depth)
    moved = [resize_state(lane_state(sig, state, i), big) for i in keep]
    moved.append(tuple(b[0] for b in blank_state(big, 1, FOLDS.n_folds)))
    leaves = [np.stack([lane[k] for lane in moved]) for k in range(len(moved[0]))]
    (rest, _, _), _ = segmented(big, lane_hparams(cfgs, big), (EPOCHS - 3,), state=leaves,
                                fresh=np.array([False, False, True]), start=3)
    for slot, i in enumerate(keep):
        np.testing.assert_allclose(np.concatenate([first[i], rest[slot]], axis=-1),
                                   full.train_loss[i], rtol=1e-5, atol=1e-6)


def test_epochs_do_not_shape_the_program():
    short = configs(LANES[:2], epochs=3, schedule="constant")  # cosine would follow epochs
    long = configs(LANES[:2], epochs=SEGMENT_EPOCHS + 5, schedule="constant")
    sig = signature_for(short, "binary", 5, 1, FOLDS.n_train)
    assert signature_for(long, "binary", 5, 1, FOLDS.n_train) == sig
    cache = ProgramCache()
    r_short = cache.fit(sig, lane_hparams(short, sig), FOLDS)
    r_long = cache.fit(sig, lane_hparams(long, sig), FOLDS)  # two segments of one program
    assert cache.stats.programs == 1 and cache.stats.compiles == 1
    assert r_long.train_loss.shape[-1] == SEGMENT_EPOCHS + 5
    np.testing.assert_allclose(r_long.train_loss[..., :3], r_short.train_loss, rtol=1e-6)


def test_until_stops_every_lane_with_its_schedule_intact(one_go):
    sig, hp, full = one_go
    part = PROGRAMS.fit(sig, hp, FOLDS, seed=3, until=4)
    assert part.train_loss.shape[-1] == 4
    np.testing.assert_allclose(part.train_loss, full.train_loss[..., :4], rtol=1e-5, atol=1e-6)
