"""models.program_store: exported training programs on disk.

A stored program must give exactly the results of the program traced in-process, be
read back instead of traced (counted), never recompile for new numbers, change its key
with anything that shapes it, and survive a damaged file.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from models import program_store, train
from models.folds import stack_folds
from models.hparams import TrialConfig, lane_hparams, signature_for

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] - X[:, 1] > 0).astype(np.int32)
FOLDS = stack_folds([(X[:30], Y[:30], X[30:], Y[30:]), (X[10:], Y[10:], X[:10], Y[:10])])
BASE = dict(depth=1, width=6, activation="relu", optimizer="adam", batch_size=8, epochs=3)


def problem(learning_rates=(0.01, 0.05)):
    configs = [TrialConfig.from_dict({**BASE, "learning_rate": lr}, trial=i)
               for i, lr in enumerate(learning_rates)]
    sig = dataclasses.replace(
        signature_for(configs, "binary", 4, 1, FOLDS.x_train.shape[1]), metrics=("accuracy",))
    return sig, lane_hparams(configs, sig)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store directory for the module, and an empty in-process program table."""
    previous_dir, previous_table = program_store.directory(), train._STORED
    train._STORED = {}
    path = tmp_path_factory.mktemp("store") / "programs"
    program_store.set_directory(path)
    yield path
    program_store.set_directory(previous_dir)
    train._STORED = previous_table


def fit_leaves(sig, hp):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(train.fit(sig, hp, FOLDS, seed=1))]


def test_a_stored_program_is_read_back_not_traced_and_gives_the_same_results(store):
    sig, hp = problem()
    program_store.set_directory(None)
    traced = fit_leaves(sig, hp)

    program_store.set_directory(store)
    assert not train.program_is_stored(sig, 2, FOLDS)
    before = dataclasses.replace(program_store.STATS)
    exported = fit_leaves(sig, hp)
    assert program_store.STATS.exported == before.exported + 1
    assert train.program_is_stored(sig, 2, FOLDS)
    assert len(list(store.glob("*.jaxexport"))) == 1

    train._STORED.clear()  # as in a new process: only the file is left
    loaded = fit_leaves(sig, hp)
    assert program_store.STATS.loaded == before.loaded + 1
    assert program_store.STATS.exported == before.exported + 1
    for a, b, c in zip(traced, exported, loaded):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)

    # New numbers run on the loaded program: no recompilation.
    count = train.compiled_programs()
    sig2, hp2 = problem(learning_rates=(0.2, 0.001))
    assert sig2 == sig
    changed = fit_leaves(sig2, hp2)
    assert train.compiled_programs() == count
    assert not np.allclose(loaded[0], changed[0])


def test_the_key_follows_signature_shapes_and_models_source(monkeypatch):
    sig, _ = problem()
    key = train.program_key(sig, 2, FOLDS, 1)
    assert train.program_key(dataclasses.replace(sig, width=7), 2, FOLDS, 1) != key
    assert train.program_key(sig, 4, FOLDS, 1) != key
    assert train.program_key(sig, 2, FOLDS, 2) != key
    padded = stack_folds([(X[:30], Y[:30], X[30:], Y[30:])] * 2, n_train=32)
    assert train.program_key(sig, 2, padded, 1) != key
    digest = program_store.program_digest(key)
    monkeypatch.setattr(program_store, "_models_source_digest", lambda: "edited")
    assert program_store.program_digest(key) != digest


def test_a_damaged_file_is_exported_again(store):
    sig, hp = problem()
    program_store.set_directory(store)
    if not train.program_is_stored(sig, 2, FOLDS):  # run alone: store it first
        fit_leaves(sig, hp)
    (path,) = store.glob("*.jaxexport")
    path.write_bytes(b"not a program")
    train._STORED.clear()
    exported = program_store.STATS.exported
    fit_leaves(sig, hp)
    assert program_store.STATS.exported == exported + 1
    assert path.read_bytes() != b"not a program"
