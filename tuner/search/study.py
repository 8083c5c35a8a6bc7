"""The study's storage: opening it, creating or loading the study, checking that a
stored study was made from the same spec and data.

The study keeps what a worker needs to join it: the spec (YAML), its fingerprint, the
data fingerprint and the trial budget, as study user attributes.
"""

from __future__ import annotations

import logging
import os
import time

import optuna
from optuna.storages import RDBStorage

from tuner.errors import InputError, SpecError
from tuner.inputs.spec import SweepSpec, parse_yaml
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
ATTR_REFIT_EPOCHS = "refit_epochs"  # early stopping: the epochs that produced the value


class StorageError(InputError):
    """The study storage cannot be reached or used (exit code 2)."""


# --------------------------------------------------------------------------- storage
def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver this package installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# A study kept in this process's memory only (scikit-learn's MLPSearchCV by default).
MEMORY_STORAGE = "memory"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_memory(url: str) -> bool:
    return url == MEMORY_STORAGE


def open_storage(url: str, on_stale=None) -> RDBStorage | optuna.storages.InMemoryStorage:
    """RDB storage with heartbeats; ``on_stale(study, trial)`` runs for stale trials.
    ``"memory"`` is Optuna's in-memory storage (one process, nothing kept).

    Workers that open a fresh database at the same moment race to create Optuna's tables
    (PostgreSQL: duplicate key in pg_type, relation already exists, version row already
    there); the loser finds them made, so it opens the storage again.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    if is_memory(url):
        return optuna.storages.InMemoryStorage()
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
