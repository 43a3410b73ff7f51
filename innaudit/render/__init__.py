"""Renderers: each turns a Report into text and nothing else.

Every output format is one :class:`Renderer` record in :data:`RENDERERS` (name -> record): the
module whose ``render(report) -> str`` draws it, the file suffixes it is saved under, whether it
is read in a terminal or a CI log (then every string of the report is sanitized first, by
:func:`~innaudit.core.errors.clean_tree`), and whether it takes terminal styling (``color``,
``width``, ``verbose``). The CLI's ``-o`` help, the list of formats it accepts, the suffix table
of ``innaudit.Report.save`` and the sanitizing are all read from these records, so a report
gives the same bytes through the CLI and through ``Report.save``. A renderer module is imported
when it first renders (``innaudit --help`` imports none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from innaudit.core.errors import clean_tree
from innaudit.core.results import Report

__all__ = ["FORMATS", "RENDERERS", "SUFFIXES", "SUMMARY", "Renderer", "format_list", "output_help"]


@dataclass(frozen=True)
class Renderer:
    """One output format.

    Attributes:
        name: the format's name (``-o NAME``).
        module: the module of ``innaudit.render`` whose ``render`` draws it.
        suffixes: file suffixes that choose this format in ``Report.save`` (lower case).
        terminal: read in a terminal or a CI log: every string of the report is sanitized
            (:func:`~innaudit.core.errors.clean_tree`) before it is drawn.
        styled: takes ``color``, ``width`` and ``verbose`` (the console table).
    """

    name: str
    module: str
    suffixes: tuple[str, ...] = ()
    terminal: bool = False
    styled: bool = False

    def sanitize(self, report: Report) -> Report:
        """``report`` as this format shows it: its strings cleaned for a terminal format."""
        return clean_tree(report) if self.terminal else report

    def draw(self) -> Callable[..., str]:
        """The module's ``render`` function (imported on first use)."""
        return _draw_functions()[self.module]

    def __call__(self, report: Report, **style: Any) -> str:
        """The report in this format, sanitized as the format needs; ``style`` (``color``,
        ``width``, ``verbose``) reaches a styled renderer and is ignored by the others."""
        shown = self.sanitize(report)
        return self.draw()(shown, **style) if self.styled else self.draw()(shown)


def _draw_functions() -> dict[str, Callable[..., str]]:
    """Every renderer module's ``render``, imported here on the first render, so that importing
    this package (the CLI does, for its help) imports no renderer, rich or matplotlib."""
    from innaudit.render import console, github, html, json, junit, markdown, summary

    modules = (console, github, html, json, junit, markdown, summary)
    return {m.__name__.rpartition(".")[2]: m.render for m in modules}


_ALL = (
    Renderer("console", "console", (".txt",), terminal=True, styled=True),
    Renderer("json", "json", (".json",)),
    Renderer("html", "html", (".html", ".htm")),
    Renderer("junit", "junit", (".xml",)),
    Renderer("markdown", "markdown", (".md",), terminal=True),
    Renderer("github", "github", (), terminal=True),
)

RENDERERS: Mapping[str, Renderer] = {r.name: r for r in _ALL}
"""Every output format by name, in the order the help lists them."""

FORMATS = tuple(RENDERERS)

SUFFIXES: Mapping[str, str] = {suffix: r.name for r in _ALL for suffix in r.suffixes}
"""File suffix -> format, for ``Report.save``."""

SUMMARY = Renderer("summary", "summary", terminal=True)
"""The plain-text verdict and findings of ``Report.summary()`` and ``assert_invertible`` (not an
``-o`` format; sanitized as the terminal formats are)."""


def format_list(names: tuple[str, ...] = FORMATS) -> str:
    """``console, json, html, junit, markdown or github``."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def output_help() -> str:
    """The help of ``-o FORMAT[=PATH]``."""
    return f"{format_list()}, to stdout or to PATH (repeatable)."
