"""``scoring=``: our metric names and the scikit-learn scorer names that mean the same.

The engine scores every fold inside its compiled programs with ``models.metrics``; the
search only has to know which of those metrics a scorer name means and its sign.
scikit-learn's scores are greater-is-better, so a loss (log_loss, mse, rmse, mae) is
reported negated in ``cv_results_`` and ``best_score_``, as its ``neg_*`` scorer.
"""

from __future__ import annotations

import dataclasses

from models.metrics import GREATER_IS_BETTER, METRICS, REGRESSION_METRICS
from tuner.errors import SpecError

# scikit-learn scorer name -> our metric, for the scorers that compute the same number.
# (roc_auc_ovr: our multiclass roc_auc is the unweighted mean of one-vs-rest AUCs.)
SKLEARN_SCORERS: dict[str, str] = {
    "accuracy": "accuracy",
    "f1_macro": "f1_macro",
    "roc_auc": "roc_auc",
    "roc_auc_ovr": "roc_auc",
    "neg_log_loss": "log_loss",
    "neg_mean_squared_error": "mse",
    "neg_root_mean_squared_error": "rmse",
    "neg_mean_absolute_error": "mae",
    "r2": "r2",
}
# Our metric -> the scikit-learn scorer that ``score`` uses (per task where they differ).
SCORER_OF_METRIC: dict[str, str] = {
    "accuracy": "accuracy", "f1_macro": "f1_macro", "roc_auc": "roc_auc",
    "log_loss": "neg_log_loss", "mse": "neg_mean_squared_error",
    "rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2",
}


@dataclasses.dataclass(frozen=True)
class Scoring:
    """One metric, as the engine computes it and as scikit-learn reports it.

    metric: our name (what the engine optimises and Optuna stores);
    sign: +1, or -1 for a loss (scikit-learn's scores are greater-is-better);
    scorer: the scikit-learn scorer name of the same number (``score``)."""

    metric: str
    sign: float
    scorer: str

    def to_sklearn(self, value: float) -> float:
        """An engine value (Optuna's) as a scikit-learn score."""
        return self.sign * value


def resolve_scoring(scoring, task: str) -> Scoring:
    """The ``Scoring`` of ``scoring`` (None: accuracy for classifiers, r2 for
    regressors, as their ``score``) for ``task``. Anything else (a callable, a list,
    a scorer we do not compute) is a SpecError naming what is accepted."""
    if scoring is None:
        metric = "r2" if task == "regression" else "accuracy"
    elif isinstance(scoring, str) and scoring in METRICS:
        metric = scoring
    elif isinstance(scoring, str) and scoring in SKLEARN_SCORERS:
        metric = SKLEARN_SCORERS[scoring]
    else:
        accepted = sorted(set(METRICS) | set(SKLEARN_SCORERS))
        raise SpecError(f"scoring: {scoring!r} is not a metric the engine computes; "
                        f"use one of {accepted}")
    fits = (metric in REGRESSION_METRICS) == (task == "regression")
    if not fits:
        raise SpecError(f"scoring: {scoring!r} does not fit task {task!r}")
    scorer = SCORER_OF_METRIC[metric]
    if metric == "roc_auc" and task == "multiclass":
        scorer = "roc_auc_ovr"
    return Scoring(metric, 1.0 if GREATER_IS_BETTER[metric] else -1.0, scorer)
