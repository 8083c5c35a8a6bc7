"""tuner.fidelity: when Optuna's pruners decide, early stopping, and which trials train
next. The decision points are checked against Optuna's own pruner classes (the steps at
which a trial reporting every epoch gets judged), not against a copy of their rules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from models import TrialConfig
from tuner.fidelity.early_stopping import best_epoch, stop_epoch
from tuner.fidelity.pruners import DecisionPoints, make_pruner, max_epochs
from tuner.fidelity.scheduler import LiveTrial, RungScheduler
from tuner.inputs.spec import parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(pruner, epochs=30, **search):
    return parse_spec({"name": "t", "data": {"source": "sklearn:iris"},
                       "search": {"pruner": pruner, **search}, "fixed": {"epochs": epochs},
                       "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}}})


# --------------------------------------------------------------------------- decisions
def optuna_decision_steps(pruner: optuna.pruners.BasePruner, steps: int) -> list[int]:
    """Steps at which Optuna's pruner judges a trial that reports every step: where
    successive halving records a completed rung, where the percentile rules get past
    their warmup and interval gates to compare with other trials (spied on). Earlier
    finished trials give the percentile pruners something to compare with."""
    from unittest import mock

    from optuna.pruners import _percentile

    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(6):
        t = study.ask()
        for s in range(steps):
            t.report(float(i), s)
        study.tell(t, float(i))
    trial = study.ask()
    judged = []
    compare = _percentile._get_percentile_intermediate_result_over_trials
    for step in range(steps):
        trial.report(100.0, step)  # the best value: never pruned, so judged at every gate
        before = set(study._storage.get_trial(trial._trial_id).system_attrs)
        with mock.patch.object(_percentile, "_get_percentile_intermediate_result_over_trials",
                               wraps=compare) as spy:
            assert not trial.should_prune()
        after = set(study._storage.get_trial(trial._trial_id).system_attrs)
        if spy.called or any(k.startswith("completed_rung") for k in after - before):
            judged.append(step)
    return judged


@pytest.mark.parametrize("pruner", [
    {"kind": "successive_halving", "min_resource": 2, "reduction_factor": 3},
    {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2,
     "min_early_stopping_rate": 1},
    {"kind": "hyperband", "min_resource": 2, "reduction_factor": 3},
])
def test_halving_rungs_are_optunas(pruner):
    s = spec(pruner)
    points = DecisionPoints.of(s)
    built = make_pruner(s)
    if isinstance(built, optuna.pruners.HyperbandPruner):
        # bracket 0 has the finest rungs; the other brackets' are a subset of them
        built = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner["min_resource"], reduction_factor=pruner["reduction_factor"])
    expected = optuna_decision_steps(built, 30)
    assert [s for s in range(30) if points.decides_at(s)] == expected


@pytest.mark.parametrize("kind, params", [
    ("median", {"n_warmup_steps": 3, "interval_steps": 4, "n_startup_trials": 1}),
    ("percentile", {"percentile": 50.0, "n_warmup_steps": 0, "interval_steps": 3,
                    "n_startup_trials": 1}),
])
def test_percentile_rules_judge_at_optunas_steps(kind, params):
    s = spec({"kind": kind, **params})
    points = DecisionPoints.of(s)
    expected = optuna_decision_steps(make_pruner(s), 20)
    assert [st for st in range(20) if points.decides_at(st)] == expected


@pytest.mark.parametrize("pruner", [
    "median", {"kind": "successive_halving", "min_resource": 2, "reduction_factor": 3},
    {"kind": "hyperband", "min_resource": 1, "reduction_factor": 2},
    {"kind": "percentile", "n_warmup_steps": 5, "interval_steps": 7}])
def test_next_epochs_is_the_next_decision(pruner):
    points = DecisionPoints.of(spec(pruner))
    for done in range(40):
        nxt = points.next_epochs(done)
        assert nxt > done and points.decides_at(nxt - 1)
        assert not any(points.decides_at(s) for s in range(done, nxt - 1))


def test_no_pruner_never_decides():
    points = DecisionPoints.of(spec("none"))
    assert points.next_epochs(0) is None and not points.decides_at(5)


def test_pruner_defaults_fill_what_optuna_leaves_to_auto():
    hb = make_pruner(spec("hyperband", epochs=27))
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (1, 27, 3)
    assert make_pruner(spec("percentile"))._percentile == 25.0
    assert max_epochs(parse_spec({"name": "t", "data": {"source": "sklearn:iris"},
                                  "space": {"epochs": [5, 40, 9]}})) == 40


# --------------------------------------------------------------------------- early stopping
@pytest.mark.parametrize("curve, patience, delta, greater, stop, best", [
    ([0.5, 0.6, 0.7, 0.65, 0.66, 0.69, 0.8], 3, 0.0, True, 5, 2),
    ([0.5, 0.6, 0.7, 0.65, 0.66, 0.8, 0.7], 3, 0.0, True, None, 5),
    ([0.5, 0.52, 0.53, 0.54], 2, 0.05, True, 2, 0),       # gains under min_delta
    ([1.0, 0.8, 0.9, 0.95, 0.7], 2, 0.0, False, 3, 1),    # a loss: lower is better
    ([0.5, math.nan, math.nan, 0.4], 2, 0.0, True, 2, 0),  # NaN never improves
    ([0.3], 1, 0.0, True, None, 0),
])
def test_early_stopping_on_crafted_curves(curve, patience, delta, greater, stop, best):
    assert stop_epoch(curve, patience, delta, greater) == stop
    end = len(curve) if stop is None else stop + 1
    assert best_epoch(curve[:end], delta, greater) == best


# --------------------------------------------------------------------------- scheduler
def live(number, epochs_done=0, epochs=30):
    t = LiveTrial(SimpleNamespace(number=number), TrialConfig(epochs=epochs), {}, "run")
    t.epochs_done = epochs_done
    return t


def test_segments_end_at_the_next_decision_or_the_trials_own_end():
    sched = RungScheduler(4, DecisionPoints.of(spec({"kind": "hyperband", "min_resource": 2,
                                                      "reduction_factor": 3})))
    pool = [live(i) for i in range(4)]
    members, start, stop = sched.next_segment(pool, more_coming=True)
    assert (len(members), start, stop) == (4, 0, 3)        # judged at step 2
    pool = [live(0, 3), live(1, 3, epochs=5)]
    assert sched.next_segment(pool, more_coming=False)[1:] == (3, 5)  # trial 1 ends at 5
    pool = [live(0, 7)]
    assert sched.next_segment(pool, more_coming=False)[1:] == (7, 19)


def test_early_stopping_checks_every_patience_epochs():
    sched = RungScheduler(4, DecisionPoints.of(spec("none")), check_every=4)
    assert sched.next_segment([live(0)], more_coming=False)[1:] == (0, 4)
    assert sched.next_segment([live(0, 4)], more_coming=False)[1:] == (4, 8)
    assert RungScheduler(4, DecisionPoints.of(spec("none"))).next_segment(
        [live(0)], more_coming=False)[1:] == (0, 30)


def test_merging_survivors_wait_for_a_full_batch_while_new_trials_come():
    sched = RungScheduler(4, DecisionPoints.of(spec("none")), merge=True)
    pool = [live(0, 3), live(1, 3)] + [live(i) for i in range(2, 6)]
    assert sched.wanted(pool) == 0                          # epoch 0 is full
    members, start, _ = sched.next_segment(pool, more_coming=True)
    assert start == 0 and [t.number for t in members] == [2, 3, 4, 5]
    pool = [live(i, 3) for i in range(5)] + [live(i) for i in range(5, 9)]
    members, start, _ = sched.next_segment(pool, more_coming=True)
    assert start == 3 and [t.number for t in members] == [0, 1, 2, 3]  # deepest full queue
    # nothing more to ask: flush from the shallowest queue up
    pool = [live(0, 3), live(1, 3), live(2)]
    assert sched.next_segment(pool, more_coming=False)[1] == 0


def test_by_default_a_batch_is_finished_first():
    sched = RungScheduler(4, DecisionPoints.of(spec("none")))
    pool = [live(0, 3), live(1)]
    assert sched.wanted(pool) == 0 and sched.wanted([]) == 4
    assert sched.next_segment(pool, more_coming=True)[1] == 3


def test_live_trial_curves_join_segments():
    t = live(0)
    t.add_segment({"val_loss": np.ones((3, 2))}, state=("s",), epochs=2)
    t.add_segment({"val_loss": np.zeros((3, 4))}, state=("s2",), epochs=4)
    assert t.epochs_done == 6 and t.curves()["val_loss"].shape == (3, 6)
