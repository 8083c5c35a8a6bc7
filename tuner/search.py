"""Optuna side of a sweep: storage, study, sampler, distributions and the trial budget.

The study keeps what a worker needs to join it: the spec (YAML), its fingerprint, the
data fingerprint and the trial budget, as study user attributes.
"""

from __future__ import annotations

import logging
import math
import os
import time

import optuna
from optuna.distributions import (
    BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import InputError, SpecError
from tuner.spec import Range, SweepSpec, grid_points, parse_yaml
from tuner.stores import redact_url

log = logging.getLogger(__name__)

# A worker records a heartbeat for its running trials every HEARTBEAT_INTERVAL_S; a
# trial silent for GRACE_PERIOD_S is stale: failed, its run closed, and retried (at most
# MAX_RETRY times). The environment can shorten them (tests, fast-failing clusters).
HEARTBEAT_INTERVAL_S = int(os.environ.get("TUNER_HEARTBEAT_S", "5"))
GRACE_PERIOD_S = int(os.environ.get("TUNER_GRACE_S", "20"))
MAX_RETRY = int(os.environ.get("TUNER_MAX_RETRY", "3"))

ATTR_SPEC = "spec_yaml"
ATTR_SPEC_FP = "spec_fingerprint"
ATTR_DATA_FP = "data_fingerprint"
ATTR_TARGET = "target_trials"
ATTR_RUN_ID = "mlflow_run_id"
ATTR_LOST = "lost"  # a trial lost to a crash/interrupt: retried, not counted
ATTR_FAIL_REASON = "fail_reason"


class StorageError(InputError):
    """The study storage cannot be reached or used (exit code 2)."""


# --------------------------------------------------------------------------- space
def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, entry in spec.space.items():
        if isinstance(entry, Range):
            if entry.type == "int":
                out[name] = IntDistribution(int(entry.low), int(entry.high), log=entry.log,
                                            step=int(entry.step or 1))
            else:
                out[name] = FloatDistribution(float(entry.low), float(entry.high),
                                              log=entry.log, step=entry.step)
        else:
            out[name] = CategoricalDistribution(list(entry))
    return out


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


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    return {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }[spec.search.pruner]()


DEFAULT_TRIALS = 20


def target_trials(spec: SweepSpec, trials: int | None) -> int:
    """The study's budget: asked for, else the spec's; a grid holds at most its points."""
    wanted = trials if trials is not None else spec.search.trials
    if spec.search.method == "grid":
        size = math.prod(len(v) for v in grid_points(spec).values())
        if wanted is not None and wanted > size:
            log.warning("the grid has %d points; %d trials asked, running %d", size, wanted, size)
        return size if wanted is None else min(wanted, size)
    return DEFAULT_TRIALS if wanted is None else wanted


# --------------------------------------------------------------------------- storage
def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver this package installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_storage(url: str, on_stale=None) -> RDBStorage:
    """RDB storage with heartbeats; ``on_stale(study, trial)`` runs for stale trials.

    Workers that open a fresh database at the same moment race to create Optuna's tables
    (PostgreSQL: duplicate key in pg_type, relation already exists, version row already
    there); the loser finds them made, so it opens the storage again.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempts = 1 if is_sqlite(url) else 3
    for attempt in range(attempts):
        try:
            return RDBStorage(
                normalise_url(url),
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=on_stale,
                engine_kwargs={"pool_pre_ping": True} if not is_sqlite(url) else None,
            )
        except Exception as exc:  # noqa: BLE001 - every storage failure is one line
            if isinstance(exc, (IntegrityError, ProgrammingError)) and attempt + 1 < attempts:
                time.sleep(0.5)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"storage {redact_url(url)}: cannot open: {first}") from None
    raise AssertionError("unreachable")


def create_or_load_study(storage: RDBStorage, name: str, spec: SweepSpec, data_fp: str,
                         sampler, pruner) -> optuna.Study:
    """Create the study, or load it and check that spec and data are the same."""
    direction = "maximize" if spec.greater_is_better else "minimize"
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    pruner=pruner, direction=direction, load_if_exists=True)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"study {name!r}: cannot create or load: "
                           f"{str(exc).splitlines()[0]}") from None
    attrs = study.user_attrs
    if ATTR_SPEC_FP not in attrs:
        study.set_user_attr(ATTR_SPEC, spec.to_yaml())
        study.set_user_attr(ATTR_SPEC_FP, spec.fingerprint())
        study.set_user_attr(ATTR_DATA_FP, data_fp)
        return study
    if attrs[ATTR_SPEC_FP] != spec.fingerprint():
        stored = parse_yaml(attrs[ATTR_SPEC])
        fields = ", ".join(stored.diff(spec)) or "the spec"
        raise SpecError(f"study {name!r} was made from a different spec (differs in: "
                        f"{fields}); use --study NAME for a new sweep")
    check_data(study, data_fp)
    return study


def check_data(study: optuna.Study, data_fp: str) -> None:
    stored = study.user_attrs.get(ATTR_DATA_FP)
    if stored is not None and stored != data_fp:
        raise SpecError(f"study {study.study_name!r} was made from different data "
                        f"(fingerprint {stored[:12]} here {data_fp[:12]}); "
                        "use --study NAME for a new sweep")


def load_study(storage: RDBStorage, name: str, sampler=None, pruner=None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                 pruner=pruner)
    except KeyError:
        raise StorageError(f"study {name!r}: not found in the storage") from None


def stored_spec(study: optuna.Study) -> SweepSpec:
    text = study.user_attrs.get(ATTR_SPEC)
    if text is None:
        raise StorageError(f"study {study.study_name!r} was not made by tuner (no spec)")
    return parse_yaml(text)


# --------------------------------------------------------------------------- budget
def lost_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials lost to a crash, an interrupt or a dead worker (and so retried)."""
    lost = {t.number for t in trials if ATTR_LOST in t.user_attrs}
    for t in trials:
        lost.update(t.system_attrs.get("retry_history", []))
    return lost


def budget_state(study: optuna.Study) -> tuple[int, int, int]:
    """(counted, running, waiting) trials of the study.

    Finished trials count, diverged ones included; trials lost to a crash do not.
    """
    trials = study.get_trials(deepcopy=False)
    lost = lost_numbers(trials)
    counted = sum(t.state.is_finished() and t.number not in lost for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return counted, running, waiting


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def retried_from(trial: FrozenTrial) -> int | None:
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def key_trial(trial: FrozenTrial) -> int:
    """The trial number a trial trains with: a retry reuses its original trial's keys,
    so it reproduces the result that trial would have had."""
    origin = retried_from(trial)
    return trial.number if origin is None else origin


def live_trials(storage: RDBStorage, study: optuna.Study, running: list[FrozenTrial]
                ) -> list[FrozenTrial]:
    """RUNNING trials whose worker is alive: a heartbeat recorded, and not stale.

    Reads Optuna's heartbeat table (no public API tells whether a trial has a beat; a
    trial killed between ask and its first beat has none and is an orphan).
    """
    from optuna.storages._rdb.models import TrialHeartbeatModel

    stale = set(storage._get_stale_trial_ids(study._study_id))
    session = storage.scoped_session()
    try:
        return [t for t in running if t._trial_id not in stale
                and TrialHeartbeatModel.where_trial_id(t._trial_id, session) is not None]
    finally:
        session.close()
