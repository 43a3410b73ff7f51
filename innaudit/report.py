"""The Report that ``innaudit.audit`` returns: the plain-data :class:`innaudit.core.results.Report`
with what a notebook or a test suite wants on top: ``to_json()``, ``save(path)`` and the HTML
view Jupyter shows (``_repr_html_``). The renderers stay below this layer; they read the plain
Report, so both classes render the same.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from innaudit.core import results
from innaudit.render import RENDERERS
from innaudit.render.html import render as render_html
from innaudit.render.json import render as render_json
from innaudit.safeio.atomic import write_target

__all__ = ["Report"]

_SUFFIXES = {".json": "json", ".html": "html", ".htm": "html", ".md": "markdown", ".xml": "junit", ".txt": "console"}


class Report(results.Report):
    """A :class:`innaudit.core.results.Report` that can render and save itself."""

    @classmethod
    def of(cls, report: results.Report) -> Report:
        """The same report, with the conveniences."""
        return cls(**{f.name: getattr(report, f.name) for f in fields(report)})

    def to_json(self) -> str:
        """The strict JSON report (the ``-o json`` output)."""
        return render_json(self)

    def save(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the report atomically (a symlink is followed, a device or FIFO written in
        place); the format follows the suffix (.json, .html, .md, .xml for JUnit, .txt for the
        console table) unless ``fmt`` names one."""
        target = Path(path)
        name = fmt or _SUFFIXES.get(target.suffix.lower())
        if name not in RENDERERS:
            raise ValueError(
                f"cannot tell the format of {str(target)!r}; give a suffix among "
                f"{sorted(_SUFFIXES)} or fmt= one of {sorted(RENDERERS)}"
            )
        write_target(target, RENDERERS[name](self))
        return target

    def _repr_html_(self) -> str:
        """The HTML report, for Jupyter."""
        return render_html(self)
