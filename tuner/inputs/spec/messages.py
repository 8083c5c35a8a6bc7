"""Error messages of the spec: one line naming the dotted field path, repeating the
bad value, suggesting the closest valid word (optuna style)."""

from __future__ import annotations

import difflib
import math
import reprlib
from typing import Any

from pydantic import ValidationError

from tuner.errors import SpecError

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8


def show(value: Any) -> str:
    """A short repr for messages (long lists, strings and integers are elided)."""
    if isinstance(value, int) and value.bit_length() > 128:
        # Python refuses to print an int of over 4300 digits, and a long one says nothing.
        digits = int(value.bit_length() * 0.30103) + 1
        return f"a{' negative' if value < 0 else 'n'} integer of about {digits} digits"
    return _repr.repr(value)


def suggest(word: Any, choices: Any) -> str:
    """'; did you mean 'x'?' for the closest choice, else the list of choices."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {choices}"


def count(n: int) -> str:
    """A count for messages: exact while short, else its order of magnitude."""
    if n < 10**15:
        return str(n)
    return f"about 10^{int(math.log10(n))}"  # log10 takes ints of any size


class FieldError(ValueError):
    """A validator error with a path below the validator's own location."""

    def __init__(self, path: tuple, message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "spec"


def first_error(exc: ValidationError) -> tuple[tuple, str]:
    """(location, message) of the first pydantic error, our own messages kept as they are."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return loc + cause.path, cause.message
    if isinstance(cause, (ValueError, AssertionError)):
        return loc, str(cause)
    if err["type"] == "missing":
        return loc, "required"
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    return loc, f"{msg}, got {show(err.get('input'))}"


def spec_error(exc: ValidationError) -> SpecError:
    """The first pydantic error as a one-line SpecError naming its field path."""
    loc, msg = first_error(exc)
    return SpecError(f"{dotted(loc)}: {msg}")
