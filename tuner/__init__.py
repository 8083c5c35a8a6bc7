"""Hyperparameter sweeps for JAX MLPs: grid, random and TPE search with K-fold CV,
tracked in MLflow.

    import tuner
    result = tuner.tune("search_spaces/digits.yaml", trials=40)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["tune", "TuneResult", "TunerError", "SpecError", "DataError"]

if TYPE_CHECKING:
    from tuner.api import tune
    from tuner.errors import DataError, SpecError, TunerError
    from tuner.summary.finalize import TuneResult


def __getattr__(name: str):
    # Lazy: `tuner --help` and `import tuner` stay fast; JAX and MLflow load on use.
    if name == "tune":
        from tuner.api import tune
        return tune
    if name == "TuneResult":
        from tuner.summary.finalize import TuneResult
        return TuneResult
    if name in ("TunerError", "SpecError", "DataError"):
        from tuner import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
