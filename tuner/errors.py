"""Exceptions of the tuner: one root, and the bad-input classes the CLI maps to exit 2.

Messages name the field and repeat the bad value, optuna style::

    space.learning_rate: `low <= high` must hold, got low=0.1, high=0.01
"""

from __future__ import annotations


class TunerError(Exception):
    """Root of every error the tuner raises on purpose."""


class InputError(TunerError):
    """Bad user input (spec or data): exit code 2, the message printed as one line.

    The message is folded onto one line here, so no caller can break that promise.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


class SpecError(InputError):
    """The search-space spec (YAML or dict) is invalid."""


class DataError(InputError):
    """The data cannot be loaded or does not fit the task or the CV setup."""
