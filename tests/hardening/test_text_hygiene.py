"""No string from outside can start a line, move the cursor or flip the text direction.

Model paths, set names and messages pass through one sanitizer (``innaudit.core.errors.clean_text``)
before the console, GitHub, Markdown and stderr; the JSON report keeps them as given.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from innaudit.core.errors import clean_text, shorten_middle
from tests.conftest import FIXTURE_MODELS, CliResult, read_report

OWN_ANNOTATION = re.compile(r"^::(error|warning|notice) title=innaudit")
HOSTILE = "\n::error::x\r::add-mask::y\x1b]0;pwned\x07\x1b[2J\u202eevil"


@pytest.mark.parametrize(
    "text",
    [
        "a\n::error::x",
        "a\r::stop-commands::t",
        "\x1b[31mred\x1b[0m",
        "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
        "ab\u202ecd\u2066e",
        "a\u2028::b",
        "a\x85b",
        "\x9b2Jc",
        "a\udcffb",
    ],
)
def test_clean_text_leaves_one_printable_line(text: str) -> None:
    out = clean_text(text)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert all(c.isprintable() for c in out), repr(out)
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in out)
    out.encode("utf-8")  # no lone surrogate left


def test_shorten_middle_keeps_both_ends() -> None:
    short = shorten_middle("/very/long/folder/name/model.pt", 15)
    assert len(short) == 15 and short.startswith("/very") and short.endswith("odel.pt") and "…" in short


def _lines(result: CliResult) -> list[str]:
    return result.stdout.splitlines() + result.stderr.splitlines()


def test_a_hostile_model_path_starts_no_workflow_command(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    folder = tmp_path / f"a{HOSTILE}"
    folder.mkdir()
    factory = folder / "models.py"
    shutil.copy(FIXTURE_MODELS, factory)
    report = tmp_path / "r.json"
    for fmt in ("console", "github", "markdown"):
        result = run_cli(
            "run", f"{factory}:wrong", "--audit", "roundtrip", "--samples", "20", "-o", fmt, "-o", f"json={report}"
        )
        assert result.code == 1, result.stderr
        for line in _lines(result):
            assert not line.startswith("::") or OWN_ANNOTATION.match(line), (fmt, line)
            assert "\x1b" not in line and "\u202e" not in line, (fmt, line)
    assert read_report(report)["target"]["model"] == f"{factory}:wrong", "the JSON keeps the name"


def test_a_hostile_set_name_and_failed_load_stay_on_one_line(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    data = tmp_path / f"d{HOSTILE}.npy"
    np.save(data, np.full((8, 4), 0.5, dtype=np.float32))
    result = run_cli(
        "run", f"{FIXTURE_MODELS}:wrong", "--audit", "roundtrip", "--samples", "8", "--data", str(data), "-o", "github"
    )
    assert result.code == 1, result.stderr
    for line in _lines(result):
        assert not line.startswith("::") or OWN_ANNOTATION.match(line), line
    missing = run_cli("run", str(tmp_path / f"m{HOSTILE}.pt"))
    assert missing.code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "\x1b" not in missing.stderr


def test_render_of_a_tampered_report_is_sanitized(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    import json

    report = tmp_path / "r.json"
    assert (
        run_cli("run", f"{FIXTURE_MODELS}:wrong", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}").code
        == 1
    )
    data = json.loads(report.read_text())
    data["target"]["model"] = f"m{HOSTILE}"
    data["audits"][0]["results"][0]["dataset"] = f"s{HOSTILE}"
    report.write_text(json.dumps(data))
    for fmt in ("console", "github", "markdown"):
        result = run_cli("render", report, "-o", fmt)
        assert result.code == 0, result.stderr
        for line in _lines(result):
            assert not line.startswith("::") or OWN_ANNOTATION.match(line), (fmt, line)
            assert "\x1b" not in line and "\u202e" not in line, (fmt, line)


def test_a_hostile_option_value_stays_on_its_line(run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("run", f"{FIXTURE_MODELS}:exact", "--fail-on", f"x{HOSTILE}")
    assert result.code == 2 and "Error:" in result.stderr
    for line in _lines(result):
        assert not line.startswith("::") and "\x1b" not in line, line
