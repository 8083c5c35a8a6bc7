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

from models.optim import family_coefficients

TASKS = ("regression", "binary", "multiclass", "multilabel")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A numeric domain such as ``[0, 1)``; ``allow_inf`` admits +inf as a value."""

    lo: float
    lo_closed: bool
    hi: float = math.inf
    hi_closed: bool = False
    allow_inf: bool = False

    def __contains__(self, v: float) -> bool:
        if v == math.inf and self.allow_inf:
            return True
        above = v >= self.lo if self.lo_closed else v > self.lo
        below = v <= self.hi if self.hi_closed else v < self.hi
        return above and below

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>=' if self.lo_closed else '>'} {_num(self.lo)}"
        return (f"in {'[' if self.lo_closed else '('}{_num(self.lo)}, "
                f"{_num(self.hi)}{']' if self.hi_closed else ')'}")


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyperparameter of the MLP: the single source of its name, kind, default,
    domain and role in a compiled program.

    kind: "int", "float" or "choice".
    role: how a program holds it:
      "shape"    - part of the program's shape; lanes of one program share it (batch
                   size);
      "bucket"   - a static maximum per program; a lane uses up to it (depth, width:
                   unit masks, pass-through layers);
      "selector" - a per-lane id into the program's static set of choices (activation,
                   norm, init, schedule; an optimizer is its family's coefficients);
      "traced"   - a per-lane array; never recompiles.
    """

    name: str
    kind: str
    default: object
    domain: Interval | tuple[str, ...]
    role: str
    aliases: tuple[tuple[str, str], ...] = ()  # choice spellings that mean another choice

    @property
    def choices(self) -> tuple[str, ...]:
        """Every accepted spelling of a choice hyperparameter (aliases last)."""
        assert self.kind == "choice"
        return tuple(self.domain) + tuple(a for a, _ in self.aliases)


_UNIT = Interval(0, True, 1, False)
_POSITIVE = Interval(0, False)
_NON_NEGATIVE = Interval(0, True)

# Upper limits of the sizes: a value past them cannot run, so the spec refuses it (exit 2)
# rather than every trial failing. Why each number: docs/decisions.md, "Limits".
MAX_EPOCHS = 100_000     # every epoch is a logged point of every curve of every trial
MAX_DEPTH = 64           # a program unrolls its layers: compile time grows with depth
MAX_WIDTH = 65_536       # width**2 = 2**32 weights: 16 GiB of float32 in one matrix
MAX_BATCH_SIZE = 2**24   # rows are counted in float32 sums, exact up to 2**24

