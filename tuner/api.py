"""Python API: ``tuner.tune(...)``, a thin front over the same engine as the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tuner import stores
from tuner.data import Dataset, check_folds, from_arrays, load_data
from tuner.finalize import TuneResult, finish
from tuner.runtime import quiet_libraries, setup_compilation_cache
from tuner.spec import ARRAYS_SOURCE, SweepSpec, load_spec, parse_spec


def tune(
    spec: str | os.PathLike | Mapping | SweepSpec | None = None,
    *,
    space: Mapping[str, Any] | None = None,
    data: tuple[Any, Any] | None = None,
    task: str | None = None,
    method: str | None = None,
    trials: int | None = None,
    batch: int | None = None,
    seed: int | None = None,
    metric: str | None = None,
    folds: int | None = None,
    fixed: Mapping[str, Any] | None = None,
    name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    refit: bool = True,
) -> TuneResult:
    """Run (or continue) a sweep and return its result.

    Either a spec (a YAML path, a mapping in the YAML schema, or a SweepSpec), or
    ``space=`` with ``data=(X, y)`` (and optionally task, method, metric, folds, fixed).
    Keyword arguments override the spec's search settings. Results go to the
    embedded stores under ``./mlruns`` unless ``storage``/``tracking_uri`` are given.
    """
    sweep_spec, dataset = _resolve(spec, space, data, task, method, seed, metric, folds,
                                   fixed, name, batch, trials)
    quiet_libraries()
    setup_compilation_cache()
    root = stores.results_root()
    if storage is None or tracking_uri is None:
        root.mkdir(parents=True, exist_ok=True)
    from tuner.engine import Sweep  # heavy imports only once inputs are valid

    sweep = Sweep(
        sweep_spec, dataset,
        storage_url=storage or stores.default_storage_url(root),
        tracking_uri=tracking_uri or stores.default_tracking_uri(root),
        artifact_location=None if tracking_uri else stores.default_artifact_location(root),
        study_name=name or sweep_spec.name, batch=batch,
    )
    outcome = sweep.run(trials)
    result = finish(sweep, outcome, refit_best=refit)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return result


def _resolve(spec, space, data, task, method, seed, metric, folds, fixed, name, batch, trials
             ) -> tuple[SweepSpec, Dataset]:
    if spec is not None and space is not None:
        raise TypeError("give either a spec or space=, not both")
    if isinstance(spec, SweepSpec):
        base = spec.to_dict()
    elif isinstance(spec, Mapping):
        base = dict(spec)
    elif spec is not None:
        loaded = load_spec(spec)
        base = loaded.to_dict()
    else:
        if space is None or data is None:
            raise TypeError("tune() needs a spec, or space= and data=(X, y)")
        base = {"name": name or "tune", "data": {"source": ARRAYS_SOURCE}, "space": dict(space)}
    base = _override(base, task, method, seed, metric, folds, fixed, name, batch, trials)
    sweep_spec = parse_spec(base)
    if data is not None:
        X, y = data
        dataset = from_arrays(X, y, task=task or sweep_spec.task)
    else:
        dataset = load_data(sweep_spec.data)
    sweep_spec = sweep_spec.with_task(dataset.task)
    # Before any store is created: a class with fewer rows than folds is bad input.
    check_folds(dataset, sweep_spec.cv.folds, sweep_spec.cv.stratified)
    return sweep_spec, dataset


def _override(base: dict, task, method, seed, metric, folds, fixed, name, batch, trials) -> dict:
    base = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    base.setdefault("search", {})
    base.setdefault("cv", {})
    base.setdefault("data", {})
    if task is not None:
        base["data"]["task"] = task
    for key, value in (("method", method), ("seed", seed), ("batch", batch),
                       ("trials", trials)):
        if value is not None:
            base["search"][key] = value
    if folds is not None:
        base["cv"]["folds"] = folds
    if metric is not None:
        base["metric"] = metric
    if fixed is not None:
        base["fixed"] = {**base.get("fixed", {}), **dict(fixed)}
    if name is not None:
        base["name"] = name
    return base
