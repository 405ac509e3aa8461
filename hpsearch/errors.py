"""The project's exceptions. The CLI maps each to one line on stderr and an exit code."""

from __future__ import annotations

import json
from collections.abc import Iterable


class HpsearchError(Exception):
    """A problem the user can act on; printed as one line, never with a traceback."""

    exit_code = 1


class SpecError(HpsearchError):
    """The study file or a command-line value is invalid (exit 2)."""

    exit_code = 2


class DataError(HpsearchError):
    """A dataset cannot be found or read (exit 2: the user must point at the data)."""

    exit_code = 2


class StorageError(HpsearchError):
    """The study storage cannot be reached or used (exit 1)."""

    exit_code = 1


class StudyNotFound(HpsearchError):
    """A study name that the storage does not hold (exit 1)."""

    exit_code = 1


def first_line(e: BaseException, default: str = "") -> str:
    """The first line of an exception's message (stripped), or ``default`` when it has none: what a one-line
    error report shows of a driver's or library's multi-line message."""
    text = str(e).strip()
    return text.splitlines()[0] if text else default


def toml_literal(v: object) -> str:
    """``v`` as a study file spells it: ``true``/``false`` and ``"text"``, so that a message about a TOML value
    names it in TOML, not as Python's ``True`` and ``'text'``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):  # a TOML basic string: JSON's escapes keep a newline or control character on one line
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def one_of(allowed: Iterable[object]) -> str:
    """``one of "a", "b"``: the allowed values as a study file spells them."""
    return "one of " + ", ".join(map(toml_literal, allowed))


def not_one_of(name: str, value: object, allowed: Iterable[object]) -> str:
    """The one-line reason a value is not among the allowed ones: ``\\`name\\` is "x", but must be one of "a", "b"``."""
    return f"`{name}` is {toml_literal(value)}, but must be {one_of(allowed)}"
