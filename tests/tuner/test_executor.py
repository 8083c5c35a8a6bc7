"""tuner.executor planning: which trials share a compiled program.

Planning only (no training): the cost model trades estimated compile or load seconds
against padded compute, and a program already in the program store counts as a load.
"""

from __future__ import annotations

import numpy as np
from models import ProgramCache
from models.folds import stack_folds
from models.hparams import TrialConfig
from tuner.execution.executor import Choices, Executor

RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 8)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)
FOLDS = stack_folds([(X[:300], Y[:300], X[300:], Y[300:]), (X[100:], Y[100:], X[:100], Y[:100])])
CHOICES = Choices(("relu",), ("glorot_uniform",), ("constant",))


class OneDevice(ProgramCache):
    """Planning as on a one-device machine, with a program store we choose."""

    def __init__(self, stored: bool = False) -> None:
        super().__init__(devices=[])
        self.stored = stored

    def lane_multiple(self) -> int:
        return 1

    def is_stored(self, sig, n_trials, folds) -> bool:
        return self.stored


def executor(stored: bool = False, **kw) -> Executor:
    return Executor(FOLDS, "binary", 1, "accuracy", CHOICES, programs=OneDevice(stored), **kw)


def configs(widths, **fixed):
    return [TrialConfig.from_dict({"depth": 1, "width": w, "epochs": 20, "batch_size": 32,
                                   **fixed}, trial=i) for i, w in enumerate(widths)]


def widths_of(groups, cfgs):
    return sorted(sorted({cfgs[i].width for i in g}) for g in groups)


def test_expensive_compiles_share_one_padded_program():
    cfgs = configs([16, 256] * 4)
    groups = executor(compile_estimate_s=1e6).plan_groups(cfgs)
    assert widths_of(groups, cfgs) == [[16, 256]]


def test_free_compiles_give_one_program_per_width():
    cfgs = configs([16, 256] * 4)
    groups = executor(compile_estimate_s=0.0).plan_groups(cfgs)
    assert widths_of(groups, cfgs) == [[16], [256]]
    assert sorted(len(g) for g in groups) == [4, 4]


def test_a_stored_program_costs_a_load_not_a_compile():
    cfgs = configs([16, 256] * 4)
    plan = executor(compile_estimate_s=1e6, load_estimate_s=0.0).plan_groups(cfgs)
    assert widths_of(plan, cfgs) == [[16, 256]]
    plan = executor(stored=True, compile_estimate_s=1e6, load_estimate_s=0.0).plan_groups(cfgs)
    assert widths_of(plan, cfgs) == [[16], [256]]


def test_batch_size_and_norm_always_split():
    cfgs = (configs([32] * 2) + configs([32] * 2, batch_size=64)
            + configs([32] * 2, norm="layer"))
    groups = executor(compile_estimate_s=1e6).plan_groups(cfgs)
    # batch size shapes a program; norm could be a selector but is cheaper apart
    assert sorted(map(sorted, groups)) == [[0, 1], [2, 3], [4, 5]]
