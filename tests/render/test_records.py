"""Renderers as records: the ``-o`` help, the formats the CLI accepts, ``Report.save``'s suffix
table and the sanitizing all come from ``innaudit.render.RENDERERS``, so a report gives the
same bytes through the CLI and through ``Report.save``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import innaudit
from innaudit.render import FORMATS, RENDERERS, SUFFIXES, format_list, output_help
from innaudit.verdict.report_json import report_to_dict, to_plain
from tests.helpers import invoke_cli
from tests.render.fabricated import fabricated_report

HOSTILE = "evil\x1b[31mred\x1b[0m\n::error file=x::forged\u202edrow\x07 ##[warning]x"
"""Terminal escapes, a line break that starts a forged workflow command, a bidi override, BEL."""


def _hostile() -> innaudit.Report:
    report = fabricated_report()
    audits = list(report.audits)
    first = audits[0]
    results = (replace(first.results[0], dataset=HOSTILE, message=HOSTILE), *first.results[1:])
    audits[0] = replace(first, message=HOSTILE, results=results)
    return innaudit.Report.of(replace(report, target={**report.target, "model": HOSTILE}, audits=tuple(audits)))


def _saved_json(report: innaudit.Report, tmp_path: Path) -> Path:
    import json

    path = tmp_path / "report.json"
    path.write_text(json.dumps(to_plain(report_to_dict(report)), allow_nan=False))
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_hostile_report_gives_the_same_bytes_through_save_and_the_cli(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what the CLI draws off a terminal; Report.save's width
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    report = _hostile()
    source = _saved_json(report, tmp_path)
    by_cli = tmp_path / f"cli.{fmt}"
    result = invoke_cli("render", source, "-o", f"{fmt}={by_cli}")
    assert result.code == 0, result.stderr
    by_save = report.save(tmp_path / f"api.{fmt}", fmt=fmt)
    assert by_save.read_bytes() == by_cli.read_bytes()
    if RENDERERS[fmt].terminal:
        text = by_save.read_text(encoding="utf-8")
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        assert "::error file=x::forged" not in text and "##[warning]x" not in text


def test_summary_is_sanitized_as_the_terminal_formats_are() -> None:
    text = _hostile().summary()
    assert "\x1b" not in text and "\u202e" not in text and "::error file=x::forged" not in text
    assert text.splitlines()[0].startswith("innaudit: ERROR (exit 2) for evil")


def test_the_suffix_table_and_the_help_come_from_the_records(tmp_path: Path) -> None:
    report = innaudit.Report.of(fabricated_report(nasty=False))
    assert set(SUFFIXES) == {s for r in RENDERERS.values() for s in r.suffixes}
    for suffix, name in SUFFIXES.items():
        assert suffix in RENDERERS[name].suffixes
        saved = report.save(tmp_path / f"r{suffix}")
        assert saved.read_text(encoding="utf-8") == RENDERERS[name](report, width=80)
    with pytest.raises(ValueError, match=r"cannot tell the format.*'\.htm'"):
        report.save(tmp_path / "r.unknown")
    assert format_list() == "console, json, html, junit, markdown or github"
    for command in ("run", "render"):
        shown = " ".join(invoke_cli(command, "--help").stdout.split())
        assert " ".join(output_help().split()) in shown
    refused = invoke_cli("render", tmp_path / "r.json", "-o", "yaml")
    assert refused.code == 2 and f"expected one of {', '.join(FORMATS)}" in refused.stderr
