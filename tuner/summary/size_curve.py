"""The best configuration's learning curve against training-set size: the classic
diagnosis of over- and underfitting, beside the per-epoch curves.

Each fold's training rows are cut to nested subsets (10%, 20%, 40%, 70% and 100%, one
seeded order per fold), and every (fold, fraction) pair is one fold of a program: one
lane, fractions x folds folds, its preprocessing fit on its own subset; on a large
table two programs, small fractions and large ones, since a program's folds are padded
to its largest. The
validation score is that of the fold's validation rows at the epoch that gives the
trial's value; the training score is the same model's on its own training subset.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from models import ProgramCache, TrainedModel, TrialConfig, lane_hparams, signature_for
from models.metrics import GREATER_IS_BETTER, compute_metrics
from tuner.inputs.cv import stack_splits
from tuner.inputs.data import Dataset

FRACTIONS = (0.1, 0.2, 0.4, 0.7, 1.0)
TRAIN_SCORE_ROWS = 20_000  # rows of a subset its training score is estimated on
SMALL_FRACTION = 0.4       # fractions up to this share one program, larger ones another
SPLIT_ABOVE_ROWS = 50_000  # ... when a fold trains on more rows than this


@dataclasses.dataclass
class SizeCurve:
    """Scores [fractions, folds] of the training subsets and the validation rows."""

    metric: str
    fractions: tuple[float, ...]
    rows: np.ndarray        # [fractions] mean training rows
    train: np.ndarray       # [fractions, folds]
    val: np.ndarray         # [fractions, folds]

    def reading(self) -> str:
        """One line saying what the curve means."""
        sign = 1.0 if GREATER_IS_BETTER[self.metric] else -1.0
        val, train = self.val.mean(axis=1), self.train.mean(axis=1)
        spread = float(self.val[-1].std())
        rising = sign * (val[-1] - val[-2]) > max(spread, 1e-3 * max(1.0, abs(val[-1])))
        gap = sign * (train[-1] - val[-1])
        if rising:
            return (f"validation {self.metric} still rising at 100% of the training rows "
                    f"({val[-2]:.4g} at 70%, {val[-1]:.4g} at 100%): more data would help")
        if gap > 0.1 * max(abs(val[-1]), 1e-9) and gap > 2 * spread:
            return (f"training {self.metric} {train[-1]:.4g} well above validation "
                    f"{val[-1]:.4g}: the model overfits; more regularisation would help "
                    "more than more data")
        return (f"validation {self.metric} flat from 70% to 100% of the training rows "
                f"({val[-2]:.4g}, {val[-1]:.4g}): more data is unlikely to help much")

    def metrics(self) -> dict[str, list[tuple[int, float]]]:
        """MLflow metrics (step = percent of the training rows)."""
        steps = [int(round(100 * f)) for f in self.fractions]
        out = {}
        for part, scores in (("train", self.train), ("val", self.val)):
            out[f"size_{part}_{self.metric}"] = list(zip(steps, scores.mean(axis=1).tolist()))
            out[f"size_{part}_{self.metric}_std"] = list(zip(steps, scores.std(axis=1).tolist()))
        return out


def size_curve(dataset: Dataset, splits: list, params: dict, seed: int, trial: int,
               metric: str, programs: ProgramCache, epochs: int | None = None,
               fractions: tuple[float, ...] = FRACTIONS) -> SizeCurve:
    """Train ``params`` on growing parts of each fold's training rows (module doc)."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(np.asarray(tr)) for tr, _ in splits]
    config = TrialConfig.from_dict(params, seed=seed, trial=trial)
    val = np.zeros((len(fractions), len(splits)))
    train = np.zeros_like(val)
    rows = np.zeros(len(fractions))
    for group in program_groups(fractions, max(len(tr) for tr, _ in splits)):
        part = [fractions[i] for i in group]
        v, t, r = _curve_part(dataset, splits, orders, part, config, seed, metric, programs,
                              epochs, rng)
        val[group], train[group], rows[group] = v, t, r
    return SizeCurve(metric, tuple(fractions), rows, train, val)


def program_groups(fractions: tuple[float, ...], n_train: int) -> list[list[int]]:
    """Fractions trained in one program: every fold of a program is padded to its
    largest subset, so on a large table small fractions go apart from large ones (one
    program for all five fractions trained 15 folds of 100% for 7.2 folds' worth of
    rows); on a small one a second compile costs more than the padding."""
    if n_train <= SPLIT_ABOVE_ROWS:
        return [list(range(len(fractions)))]
    small = [i for i, f in enumerate(fractions) if f <= SMALL_FRACTION]
    large = [i for i, f in enumerate(fractions) if f > SMALL_FRACTION]
    return [g for g in (small, large) if g]


def _curve_part(dataset: Dataset, splits: list, orders: list, fractions: list[float],
                config: TrialConfig, seed: int, metric: str, programs: ProgramCache,
                epochs: int | None, rng: np.random.Generator):
    """(val, train, rows) [fractions, folds] of some fractions, in one program."""
    subsets, vals = [], []
    for (_, va), order in zip(splits, orders):
        for fraction in fractions:
            subsets.append(np.sort(order[:max(2, math.ceil(fraction * len(order)))]))
            vals.append(np.asarray(va))
    stack, targets = stack_splits(dataset, list(zip(subsets, vals)))
    sig = dataclasses.replace(signature_for([config], dataset.task, dataset.n_features,
                                            dataset.n_outputs, stack.n_train),
                              metrics=(metric,))
    hp = lane_hparams([config], sig)
    result = programs.fit(sig, hp, stack, seed, until=epochs)
    n_frac, n_folds = len(fractions), len(splits)
    val = np.asarray(result.val_metrics[metric])[0, :, -1].reshape(n_folds, n_frac).T
    train = np.zeros_like(val)
    for k, fold_rows in enumerate(subsets):
        model = TrainedModel.from_fit(sig, result, hp, 0, k, np.zeros(sig.n_features),
                                      np.ones(sig.n_features), targets[k][0], targets[k][1])
        # The training score is estimated on a seeded sample of the subset: on a large
        # table, every training row's hidden activations (rows x width, per layer) cost
        # gigabytes and most of the curve's time, for a third decimal.
        n = len(fold_rows)
        pick = np.sort(rng.choice(n, TRAIN_SCORE_ROWS, replace=False)) \
            if n > TRAIN_SCORE_ROWS else np.arange(n)
        logits = model.logits(stack.fold_x(k, rows=pick))
        y = stack.fold_y(k, standardise=True, rows=pick)
        scores = compute_metrics(sig.task, logits, y, np.ones(len(pick), np.float32),
                                 targets[k][0], targets[k][1])
        train[k % n_frac, k // n_frac] = float(jax.device_get(scores[metric]))
    rows = np.array([[len(subsets[f * n_frac + i]) for f in range(n_folds)]
                     for i in range(n_frac)]).mean(axis=1)
    return val, train, rows
