"""models.programs + models.program_store: programs built once, counted per cache, and
kept on disk as exported artifacts.

A stored program must give exactly the results of the program traced in-process, be
read back instead of traced (counted), never recompile for new numbers, change its key
with anything that shapes it, and survive a damaged file. Two caches count apart.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from models import ProgramCache, ProgramStore, program_store
from models.folds import stack_folds
from models.hparams import TrialConfig, lane_hparams, signature_for
from models.programs import program_key

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] - X[:, 1] > 0).astype(np.int32)
FOLDS = stack_folds([(X[:30], Y[:30], X[30:], Y[30:]), (X[10:], Y[10:], X[:10], Y[:10])])
BASE = dict(depth=1, width=6, activation="relu", optimizer="adam", batch_size=8, epochs=3)


def problem(learning_rates=(0.01, 0.05)):
    configs = [TrialConfig.from_dict({**BASE, "learning_rate": lr}, trial=i)
               for i, lr in enumerate(learning_rates)]
    sig = dataclasses.replace(
        signature_for(configs, "binary", 4, 1, FOLDS.n_train), metrics=("accuracy",))
    return sig, lane_hparams(configs, sig)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ProgramStore(tmp_path_factory.mktemp("store") / "programs")


def fit_leaves(cache, sig, hp):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(cache.fit(sig, hp, FOLDS, seed=1))]


def test_a_stored_program_is_read_back_not_traced_and_gives_the_same_results(store):
    sig, hp = problem()
    traced = fit_leaves(ProgramCache(), sig, hp)

    first = ProgramCache(store)
    assert not first.is_stored(sig, 2, FOLDS) and not first.is_built(sig, 2, FOLDS)
    exported = fit_leaves(first, sig, hp)
    assert (first.stats.exported, first.stats.loaded, first.stats.programs) == (1, 0, 1)
    assert first.is_stored(sig, 2, FOLDS) and first.is_built(sig, 2, FOLDS)
    assert len(list(store.directory.glob("*.jaxexport"))) == 1

    second = ProgramCache(store)  # as in a new process: only the file is left
    loaded = fit_leaves(second, sig, hp)
    assert (second.stats.exported, second.stats.loaded) == (0, 1)
    assert first.stats.loaded == 0  # the caches count apart
    for a, b, c in zip(traced, exported, loaded):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)

    # New numbers run on the loaded program: no recompilation.
    compiles = second.stats.compiles
    sig2, hp2 = problem(learning_rates=(0.2, 0.001))
    assert sig2 == sig
    changed = fit_leaves(second, sig2, hp2)
    assert second.stats.compiles == compiles and second.stats.programs == 1
    assert not np.allclose(loaded[0], changed[0])


def test_the_key_follows_signature_shapes_and_models_source(monkeypatch):
    sig, _ = problem()
    key = program_key(sig, 2, FOLDS, 1)
    assert program_key(dataclasses.replace(sig, width=7), 2, FOLDS, 1) != key
    assert program_key(sig, 4, FOLDS, 1) != key
    assert program_key(sig, 2, FOLDS, 2) != key
    padded = stack_folds([(X[:30], Y[:30], X[30:], Y[30:])] * 2, n_train=32)
    assert program_key(sig, 2, padded, 1) != key
    digest = program_store.program_digest(key)
    monkeypatch.setattr(program_store, "_models_source_digest", lambda: "edited")
    assert program_store.program_digest(key) != digest


def test_a_damaged_file_is_exported_again(store):
    sig, hp = problem()
    if not ProgramCache(store).is_stored(sig, 2, FOLDS):  # run alone: store it first
        fit_leaves(ProgramCache(store), sig, hp)
    (path,) = store.directory.glob("*.jaxexport")
    path.write_bytes(b"not a program")
    cache = ProgramCache(store)
    fit_leaves(cache, sig, hp)
    assert (cache.stats.exported, cache.stats.loaded) == (1, 0)
    assert path.read_bytes() != b"not a program"
