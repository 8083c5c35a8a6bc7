"""``MLPSearchCV``: fits like ``GridSearchCV``; the trials x folds run in the engine.

The search builds a spec in the YAML schema (``space`` as the YAML ``space:``
section, the estimator's own non-default hyperparameters as ``fixed``), so its
errors are the spec's one-line errors, and opens a ``Sweep`` over the caller's splits
(``check_cv``): the engine batches trials and folds into compiled programs, prunes and
stops early when asked, and records every trial in an Optuna study (in memory unless
``storage`` is given; MLflow only when a tracking URI is given or set in
``MLFLOW_TRACKING_URI``). The study's trials become ``cv_results_``; the best
configuration is refit as an estimator of the same class on all the rows.
"""

from __future__ import annotations

import numbers
import os
import time
import uuid
from collections.abc import Mapping

import numpy as np
from optuna.trial import TrialState
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import get_scorer
from sklearn.model_selection import ParameterGrid, check_cv
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from tuner.errors import SpecError
from tuner.inputs.spec import ARRAYS_SOURCE, parse_spec
from tuner.search.space import grid_points
from tuner.search.study import ATTR_REFIT_EPOCHS, MEMORY_STORAGE
from tuner.sklearn.data import (
    EstimatorInputError,
    check_input,
    classifier_target,
    regressor_target,
    to_dataset,
)
from tuner.sklearn.estimators import JaxMLPClassifier, JaxMLPRegressor
from tuner.sklearn.results import cv_results
from tuner.sklearn.scoring import resolve_scoring

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _best_has(name: str):
    def check(self) -> bool:
        if hasattr(self, "best_estimator_"):
            getattr(self.best_estimator_, name)
            return True
        getattr(self.estimator, name)
        return True
    return check


class MLPSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Hyperparameter search over a ``JaxMLPClassifier`` / ``JaxMLPRegressor``.

    space: the YAML ``space:`` section as a dict (a list = choices / grid values, a
        mapping = a range: ``{low, high, log, step}``).
    method: "tpe", "random" or "grid"; n_trials: the budget (grid: the whole grid
        when None; others: 20).
    cv: what scikit-learn's ``cv`` takes (None = 5 folds, int, splitter, iterable of
        (train, test) index pairs); stratified for classifiers as scikit-learn's.
    scoring: None (accuracy / r2), one of our metrics (accuracy, f1_macro, roc_auc,
        log_loss, mse, rmse, mae, r2) or a scikit-learn scorer name of the same number
        (``tuner.sklearn.scoring.SKLEARN_SCORERS``). Losses are reported negated.
    refit: fit ``best_estimator_`` on all the rows (True) or not (False).
    batch: trials trained together; pruner, early_stopping: as the YAML ``search:``
        section; random_state: seeds the sampler, every trial's training and the refit.
    storage: an Optuna storage URL (default: in memory); tracking_uri: MLflow (default:
        ``MLFLOW_TRACKING_URI`` when set, else no tracking); study_name: the study's
        and experiment's name (default: a new unique name per fit).
    """

    def __init__(self, estimator, space, *, method="tpe", n_trials=None, cv=None,
                 scoring=None, refit=True, batch=16, pruner=None, early_stopping=None,
                 random_state=None, storage=None, tracking_uri=None, study_name=None):
        self.estimator = estimator
        self.space = space
        self.method = method
        self.n_trials = n_trials
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.batch = batch
        self.pruner = pruner
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.storage = storage
        self.tracking_uri = tracking_uri
        self.study_name = study_name

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, groups=None):
        """Run the sweep over the splits of ``cv`` and refit the best configuration.
        ``sample_weight`` weighs training rows (validation scores are unweighted, as
        scikit-learn's scorers without metadata routing)."""
        if not isinstance(self.estimator, (JaxMLPClassifier, JaxMLPRegressor)):
            raise EstimatorInputError(f"estimator: expected a JaxMLPClassifier or "
                                      f"JaxMLPRegressor, got {type(self.estimator).__name__}")
        if not isinstance(self.refit, bool):
            raise EstimatorInputError(f"refit: expected True or False, got {self.refit!r}")
        classifier = is_classifier(self.estimator)
        X_raw, y_raw = X, y
        X, y, sample_weight = check_input(self, X, y, classifier=classifier,
                                          sample_weight=sample_weight)
        if classifier:
            y_enc, task, _ = classifier_target(y)
        else:
            y_enc, task = regressor_target(y), "regression"
        scoring = resolve_scoring(self.scoring, task)
        seed = self._seed()
        splits = list(check_cv(self.cv, y, classifier=classifier and task != "multilabel")
                      .split(X, y, groups))
        spec = parse_spec(self._spec_dict(task, scoring.metric, len(splits), seed)
                          ).with_task(task)
        dataset = to_dataset(X, y_enc, task, sample_weight,
                             feature_names=getattr(self, "feature_names_in_", None))

        outcome = self._run_sweep(spec, dataset, splits)
        self.study_ = outcome.study
        self.scoring_ = scoring
        self.n_splits_ = len(splits)
        self.multimetric_ = False
        trials, scores = self._trial_scores(outcome, spec, len(splits))
        # names sorted, as ParameterGrid's (and so GridSearchCV's) candidates
        self.cv_results_ = cv_results([dict(sorted(t.params.items())) for t in trials],
                                      scoring.sign * scores, *self._times(trials, len(splits)))
        means = self.cv_results_["mean_test_score"]
        if np.isnan(means).all():
            raise EstimatorInputError("every trial failed or was pruned; no best "
                                      "configuration (see study_.trials)")
        self.best_index_ = int(self.cv_results_["rank_test_score"].argmin())
        self.best_params_ = self.cv_results_["params"][self.best_index_]
        self.best_score_ = float(means[self.best_index_])
        if self.refit:
            self._refit_best(trials[self.best_index_], spec, seed, X_raw, y_raw,
                             sample_weight)
        return self

    def _run_sweep(self, spec, dataset, splits):
        """The engine's sweep over ``splits``: its ``SweepOutcome``."""
        from tuner.execution.session import open_sweep

        tracking = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        sweep = open_sweep(spec, dataset, storage=self.storage or MEMORY_STORAGE,
                           tracking_uri=tracking, track=tracking is not None,
                           splits=splits, study_name=spec.name, batch=self.batch)
        outcome = sweep.run(self.n_trials)
        sweep.finish(outcome, refit=False)  # closes the MLflow sweep run, if any
        if outcome.interrupted:
            raise KeyboardInterrupt
        return outcome

    def _refit_best(self, best, spec, seed: int, X, y, sample_weight) -> None:
        """``best_estimator_``: the estimator with the best parameters and the sweep's
        seed, fit on all rows (early stopped: for the epochs its score came from)."""
        update = {**self.best_params_, "random_state": seed}
        epochs = best.user_attrs.get(ATTR_REFIT_EPOCHS)
        if spec.search.early_stopping is not None and epochs is not None:
            update["epochs"] = int(epochs)
        started = time.perf_counter()
        self.best_estimator_ = clone(self.estimator).set_params(**update).fit(
            X, y, sample_weight=sample_weight)
        self.refit_time_ = time.perf_counter() - started

    def _seed(self) -> int:
        """The sweep seed: an int as given (the spec checks its range), else drawn
        from ``random_state`` (None: numpy's global state), as scikit-learn does."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _spec_dict(self, task: str, metric: str, n_splits: int, seed: int) -> dict:
        """The search as a spec in the YAML schema (validated by ``parse_spec``)."""
        if not isinstance(self.space, Mapping):
            raise SpecError(f"space: expected a mapping of hyperparameter -> values or "
                            f"range, got {type(self.space).__name__}")
        fixed = {k: v for k, v in self.estimator.hparams().items() if k not in self.space}
        search = {"method": self.method, "batch": self.batch, "seed": seed}
        for key, value in (("trials", self.n_trials), ("pruner", self.pruner),
                           ("early_stopping", self.early_stopping)):
            if value is not None:
                search[key] = value
        name = self.study_name or f"mlpsearchcv-{uuid.uuid4().hex[:12]}"
        return {"name": name, "data": {"source": ARRAYS_SOURCE, "task": task},
                "cv": {"folds": n_splits, "stratified": False, "shuffle": False},
                "search": search, "metric": metric, "fixed": fixed,
                "space": dict(self.space), "learning_curve": False}

    @staticmethod
    def _trial_scores(outcome, spec, n_splits: int):
        """The counted trials in candidate order (a grid: ``ParameterGrid``'s, as
        ``GridSearchCV``; otherwise trial order) and their per-split scores [C, K] in
        the engine's metric (NaN for failed or pruned trials)."""
        trials = [t for t in outcome.study.get_trials(deepcopy=False) if t.state in COUNTED]
        if spec.search.method == "grid":
            order = {_key(p): i for i, p in enumerate(ParameterGrid(grid_points(spec)))}
            trials.sort(key=lambda t: order[_key(t.params)])
        scores = np.full((len(trials), n_splits), np.nan)
        metric = f"val_{spec.metric}"
        for i, t in enumerate(trials):
            rec = outcome.records.get(t.number)
            if t.state == TrialState.COMPLETE and rec is not None:
                # the epoch whose fold mean is the trial's value (Judge._complete)
                scores[i] = rec.curves[metric][:, rec.refit_epochs - 1].astype(float)
        return trials, scores

    @staticmethod
    def _times(trials, n_splits: int) -> tuple[np.ndarray, np.ndarray]:
        """Fit time per split: the trial's time from ask to tell over its splits (its
        folds train together in one program); scoring happens inside the program: 0."""
        fit = np.array([[(t.duration.total_seconds() if t.duration else 0.0) / n_splits]
                        * n_splits for t in trials]).reshape(len(trials), n_splits)
        return fit, np.zeros_like(fit)

    # ------------------------------------------------------------------ delegation
    def _best(self):
        check_is_fitted(self, "cv_results_")
        if not self.refit:
            raise AttributeError("refit=False: no best_estimator_; fit with refit=True "
                                 "to predict")
        return self.best_estimator_

    @available_if(_best_has("predict"))
    def predict(self, X):
        return self._best().predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X):
        return self._best().predict_proba(X)

    @available_if(_best_has("predict_log_proba"))
    def predict_log_proba(self, X):
        return self._best().predict_log_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X):
        return self._best().decision_function(X)

    def score(self, X, y, sample_weight=None):
        """The scorer of ``scoring`` (scikit-learn's, of the same number) on X, y."""
        best = self._best()
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        return get_scorer(self.scoring_.scorer)(best, X, y, **kwargs)

    @property
    def classes_(self):
        return self._best().classes_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sub = self.estimator.__sklearn_tags__()
        tags.estimator_type = sub.estimator_type
        tags.classifier_tags = sub.classifier_tags
        tags.regressor_tags = sub.regressor_tags
        tags.target_tags = sub.target_tags
        tags.input_tags.allow_nan = True
        return tags


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
