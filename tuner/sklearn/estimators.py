"""One JAX MLP as a scikit-learn estimator: ``JaxMLPClassifier``, ``JaxMLPRegressor``.

The constructor arguments are the hyperparameters of ``models.hparams.HPARAM_TABLE``
(names and defaults from that one table, never repeated here) plus ``random_state``.
``fit`` trains with the engine's refit path (``tuner.summary.model.refit``): the
imputer and scaler fit on the rows, one lane of one compiled program, the keys from
``random_state``. Programs are shared by every estimator of the process
(``shared_programs``) and rows are padded (to 256, or the next power of two), so fits
of similar data compile nothing new.
"""

from __future__ import annotations

import inspect
import math
import threading

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from models import ProgramCache
from models.hparams import HPARAM_TABLE, HPARAMS, MAX_BATCH_SIZE
from tuner.inputs.spec.values import check_value
from tuner.sklearn.data import (
    EstimatorInputError,
    check_input,
    classifier_target,
    regressor_target,
    to_dataset,
)

HPARAM_NAMES: tuple[str, ...] = tuple(p.name for p in HPARAM_TABLE)
MIN_PADDED_ROWS = 256
PREDICT_ROWS = 256

_programs: ProgramCache | None = None
_programs_lock = threading.Lock()


def shared_programs() -> ProgramCache:
    """The process's program cache for estimator fits (the persistent compilation
    cache and program store set up as for a sweep)."""
    global _programs
    with _programs_lock:
        if _programs is None:
            from tuner.runtime import program_cache

            _programs = program_cache()
        return _programs


def padded_rows(n: int) -> int:
    """The row count a fit of ``n`` rows is padded to: at least MIN_PADDED_ROWS, else
    the next power of two. Padded rows weigh 0 and cost only compute, which for small
    tables (whose sizes vary most) is far less than a compile of ~3 s."""
    rows = max(MIN_PADDED_ROWS, 1 << (n - 1).bit_length())
    return rows if rows <= MAX_BATCH_SIZE else n


