"""Reading a spec: YAML text or a file, or a mapping, into a ``SweepSpec``.

Nothing here touches the disk except ``load_spec`` reading the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from tuner.errors import SpecError
from tuner.inputs.spec.messages import dotted, first_error, show, spec_error
from tuner.inputs.spec.schema import SweepSpec
from tuner.inputs.spec.sections import DataSpec



class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                break  # SafeLoader's own check names it ("found unhashable key")
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 needs a dot in a float; 1e-3 would otherwise load as the string '1e-3'.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# Besides YAMLError, PyYAML lets through what its constructors raise: ValueError for
# an integer of over 4300 digits or a date such as 2024-02-30, RecursionError for
# thousands of nested brackets. Each is a file that is not a spec: bad input.
_YAML_ERRORS = (yaml.YAMLError, ValueError, RecursionError)


def _yaml_error(where: str, e: Exception) -> SpecError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e) or type(e).__name__
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return SpecError(f"{where}: invalid YAML{at}: {problem}")


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a spec file; relative data paths resolve against its folder."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read the spec file: {e}") from None
    try:
        mapping = yaml.load(text, Loader=_Loader)
    except _YAML_ERRORS as e:
        raise _yaml_error(path, e) from None
    return parse_spec(mapping, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_spec(mapping: Any, base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a mapping (e.g. parsed YAML); relative paths resolve against ``base_dir``
    (default: the working directory)."""
    if isinstance(mapping, SweepSpec):
        return mapping
    if not isinstance(mapping, Mapping):
        raise SpecError(f"spec: expected a mapping of keys (name, data, space, ...), "
                        f"got {show(mapping)}")
    try:
        return SweepSpec.model_validate(dict(mapping), context={"base_dir": base_dir})
    except ValidationError as e:
        raise spec_error(e) from None


def parse_data_spec(mapping: Any, base_dir: str | os.PathLike | None = None) -> DataSpec:
    """Validate a spec's ``data`` section on its own (errors name ``data.<field>``)."""
    if isinstance(mapping, DataSpec):
        return mapping
    if not isinstance(mapping, Mapping):
        raise SpecError(f"data: expected a mapping with source, got {show(mapping)}")
    try:
        return DataSpec.model_validate(dict(mapping), context={"base_dir": base_dir})
    except ValidationError as e:
        loc, msg = first_error(e)
        raise SpecError(f"{dotted(('data',) + loc)}: {msg}") from None


def parse_yaml(text: str, base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a spec given as YAML text."""
    try:
        mapping = yaml.load(text, Loader=_Loader)
    except _YAML_ERRORS as e:
        raise _yaml_error("spec", e) from None
    return parse_spec(mapping, base_dir=base_dir)
