"""One way in: every front (``tuner run``, ``tuner worker``, ``tuner.tune``) opens its
sweep here, so stores, process set-up and program caches are resolved in one place."""

from __future__ import annotations

import uuid

from models import ProgramCache
from tuner import stores
from tuner.execution.sweep import Sweep
from tuner.errors import DataError
from tuner.inputs.data import Dataset, load_data
from tuner.inputs.spec import SweepSpec
from tuner.runtime import program_cache, quiet_libraries


def open_sweep(spec: SweepSpec, dataset: Dataset, *, storage: str | None = None,
               tracking_uri: str | None = None, study_name: str | None = None,
               batch: int | None = None, track: bool = True, splits=None) -> Sweep:
    """A sweep over ``spec`` and ``dataset`` that creates its study or continues it.

    Without ``storage``/``tracking_uri`` the embedded stores under ``./mlruns`` are used
    (created here). ``track=False`` turns MLflow off; ``storage="memory"`` keeps the
    study in memory; ``splits`` replace the spec's folds."""
    programs = _process_setup()
    check_memory(dataset, len(splits) if splits is not None else spec.cv.folds, programs)
    if storage is not None and not track:
        storage_url, tracking, artifacts = storage, None, None  # nothing under mlruns/
    else:
        storage_url, tracking, artifacts = resolve_stores(storage, tracking_uri)
        tracking = tracking if track else None
    return Sweep(spec, dataset, storage_url=storage_url, tracking_uri=tracking,
                 artifact_location=artifacts, study_name=study_name or spec.name,
                 batch=batch, programs=programs, splits=splits)


def join_sweep(study_name: str, storage: str, *, tracking_uri: str | None = None,
               batch: int | None = None, worker: int | None = None) -> Sweep:
    """A worker on a study that another process created (the spec is the study's)."""
    from tuner.search.study import load_study, open_storage, stored_spec

    quiet_libraries()
    spec = stored_spec(load_study(open_storage(storage), study_name))
    dataset = load_data(spec.data)
    programs = _process_setup()
    check_memory(dataset, spec.cv.folds, programs)
    _, tracking, artifacts = resolve_stores(storage, tracking_uri)
    return Sweep(spec, dataset, storage_url=storage, tracking_uri=tracking,
                 artifact_location=artifacts, study_name=study_name, batch=batch,
                 worker=worker if worker is not None else uuid.uuid4().int % 100_000,
                 allow_create=False, programs=programs)


# The data goes to every device the trial axis is split over (CPU devices each hold a
# copy); training needs room beside it for programs and their working memory.
MEMORY_HEADROOM = 1.5


def check_memory(dataset: Dataset, folds: int, programs: ProgramCache) -> None:
    """DataError (exit 2, nothing written) when the data cannot fit the devices."""
    from models.programs import available_bytes, data_bytes

    targets = 1 if dataset.y.ndim == 1 else dataset.y.shape[1]
    needed = data_bytes(dataset.n_samples, dataset.n_features, targets, folds)
    copies = len(programs.devices)
    available = available_bytes(programs.devices[0])
    if available is None:
        return
    if needed * copies * MEMORY_HEADROOM > available:
        raise DataError(
            f"data: {dataset.n_samples} rows x {dataset.n_features} features need "
            f"{_gib(needed * copies * MEMORY_HEADROOM)} on the devices ({copies} "
            f"copies of {_gib(needed)}, with working room), {_gib(available)} available; "
            "use fewer rows or features, or TUNER_CPU_DEVICES=1 for one copy")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def resolve_stores(storage: str | None, tracking_uri: str | None
                   ) -> tuple[str, str, str | None]:
    """(storage URL, tracking URI, artifact location) with the embedded defaults filled
    in; ``mlruns/`` is created only when a default is used."""
    root = stores.results_root()
    if storage is None or tracking_uri is None:
        root.mkdir(parents=True, exist_ok=True)
    return (storage or stores.default_storage_url(root),
            tracking_uri or stores.default_tracking_uri(root),
            None if tracking_uri else stores.default_artifact_location(root))


def _process_setup() -> ProgramCache:
    quiet_libraries()
    return program_cache()
