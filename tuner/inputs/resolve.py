"""Turn what a user gave (a spec file, a dict, arrays, overrides) into a validated spec
and its dataset: the part of the CLI and the API that runs before any store exists."""

from __future__ import annotations

from collections.abc import Mapping

from tuner.inputs.data import Dataset, check_folds, from_arrays, load_data
from tuner.inputs.spec import ARRAYS_SOURCE, SweepSpec, load_spec, parse_spec


def resolve_inputs(spec=None, *, space=None, data=None, target=None, task=None, method=None,
                   seed=None, metric=None, folds=None, fixed=None, name=None, batch=None,
                   trials=None) -> tuple[SweepSpec, Dataset]:
    """The validated spec (overrides applied, task resolved) and its dataset.

    ``spec`` is a YAML path, a mapping in the YAML schema or a SweepSpec; without one,
    ``space`` and ``data=(X, y)`` describe the sweep. Raises SpecError/DataError before
    anything is written.
    """
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
            raise TypeError("tune() needs a spec, or space= and data=(X, y) or "
                            "data=frame, target=COLUMN")
        base = {"name": name or "tune", "data": {"source": ARRAYS_SOURCE}, "space": dict(space)}
    base = _override(base, task, method, seed, metric, folds, fixed, name, batch, trials)
    sweep_spec = parse_spec(base)
    if data is not None and target is not None:  # a DataFrame holding its target
        from tuner.inputs.spec import DataSpec
        from tuner.inputs.tables.load import from_frame

        table = {**sweep_spec.data.model_dump(exclude_none=True), "source": "arrays",
                 "target": target}
        dataset = from_frame(data, DataSpec(**table), where="the DataFrame")
    elif data is not None:
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
