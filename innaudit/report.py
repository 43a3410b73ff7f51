"""The Report that ``innaudit.audit`` returns: the plain-data :class:`innaudit.core.results.Report`
with what a notebook or a test suite wants on top: ``to_json()``, ``save(path)`` and the HTML
view Jupyter shows (``_repr_html_``). The renderers stay below this layer; they read the plain
Report, so both classes render the same.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from innaudit.core import results
from innaudit.render import RENDERERS, SUFFIXES, SUMMARY
from innaudit.safeio.atomic import write_target

__all__ = ["Report"]

FILE_WIDTH = 80
"""Columns of the console table saved to a ``.txt`` file (what the CLI draws off a terminal)."""


class Report(results.Report):
    """A :class:`innaudit.core.results.Report` that can render and save itself."""

    @classmethod
    def of(cls, report: results.Report) -> Report:
        """The same report, with the conveniences."""
        return cls(**{f.name: getattr(report, f.name) for f in fields(report)})

    def to_json(self) -> str:
        """The strict JSON report (the ``-o json`` output)."""
        return RENDERERS["json"](self)

    def summary(self) -> str:
        """The verdict and the findings as plain text, one finding a line, worded as the console
        and the other renderers word them, and sanitized as the CLI sanitizes terminal output."""
        return SUMMARY(self)

    def save(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the report atomically (a symlink is followed, a device or FIFO written in
        place); the format follows the suffix (.json, .html, .md, .xml for JUnit, .txt for the
        console table) unless ``fmt`` names one. Each format is drawn and sanitized by its
        record in :data:`innaudit.render.RENDERERS`, as ``-o FORMAT=PATH`` draws it."""
        target = Path(path)
        name = fmt or SUFFIXES.get(target.suffix.lower())
        if name is None or name not in RENDERERS:
            raise ValueError(
                f"cannot tell the format of {str(target)!r}; give a suffix among "
                f"{sorted(SUFFIXES)} or fmt= one of {sorted(RENDERERS)}"
            )
        write_target(target, RENDERERS[name](self, color=False, width=FILE_WIDTH, verbose=False))
        return target

    def _repr_html_(self) -> str:
        """The HTML report, for Jupyter."""
        return RENDERERS["html"](self)
