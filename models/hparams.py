"""Hyperparameters, split into the static program signature and traced per-lane arrays.

A *lane* is one (trial, fold) pair inside a compiled program. Everything in
``Signature`` shapes the program (each distinct value is one compilation); everything
in ``LaneHparams`` is an array with a leading trial axis [P] and never recompiles.

Choices that look structural are traced where that is cheap, so one program serves
a mixed batch: the hidden width is a bucket (lanes use a unit mask), depth is a
maximum (shallower lanes pass through masked layers), and activation, optimizer,
init scheme and schedule are per-lane selector ids into the tuples of the signature.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

TASKS = ("regression", "binary", "multiclass", "multilabel")
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu")
NORMS = ("none", "batch", "layer")
INITS = ("gaussian", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")
# "xavier"/"kaiming" alone mean the normal variant.
INIT_ALIASES = {"xavier": "xavier_normal", "kaiming": "kaiming_normal", "he": "kaiming_normal"}
# gd is full-batch gradient descent: SGD whose batch is the whole training fold.
OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "exponential", "step", "cosine", "warmup_cosine")

# Optimizers sharing one optax update rule; the numeric hyperparameters tell them apart
# (sgd = momentum 0, adam = adamw with weight decay 0), so they need no selector.
OPTIMIZER_FAMILY = {
    "gd": "sgd", "sgd": "sgd", "momentum": "sgd", "nesterov": "nesterov",
    "adagrad": "adagrad", "rmsprop": "rmsprop", "adam": "adam", "adamw": "adam",
}

# Defaults for every numeric hyperparameter (the documented meaning is in docs/models.md).
NUMERIC_DEFAULTS: dict[str, float] = {
    "learning_rate": 1e-3,
    "momentum": 0.9,        # momentum / nesterov; forced to 0 for sgd and gd
    "beta1": 0.9,           # adam / adamw
    "beta2": 0.999,
    "rho": 0.9,             # rmsprop decay of the squared-gradient average
    "eps": 1e-8,
    "l1": 0.0,              # penalty l1 * sum|W| on weights (not biases)
    "l2": 0.0,              # penalty 0.5 * l2 * sum W^2 on weights (not biases)
    "weight_decay": 0.0,    # decoupled: W -= lr * weight_decay * W (adamw default below)
    "dropout": 0.0,         # drop probability on hidden units
    "init_scale": 0.01,     # sigma of the gaussian init
    "leaky_slope": 0.01,    # negative slope of leaky_relu; initial slope of prelu is 0.25
    "decay_rate": 0.5,      # exponential/step schedules: factor per decay_epochs
    "decay_epochs": 10.0,
    "warmup_fraction": 0.1, # warmup_cosine: share of all steps spent warming up
    "clip_norm": math.inf,  # gradient clipping by global norm; inf = off
}
ADAMW_DEFAULT_WEIGHT_DECAY = 1e-4  # optax's default for adamw


@dataclasses.dataclass(frozen=True)
class Signature:
    """Static shape of one compiled training program (hashable: a jit static arg).

    depth: the largest number of hidden layers among its lanes (0 = linear model;
        a depth-0 program serves only depth-0 lanes).
    width: the hidden-width bucket; lanes use ``width_l <= width`` units.
    activations/optimizers/inits/schedules: the choices its lanes select from.
    batch_size: minibatch rows (``gd`` lanes use the whole padded fold).
    epochs: the largest epoch count; lanes with fewer epochs freeze after theirs.
    """

    task: str
    n_features: int
    n_outputs: int
    depth: int
    width: int
    activations: tuple[str, ...] = ("relu",)
    norm: str = "none"
    optimizers: tuple[str, ...] = ("adam",)
    inits: tuple[str, ...] = ("kaiming_uniform",)
    schedules: tuple[str, ...] = ("constant",)
    batch_size: int = 64
    epochs: int = 10
    # Which optional terms any lane uses. A term no lane needs is left out of the
    # program: each costs passes over every weight at every step.
    dropout: bool = False
    l1: bool = False
    l2: bool = False
    weight_decay: bool = False
    clip: bool = False
    # Validation metrics scored every epoch; () = every metric of the task. Scoring only
    # the one a sweep optimises saves most of the evaluation (AUC sorts, F1 counts).
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("norm", self.norm, NORMS)
        for name, values, allowed in (
            ("activations", self.activations, ACTIVATIONS),
            ("optimizers", self.optimizers, tuple(set(OPTIMIZER_FAMILY.values()))),
            ("inits", self.inits, INITS),
            ("schedules", self.schedules, SCHEDULES),
        ):
            if not values:
                raise ValueError(f"Signature.{name} must not be empty")
            for v in values:
                _check_choice(name, v, allowed)
        if self.depth < 0 or self.width < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"bad Signature sizes: {self}")


class LaneHparams(NamedTuple):
    """Traced per-trial hyperparameters, each an array of shape [P].

    Integer fields: depth, width (real sizes, <= the signature's), activation,
    optimizer, init, schedule (indices into the signature's tuples), epochs and
    trial (a lane's keys derive from (sweep seed, trial, fold), never from its slot).
    """

    learning_rate: np.ndarray
    momentum: np.ndarray
    beta1: np.ndarray
    beta2: np.ndarray
    rho: np.ndarray
    eps: np.ndarray
    l1: np.ndarray
    l2: np.ndarray
    weight_decay: np.ndarray
    dropout: np.ndarray
    init_scale: np.ndarray
    leaky_slope: np.ndarray
    decay_rate: np.ndarray
    decay_epochs: np.ndarray
    warmup_fraction: np.ndarray
    clip_norm: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    activation: np.ndarray
    optimizer: np.ndarray
    init: np.ndarray
    schedule: np.ndarray
    epochs: np.ndarray
    trial: np.ndarray


INT_FIELDS = frozenset(
    {"depth", "width", "activation", "optimizer", "init", "schedule", "epochs",
     "trial"}
)


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One trial's complete hyperparameters in user terms (names as in the YAML)."""

    depth: int = 1
    width: int = 64
    activation: str = "relu"
    norm: str = "none"
    optimizer: str = "adam"
    init: str = "kaiming_uniform"
    schedule: str = "constant"
    batch_size: int = 64
    epochs: int = 10
    numeric: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    trial: int = 0

    @classmethod
    def from_dict(cls, params: dict, *, seed: int = 0, trial: int = 0) -> "TrialConfig":
        """Build from a flat dict of hyperparameters; unknown names raise ValueError."""
        params = dict(params)
        structural = {f.name for f in dataclasses.fields(cls)} - {"numeric", "seed", "trial"}
        kwargs = {k: params.pop(k) for k in list(params) if k in structural}
        unknown = set(params) - set(NUMERIC_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {sorted(unknown)}")
        if "init" in kwargs:
            kwargs["init"] = INIT_ALIASES.get(kwargs["init"], kwargs["init"])
        for k in ("depth", "width", "batch_size", "epochs"):
            if k in kwargs:
                kwargs[k] = int(kwargs[k])
        numeric = tuple(sorted((k, float(v)) for k, v in params.items()))
        cfg = cls(**kwargs, numeric=numeric, seed=int(seed), trial=int(trial))
        cfg.validate()
        return cfg

    def numeric_value(self, name: str) -> float:
        values = dict(self.numeric)
        if name in values:
            return values[name]
        if name == "weight_decay" and self.optimizer == "adamw":
            return ADAMW_DEFAULT_WEIGHT_DECAY
        return NUMERIC_DEFAULTS[name]

    def validate(self) -> None:
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("init", self.init, INITS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        if self.width < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError(
                f"width, batch_size and epochs must be >= 1, got "
                f"{self.width}, {self.batch_size}, {self.epochs}"
            )
        dropout = self.numeric_value("dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def signature_for(configs: list[TrialConfig], task: str, n_features: int, n_outputs: int,
                  n_train: int) -> Signature:
    """The smallest Signature that serves every config in ``configs``.

    ``n_train`` is the padded fold size, the batch of full-batch (gd) lanes.
    Raises ValueError when the configs cannot share a program (different norm or
    batch size, or depth 0 mixed with hidden layers).
    """
    norms = {c.norm for c in configs}
    batches = {n_train if c.optimizer == "gd" else min(c.batch_size, n_train) for c in configs}
    linear = {c.depth == 0 for c in configs}
    if len(norms) > 1 or len(batches) > 1 or len(linear) > 1:
        raise ValueError("configs differ in norm, batch size or linear-vs-hidden; "
                         "they need separate programs")
    return Signature(
        task=task,
        n_features=n_features,
        n_outputs=n_outputs,
        depth=max(c.depth for c in configs),
        width=max(c.width for c in configs),
        activations=_ordered({c.activation for c in configs}, ACTIVATIONS),
        norm=norms.pop(),
        optimizers=_ordered({OPTIMIZER_FAMILY[c.optimizer] for c in configs},
                            ("sgd", "nesterov", "adagrad", "rmsprop", "adam")),
        inits=_ordered({c.init for c in configs}, INITS),
        schedules=_ordered({c.schedule for c in configs}, SCHEDULES),
        batch_size=batches.pop(),
        epochs=max(c.epochs for c in configs),
        dropout=any(c.numeric_value("dropout") > 0 for c in configs),
        l1=any(c.numeric_value("l1") > 0 for c in configs),
        l2=any(c.numeric_value("l2") > 0 for c in configs),
        weight_decay=any(c.numeric_value("weight_decay") > 0 for c in configs),
        clip=any(math.isfinite(c.numeric_value("clip_norm")) for c in configs),
    )


def lane_hparams(configs: list[TrialConfig], sig: Signature) -> LaneHparams:
    """Stack configs into traced per-lane arrays for program ``sig``."""
    cols: dict[str, list] = {name: [] for name in LaneHparams._fields}
    for c in configs:
        for name in NUMERIC_DEFAULTS:
            cols[name].append(c.numeric_value(name))
        if c.optimizer in ("sgd", "gd"):
            cols["momentum"][-1] = 0.0
        cols["depth"].append(c.depth)
        cols["width"].append(c.width)
        cols["activation"].append(sig.activations.index(c.activation))
        cols["optimizer"].append(sig.optimizers.index(OPTIMIZER_FAMILY[c.optimizer]))
        cols["init"].append(sig.inits.index(c.init))
        cols["schedule"].append(sig.schedules.index(c.schedule))
        cols["epochs"].append(c.epochs)
        cols["trial"].append(c.trial)
    return LaneHparams(**{
        name: np.asarray(v, np.int32 if name in INT_FIELDS else np.float32)
        for name, v in cols.items()
    })


def _ordered(values: set[str], order: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in order if v in values)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}: unknown choice {value!r}; expected one of {list(allowed)}")