def _with_hparam_signature(cls):
    """Give ``cls.__init__`` the explicit signature scikit-learn reads
    (``get_params``, ``clone``): one keyword argument per row of HPARAM_TABLE, with
    its default, then ``random_state``."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
               for p in HPARAM_TABLE]
    params.append(inspect.Parameter("random_state", inspect.Parameter.KEYWORD_ONLY,
                                    default=None))

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(HPARAM_NAMES) - {"random_state"})
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword "
                            f"argument(s) {unknown}")
        for p in HPARAM_TABLE:
            setattr(self, p.name, kwargs.get(p.name, p.default))
        self.random_state = kwargs.get("random_state")

    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__name__}.__init__"
    __init__.__doc__ = cls.__init__.__doc__
    cls.__init__ = __init__
    return cls


class _JaxMLP(BaseEstimator):
    """What both estimators share: hyperparameters -> one trained network."""

    _classifier = False

    def __init__(self, **kwargs):
        """Keyword arguments: the hyperparameters of ``models.hparams.HPARAM_TABLE``
        (docs/models.md) and ``random_state`` (int, RandomState or None)."""

    # ------------------------------------------------------------------ parameters
    def hparams(self) -> dict:
        """The hyperparameters that differ from the table's defaults, validated (a bad
        one is a one-line ValueError naming it). Defaults are left out so that an
        optimizer's own defaults hold (adamw's weight decay)."""
        out = {}
        for p in HPARAM_TABLE:
            value = getattr(self, p.name)
            if _same(value, p.default):
                continue
            try:
                out[p.name] = check_value(p.name, value)
            except ValueError as e:
                raise EstimatorInputError(f"{p.name}: {e}") from None
        return out

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and \
                not isinstance(self.random_state, bool):
            if not 0 <= int(self.random_state) < 2**32:
                raise EstimatorInputError(f"random_state must be in [0, 2**32 - 1], got "
                                          f"{self.random_state}")
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Train on X [n, d] (NaN imputed) and y; ``sample_weight`` [n] weighs the
        rows of the training loss (0 leaves a row out)."""
        params = self.hparams()
        seed = self._seed()
        X, y, sample_weight = check_input(self, X, y, classifier=self._classifier,
                                          sample_weight=sample_weight)
        if self._classifier:
            y_enc, task, self.classes_ = classifier_target(y)
        else:
            y_enc, task = regressor_target(y), "regression"
        dataset = to_dataset(X, y_enc, task, sample_weight)
        from tuner.summary.model import refit

        model = refit(dataset, params, seed, 0, programs=shared_programs(),
                      pad_rows=padded_rows(dataset.n_samples))
        if model is None:
            raise EstimatorInputError(
                "training diverged (a non-finite loss); lower learning_rate or add "
                "clip_norm")
        self.model_ = model
        self.task_ = task
        self.n_outputs_ = dataset.n_outputs
        return self

    def _outputs(self, X, how: str) -> np.ndarray:
        """The network's ``logits`` or ``predict`` for X, in chunks of PREDICT_ROWS
        rows (the last one padded): one compiled shape, and a row's output does not
        depend on the rows predicted with it."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                          dtype=np.float64)
        x = self.model_.inputs(X)
        n = len(x)
        padded = np.zeros((-(-n // PREDICT_ROWS) * PREDICT_ROWS, x.shape[1]), x.dtype)
        padded[:n] = x
        method = getattr(self.model_.model, how)
        return np.concatenate([method(padded[i:i + PREDICT_ROWS])
                               for i in range(0, len(padded), PREDICT_ROWS)])[:n]

    def _logits(self, X) -> np.ndarray:
        return self._outputs(X, "logits")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _same(value, default) -> bool:
    if isinstance(value, float) and isinstance(default, float) and math.isinf(default):
        return value == default
    return type(value) is type(default) and value == default


@_with_hparam_signature
class JaxMLPClassifier(ClassifierMixin, _JaxMLP):
    """A JAX MLP classifier (binary, multiclass, multilabel indicator targets).

    Every hyperparameter of ``models.hparams.HPARAM_TABLE`` is a keyword argument with
    the table's default (docs/models.md); ``random_state`` seeds initialisation,
    minibatch order and dropout.

    Attributes: ``classes_`` (labels; multilabel: 0..k-1), ``n_features_in_``,
    ``feature_names_in_`` (DataFrame input), ``n_outputs_``, ``model_``
    (``tuner.summary.model.BestModel``).
    """

    _classifier = True

    def predict(self, X) -> np.ndarray:
        """Labels [n] (multilabel: 0/1 [n, k])."""
        z = self._logits(X)
        if self.task_ == "multilabel":
            return (z > 0).astype(np.int64)
        ids = (z[:, 0] > 0).astype(np.int64) if self.task_ == "binary" else z.argmax(axis=1)
        return self.classes_[ids]

    def predict_proba(self, X) -> np.ndarray:
        """[n, C] class probabilities (binary [n, 2]; multilabel [n, k] per label)."""
        z = self._logits(X).astype(np.float64)
        if self.task_ == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        p = 1.0 / (1.0 + np.exp(-z))
        return np.hstack([1.0 - p, p]) if self.task_ == "binary" else p

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X) -> np.ndarray:
        """Logits: [n] for binary (of the second class), [n, C] / [n, k] otherwise."""
        z = self._logits(X)
        return z[:, 0] if self.task_ == "binary" else z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        # multiclass-multioutput targets: no such head (fit says so)
        tags.target_tags.multi_output = False
        return tags


@_with_hparam_signature
class JaxMLPRegressor(RegressorMixin, _JaxMLP):
    """A JAX MLP regressor (one or several targets, standardised while training).

    Every hyperparameter of ``models.hparams.HPARAM_TABLE`` is a keyword argument with
    the table's default (docs/models.md); ``random_state`` seeds initialisation,
    minibatch order and dropout.
    """

    def predict(self, X) -> np.ndarray:
        """Values [n] (several targets: [n, k]) in the target's units."""
        return self._outputs(X, "predict").astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


assert set(HPARAM_NAMES) == set(HPARAMS)
