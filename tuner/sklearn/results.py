"""``cv_results_`` in scikit-learn's layout, from the trials of a study.

The keys are the ones ``GridSearchCV`` gives for the same candidates (one scorer, no
train scores): ``params``, ``param_<name>`` (masked arrays, scikit-learn's own
builder), ``split<k>_test_score``, ``mean_/std_/rank_test_score`` and the
``mean_/std_fit_time`` / ``mean_/std_score_time`` columns.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.model_selection._search import _yield_masked_array_for_each_param


def cv_results(candidates: list[dict], test_scores: np.ndarray, fit_times: np.ndarray,
               score_times: np.ndarray) -> dict:
    """candidates: the C parameter dicts in order; test_scores, fit_times, score_times:
    float [C, K] per candidate and split (NaN scores: failed or pruned trials, ranked
    last as scikit-learn ranks failed fits)."""
    results: dict = {}
    _store(results, "fit_time", fit_times)
    _store(results, "score_time", score_times)
    for key, column in _yield_masked_array_for_each_param(candidates):
        results[key] = column
    results["params"] = candidates
    _store(results, "test_score", test_scores, splits=True)
    means = results["mean_test_score"]
    if np.isnan(means).all():
        ranks = np.ones(len(means), np.int32)
    else:
        filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
        ranks = rankdata(-filled, method="min").astype(np.int32)
    results["rank_test_score"] = ranks
    return results


def _store(results: dict, name: str, values: np.ndarray, splits: bool = False) -> None:
    values = np.asarray(values, np.float64)
    if splits:
        for k in range(values.shape[1]):
            results[f"split{k}_{name}"] = values[:, k]
    means = np.average(values, axis=1)
    results[f"mean_{name}"] = means
    results[f"std_{name}"] = np.sqrt(np.average((values - means[:, None]) ** 2, axis=1))
