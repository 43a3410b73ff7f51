"""The one exception tree of innaudit.

Every error a user can cause is an ``InnauditError``; the CLI prints its message on one line and
exits with code 2. Messages say what was given, what was expected, and what to do.

::

    InnauditError
     ├── UsageError            a flag or argument that cannot be right
     ├── ConfigError           a bad YAML key, type or value
     ├── DataError             a data SPEC that cannot be parsed, read or shaped to the model
     └── LoadError             the MODEL argument cannot be turned into an InvertibleModel
          ├── UnsafeCheckpointError   the safe loader refused the file (code inside)
          └── CorruptCheckpointError  the file is truncated, empty or of an unknown format
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "CorruptCheckpointError",
    "DataError",
    "InnauditError",
    "LoadError",
    "UnsafeCheckpointError",
    "UsageError",
    "clean_text",
    "did_you_mean",
]

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: object, limit: int = 2000) -> str:
    """Return ``text`` as a string safe for a terminal or a report.

    Strings read from checkpoints and exception messages may carry terminal escape sequences
    (``\\x1b[31m``) put there by whoever made the file; they are removed, newlines become spaces,
    and the result is cut at ``limit`` characters.
    """
    flat = _CONTROL.sub("", str(text)).replace("\n", " ").replace("\t", " ")
    flat = re.sub(r" {2,}", " ", flat).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def did_you_mean(given: object, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, else ``"; expected one of: a, b"``."""
    names = list(known)
    close = difflib.get_close_matches(str(given), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(sorted(names))}"


class InnauditError(Exception):
    """Base class: a problem with what the user gave innaudit, reported as exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(clean_text(message))


class UsageError(InnauditError):
    """A command-line argument that cannot be right."""


class ConfigError(InnauditError):
    """A configuration file or value that does not fit the schema."""


class DataError(InnauditError):
    """A data SPEC that cannot be parsed, read, or shaped like the model's input."""


class LoadError(InnauditError):
    """The MODEL argument could not be turned into an InvertibleModel."""


class UnsafeCheckpointError(LoadError):
    """The weights-only loader refused the file: it holds code or objects it will not build."""


class CorruptCheckpointError(LoadError):
    """The file is empty, truncated, or not a checkpoint format innaudit reads."""
