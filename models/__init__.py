"""The training core: pure JAX + optax. Knows nothing of Optuna, MLflow or YAML.

Public surface (implementation modules are otherwise private to the package):

- vocabulary: ``HPARAMS`` (every hyperparameter: kind, default, domain, role),
  ``METRICS`` (every validation metric), ``TASKS``;
- configs: ``TrialConfig`` (one trial in user terms), ``Signature`` (a program's static
  shape), ``LaneHparams`` (traced per-lane arrays), ``signature_for``, ``lane_hparams``;
- data: ``FoldStack``, ``stack_folds``;
- training: ``ProgramCache`` (``.fit``), ``FitResult``, ``ProgramStore``;
- prediction: ``TrainedModel``.
"""

from models.folds import FoldStack, stack_folds
from models.hparams import (
    HPARAMS, TASKS, HParam, LaneHparams, Signature, TrialConfig, lane_hparams,
    signature_for,
)
from models.metrics import METRICS, MetricInfo
from models import program_store
from models.predict import TrainedModel
from models.program_store import ProgramStore
from models.programs import ProgramCache, ProgramStats
from models.train import FitResult

__all__ = [
    "HPARAMS", "METRICS", "TASKS", "FitResult", "FoldStack", "HParam", "LaneHparams",
    "MetricInfo", "ProgramCache", "ProgramStats", "ProgramStore", "Signature", "TrainedModel",
    "TrialConfig", "lane_hparams", "program_store", "signature_for", "stack_folds",
]
