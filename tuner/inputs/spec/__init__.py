"""The sweep spec: YAML or a dict -> a validated, typed, immutable ``SweepSpec``.

- ``values``: the vocabulary (derived from ``models``' tables) and one value's check;
- ``messages``: one-line errors naming the field path;
- ``sections``: data, cv, search, a hyperparameter's range;
- ``fidelity``: the search section's pruner and early stopping;
- ``schema``: the whole ``SweepSpec``;
- ``loading``: YAML text or file, or a mapping, into a ``SweepSpec``.
"""

from tuner.inputs.spec.fidelity import PRUNERS, EarlyStoppingSpec, PrunerSpec
from tuner.inputs.spec.loading import load_spec, parse_data_spec, parse_spec, parse_yaml
from tuner.inputs.spec.schema import SweepSpec
from tuner.inputs.spec.sections import CVSpec, DataSpec, Range, SearchSpec, SpaceEntry
from tuner.inputs.spec.values import (
    ARRAYS_SOURCE, CATEGORICAL_HPARAMS, DOMAINS, FLOAT_HPARAMS, HPARAMS, INT_HPARAMS,
    METHODS, METRICS, SKLEARN_SOURCES,
)

__all__ = [
    "ARRAYS_SOURCE", "CATEGORICAL_HPARAMS", "CVSpec", "EarlyStoppingSpec", "PrunerSpec", "DOMAINS", "DataSpec", "FLOAT_HPARAMS",
    "HPARAMS", "INT_HPARAMS", "METHODS", "METRICS", "PRUNERS", "Range", "SKLEARN_SOURCES",
    "SearchSpec", "SpaceEntry", "SweepSpec", "load_spec", "parse_data_spec", "parse_spec",
    "parse_yaml",
]
