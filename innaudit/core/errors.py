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

import dataclasses
import difflib
import re
import reprlib
import unicodedata
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar, cast

__all__ = [
    "ConfigError",
    "CorruptCheckpointError",
    "DataError",
    "DistributedError",
    "InnauditError",
    "LoadError",
    "UnsafeCheckpointError",
    "UsageError",
    "clean_text",
    "clean_tree",
    "did_you_mean",
    "short_repr",
    "shorten_middle",
]

_ESCAPES = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-9;?]*[ -/]*[@-~]"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?|\x1b.?"
)
T = TypeVar("T")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 6, 80, 80
_BREAKS = re.compile(r"[\n\r\t\v\f\x85\u2028\u2029]")
_COMMANDS = re.compile(r":(?=:)|#(?=#\[)")
"""The two GitHub Actions workflow-command forms: ``::name::`` (a command when a line starts
with it, which a wrapped table cell can make happen) and the legacy ``##[name]`` (a command
anywhere in a line). A space between the two marks defuses both."""


def _visible(char: str) -> str:
    category = unicodedata.category(char)
    if category == "Cs":  # a lone surrogate (undecodable bytes of a path) cannot be printed
        return "\ufffd"
    return "" if category in ("Cc", "Cf") else char


def clean_text(text: object, limit: int = 2000) -> str:
    """Return ``text`` as one line safe for a terminal, a CI log or a report: the one sanitizer.

    Every string that comes from outside innaudit (paths, set names, model and architecture
    names, exception messages, warnings) passes through here before a renderer or the CLI
    writes it. Terminal escape sequences (CSI ``\\x1b[31m``, OSC ``\\x1b]...\\x07``) are removed,
    line breaks (LF, CR, VT, FF, NEL, U+2028/2029) and tabs become spaces, so no outside string
    can start a line of its own (a GitHub Actions ``::command::`` or a forged log line);
    control and format characters (C0, C1, DEL, bidi overrides such as U+202E, zero-width
    characters) are dropped, a lone surrogate becomes U+FFFD; runs of spaces collapse; the
    GitHub workflow-command marks ``::`` and ``##[`` get a space inside (``: :``, ``# #[``), as
    the legacy ``##[error]`` form is a command anywhere in a line; and the result is cut at
    ``limit`` characters.
    """
    raw = str(text)
    raw = raw if len(raw) <= 8 * limit + 64 else raw[: 8 * limit + 64]  # bounded work
    flat = _BREAKS.sub(" ", _ESCAPES.sub("", raw))
    flat = "".join(_visible(c) if not c.isprintable() or c == "\ufeff" else c for c in flat)
    flat = re.sub(r" {2,}", " ", flat).strip()
    flat = _COMMANDS.sub(lambda m: m.group(0) + " ", flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def did_you_mean(given: object, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, else ``"; expected one of: a, b"``."""
    names = list(known)
    close = difflib.get_close_matches(str(given), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(sorted(names))}"


def clean_tree(obj: T) -> T:
    """``obj`` with :func:`clean_text` applied to every string in it (keys included), walking
    frozen dataclasses, mappings, lists and tuples; enums, numbers and arrays are kept as they
    are. The CLI passes a Report through it before the console, GitHub and Markdown renderers,
    so no string from the model, the data or a saved report reaches a terminal or a CI log raw."""
    return cast(T, _clean(obj, 0))


def _clean(obj: Any, depth: int) -> Any:
    if isinstance(obj, Enum) or depth > 64:
        return obj
    if isinstance(obj, str):
        return clean_text(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: _clean(getattr(obj, f.name), depth + 1)
            for f in dataclasses.fields(obj)
            if f.init and f.name != "artifacts"
        }
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, Mapping):
        return {_clean(k, depth + 1): _clean(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clean(v, depth + 1) for v in obj) if type(obj) in (list, tuple) else obj
    return obj


def short_repr(value: object, limit: int = 120) -> str:
    """A bounded ``repr`` for error messages about values from outside: ``reprlib`` caps the
    items and depth shown (so a huge or alias-expanded value costs little), then
    :func:`clean_text` caps the length."""
    return clean_text(_REPR.repr(value), limit)


def shorten_middle(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis in the middle (``/very/lo…/model.pt``),
    for the console, where the start and the end of a long path or name say the most."""
    if len(text) <= limit or limit < 5:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


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


class DistributedError(InnauditError):
    """A rank of a ``torchrun`` job failed, hung or fell out of step: the job ends with exit 2."""


class LoadError(InnauditError):
    """The MODEL argument could not be turned into an InvertibleModel."""


class UnsafeCheckpointError(LoadError):
    """The weights-only loader refused the file: it holds code or objects it will not build."""


class CorruptCheckpointError(LoadError):
    """The file is empty, truncated, or not a checkpoint format innaudit reads."""
