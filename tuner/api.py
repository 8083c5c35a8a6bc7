"""Python API: ``tuner.tune(...)``, a thin front over the same engine as the CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from tuner.inputs.resolve import resolve_inputs
from tuner.inputs.spec import SweepSpec
from tuner.summary.finalize import TuneResult

log = logging.getLogger("tuner")


def tune(
    spec: str | os.PathLike | Mapping | SweepSpec | None = None,
    *,
    space: Mapping[str, Any] | None = None,
    data: Any = None,
    target: str | None = None,
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
    register: str | None = None,
) -> TuneResult:
    """Run (or continue) a sweep and return its result.

    Either a spec (a YAML path, a mapping in the YAML schema, or a SweepSpec), or
    ``space=`` with ``data=(X, y)`` or ``data=frame, target="column"`` (a pandas
    DataFrame: text, date and ID columns and missing cells as a CSV's; and optionally
    task, method, metric, folds, fixed). Keyword arguments override the spec's search
    settings. Results go to the embedded stores under ``./mlruns`` unless
    ``storage``/``tracking_uri`` are given; ``register`` registers the refit model.
    """
    sweep_spec, dataset = resolve_inputs(spec, space=space, data=data, target=target,
                                         task=task,
                                         method=method, seed=seed, metric=metric,
                                         folds=folds, fixed=fixed, name=name, batch=batch,
                                         trials=trials)
    from tuner.execution.session import open_sweep  # heavy imports only once inputs are valid

    sweep = open_sweep(sweep_spec, dataset, storage=storage, tracking_uri=tracking_uri,
                       study_name=name or sweep_spec.name, batch=batch)
    # What a crash left (recovered) is a warning; trials done and new, information. A
    # sweep already at its budget is summarised and refit again only when refit is on
    # (the caller wants a model object).
    outcome = sweep.run(trials, notify=_notify, resummarize=refit)
    result = sweep.finish(outcome, refit=refit, register=register)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return result


def _notify(line: str) -> None:
    (log.warning if line.startswith("recovered") else log.info)(line)