# The vocabulary: every hyperparameter the core knows (docs/models.md gives the meaning).
HPARAM_TABLE: tuple[HParam, ...] = (
    HParam("learning_rate", "float", 1e-3, _POSITIVE, "traced"),
    HParam("batch_size", "int", 64, Interval(1, True, MAX_BATCH_SIZE, True), "shape"),
    # lanes past their own epochs freeze
    HParam("epochs", "int", 10, Interval(1, True, MAX_EPOCHS, True), "traced"),
    HParam("depth", "int", 1, Interval(0, True, MAX_DEPTH, True), "bucket"),
    HParam("width", "int", 64, Interval(1, True, MAX_WIDTH, True), "bucket"),
    # gd is full-batch gradient descent: SGD whose batch is the whole training fold.
    HParam("optimizer", "choice", "adam",
           ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"),
           "selector"),
    HParam("momentum", "float", 0.9, _UNIT, "traced"),      # forced to 0 for sgd and gd
    HParam("beta1", "float", 0.9, _UNIT, "traced"),         # adam / adamw
    HParam("beta2", "float", 0.999, _UNIT, "traced"),
    HParam("rho", "float", 0.9, _UNIT, "traced"),           # rmsprop's squared-gradient decay
    HParam("eps", "float", 1e-8, _POSITIVE, "traced"),
    HParam("activation", "choice", "relu",
           ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu"), "selector"),
    HParam("leaky_slope", "float", 0.01, _NON_NEGATIVE, "traced"),  # prelu starts at 0.25
    # glorot_uniform = xavier_uniform weights and biases drawn from the same bound, as
    # scikit-learn's MLP: the best default measured for every activation, relu included
    # (docs/decisions.md, "Default init").
    HParam("init", "choice", "glorot_uniform",
           ("gaussian", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform",
            "glorot_uniform"),
           "selector",
           # "xavier"/"kaiming" alone mean the normal variant.
           aliases=(("xavier", "xavier_normal"), ("kaiming", "kaiming_normal"),
                    ("he", "kaiming_normal"))),
    HParam("init_scale", "float", 0.01, _POSITIVE, "traced"),  # sigma of the gaussian init
    HParam("norm", "choice", "none", ("none", "batch", "layer"), "selector"),
    HParam("l1", "float", 0.0, _NON_NEGATIVE, "traced"),       # l1 * sum|W| on weights
    HParam("l2", "float", 0.0, _NON_NEGATIVE, "traced"),       # 0.5 * l2 * sum W^2 on weights
    HParam("weight_decay", "float", 0.0, _NON_NEGATIVE, "traced"),  # decoupled: W -= lr*wd*W
    HParam("dropout", "float", 0.0, _UNIT, "traced"),          # drop probability, hidden units
    HParam("schedule", "choice", "constant",
           ("constant", "exponential", "step", "cosine", "warmup_cosine"), "selector"),
    HParam("decay_rate", "float", 0.5, Interval(0, False, 1, True), "traced"),
    HParam("decay_epochs", "float", 10.0, _POSITIVE, "traced"),
    HParam("warmup_fraction", "float", 0.1, _UNIT, "traced"),
    HParam("clip_norm", "float", math.inf, Interval(0, False, allow_inf=True), "traced"),
)
HPARAMS: dict[str, HParam] = {p.name: p for p in HPARAM_TABLE}

# Derived views (never edit these; edit the table).
ACTIVATIONS: tuple[str, ...] = HPARAMS["activation"].domain  # type: ignore[assignment]
NORMS: tuple[str, ...] = HPARAMS["norm"].domain  # type: ignore[assignment]
INITS: tuple[str, ...] = HPARAMS["init"].domain  # type: ignore[assignment]
INIT_ALIASES: dict[str, str] = dict(HPARAMS["init"].aliases)
OPTIMIZERS: tuple[str, ...] = HPARAMS["optimizer"].domain  # type: ignore[assignment]
SCHEDULES: tuple[str, ...] = HPARAMS["schedule"].domain  # type: ignore[assignment]
NUMERIC_DEFAULTS: dict[str, float] = {p.name: p.default for p in HPARAM_TABLE
                                      if p.kind == "float"}  # type: ignore[misc]
CHOICE_DEFAULTS: dict[str, str] = {p.name: p.default for p in HPARAM_TABLE
                                   if p.kind == "choice"}  # type: ignore[misc]

# Optimizers sharing one optax update rule; the numeric hyperparameters tell them apart
# (sgd = momentum 0, adam = adamw with weight decay 0), so they need no selector.
OPTIMIZER_FAMILIES = ("sgd", "nesterov", "adagrad", "rmsprop", "adam")
OPTIMIZER_FAMILY = {
    "gd": "sgd", "sgd": "sgd", "momentum": "sgd", "nesterov": "nesterov",
    "adagrad": "adagrad", "rmsprop": "rmsprop", "adam": "adam", "adamw": "adam",
}
ADAMW_DEFAULT_WEIGHT_DECAY = 1e-4  # optax's default for adamw


def canonical_init(name: str) -> str:
    """The init scheme an alias means (``xavier`` -> ``xavier_normal``)."""
    return INIT_ALIASES.get(name, name)


@dataclasses.dataclass(frozen=True)
class Signature:
    """Static shape of one compiled training program (hashable: a jit static arg).

    depth: the largest number of hidden layers among its lanes (0 = linear model;
        a depth-0 program serves only depth-0 lanes).
    width: the hidden-width bucket; lanes use ``width_l <= width`` units.
    activations/norms/inits/schedules: the choices its lanes select from (a lane's
        normalisation is a selector too: batch and layer norm are elementwise work next
        to the matrix products, cheaper than a program each). (Optimizers need no
        choice: every family is one rule with per-lane coefficients, models.optim.)
    batch_size: minibatch rows (``gd`` lanes use the whole padded fold).
    (Epochs do not shape a program: it trains any segment of epochs, see models.train.)
    """

    task: str
    n_features: int
    n_outputs: int
    depth: int
    width: int
    activations: tuple[str, ...] = ("relu",)
    norms: tuple[str, ...] = ("none",)
    inits: tuple[str, ...] = ("glorot_uniform",)
    schedules: tuple[str, ...] = ("constant",)
    batch_size: int = 64
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
        for name, values, allowed in (
            ("activations", self.activations, ACTIVATIONS),
            ("norms", self.norms, NORMS),
            ("inits", self.inits, INITS),
            ("schedules", self.schedules, SCHEDULES),
        ):
            if not values:
                raise ValueError(f"Signature.{name} must not be empty")
            for v in values:
                _check_choice(name, v, allowed)
        if self.depth < 0 or self.width < 1 or self.batch_size < 1:
            raise ValueError(f"bad Signature sizes: {self}")


class LaneHparams(NamedTuple):
    """Traced per-trial hyperparameters, each an array of shape [P].

    Integer fields: depth, width (real sizes, <= the signature's), activation, init,
    schedule (indices into the signature's tuples), epochs and trial (a lane's keys
    derive from (sweep seed, trial, fold), never from its slot). The optimizer is its
    family's coefficients of the one update rule (``models.optim.family_coefficients``).
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
    norm: np.ndarray
    init: np.ndarray
    schedule: np.ndarray
    epochs: np.ndarray
    trial: np.ndarray
    # the optimizer family's rule (models.optim.scale_by_family)
    m_decay: np.ndarray
    m_gain: np.ndarray
    m_weight: np.ndarray
    g_weight: np.ndarray
    v_decay: np.ndarray
    v_gain: np.ndarray
    v_init: np.ndarray
    eps_in: np.ndarray
    eps_out: np.ndarray
    bias_correction: np.ndarray


INT_FIELDS = frozenset(
    {"depth", "width", "activation", "norm", "init", "schedule", "epochs", "trial"}
)
# Every traced hyperparameter of the table is a lane array.
assert set(NUMERIC_DEFAULTS) <= set(LaneHparams._fields), "LaneHparams lacks a traced hparam"


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One trial's complete hyperparameters in user terms (names as in the YAML)."""

    depth: int = HPARAMS["depth"].default  # type: ignore[assignment]
    width: int = HPARAMS["width"].default  # type: ignore[assignment]
    activation: str = HPARAMS["activation"].default  # type: ignore[assignment]
    norm: str = HPARAMS["norm"].default  # type: ignore[assignment]
    optimizer: str = HPARAMS["optimizer"].default  # type: ignore[assignment]
    init: str = HPARAMS["init"].default  # type: ignore[assignment]
    schedule: str = HPARAMS["schedule"].default  # type: ignore[assignment]
    batch_size: int = HPARAMS["batch_size"].default  # type: ignore[assignment]
    epochs: int = HPARAMS["epochs"].default  # type: ignore[assignment]
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
            kwargs["init"] = canonical_init(kwargs["init"])
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
        for name in ("depth", "width", "batch_size", "epochs"):
            value, domain = getattr(self, name), HPARAMS[name].domain
            if value not in domain:
                raise ValueError(f"{name} must be {domain}, got {value}")
        dropout = self.numeric_value("dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def signature_for(configs: list[TrialConfig], task: str, n_features: int, n_outputs: int,
                  n_train: int) -> Signature:
    """The smallest Signature that serves every config in ``configs``.

    ``n_train`` is the padded fold size, the batch of full-batch (gd) lanes.
    Raises ValueError when the configs cannot share a program (different batch size,
    or depth 0 mixed with hidden layers).
    """
    batches = {n_train if c.optimizer == "gd" else min(c.batch_size, n_train) for c in configs}
    linear = {c.depth == 0 for c in configs}
    if len(batches) > 1 or len(linear) > 1:
        raise ValueError("configs differ in batch size or linear-vs-hidden; "
                         "they need separate programs")
    return Signature(
        task=task,
        n_features=n_features,
        n_outputs=n_outputs,
        depth=max(c.depth for c in configs),
        width=max(c.width for c in configs),
        activations=_ordered({c.activation for c in configs}, ACTIVATIONS),
        norms=_ordered({c.norm for c in configs}, NORMS),
        inits=_ordered({c.init for c in configs}, INITS),
        schedules=_ordered({c.schedule for c in configs}, SCHEDULES),
        batch_size=batches.pop(),
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
        cols["norm"].append(sig.norms.index(c.norm))
        rule = family_coefficients(OPTIMIZER_FAMILY[c.optimizer], cols["momentum"][-1],
                                   *(c.numeric_value(n) for n in ("beta1", "beta2", "rho",
                                                                  "eps")))
        for name, value in rule.items():
            cols[name].append(value)
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
