"""The base of every spec section: frozen, no unknown keys (with a suggestion)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from tuner.inputs.spec.messages import FieldError, suggest


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # extra="forbid" would say only "Extra inputs are not permitted"; suggest instead.
        if isinstance(data, Mapping):
            for key in data:
                if key not in cls.model_fields:
                    raise FieldError((str(key),), f"unknown key{suggest(key, cls.model_fields)}")
        return data
