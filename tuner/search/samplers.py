"""Samplers of a study, seeded so that workers and continuations differ (pruners:
``tuner.fidelity.pruners``)."""

from __future__ import annotations

import optuna

from tuner.inputs.spec import SweepSpec
from tuner.search.space import grid_points


class BatchGridSampler(optuna.samplers.GridSampler):
    """GridSampler for an ask/tell loop: Optuna's calls ``study.stop()`` when the grid is
    exhausted, which raises outside ``optimize``; here the loop owns the budget."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ARG002
        return None


def make_sampler(spec: SweepSpec, worker: int = 0, offset: int = 0
                 ) -> optuna.samplers.BaseSampler:
    """Seeded sampler; each worker of a shared study gets its own seed, and so does each
    continuation of a study (``offset`` = trials it holds already): a sampler seeded as
    before would restart its random stream and propose the same points again."""
    method = spec.search.method
    if method == "grid":
        # The seed shuffles the grid and trial n < grid size takes point n of that order:
        # every process of one study must shuffle alike, or points run twice or never.
        return BatchGridSampler(grid_points(spec), seed=spec.search.seed % 2**32)
    # numpy (and so every Optuna sampler) takes seeds in [0, 2**32 - 1].
    seed = (spec.search.seed + 1000003 * worker + 7919 * offset) % 2**32
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Constant liar keeps a batch of proposals apart while their results are pending.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
