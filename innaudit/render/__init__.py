"""Renderers: each turns a Report into text and nothing else.

``RENDERERS`` maps a format name to ``render(report) -> str``; the console renderer also takes
``color`` and ``width``.
"""

from __future__ import annotations

from collections.abc import Callable

from innaudit.core.results import Report
from innaudit.render import console, github, html, json, junit, markdown

__all__ = ["FORMATS", "RENDERERS"]

RENDERERS: dict[str, Callable[[Report], str]] = {
    "console": console.render,
    "json": json.render,
    "html": html.render,
    "junit": junit.render,
    "markdown": markdown.render,
    "github": github.render,
}
FORMATS = tuple(RENDERERS)
