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
from tests.helpers import FIXTURE_MODELS, CliResult, read_report

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


# -- round 3 (issue 28, items 5, 10, 11) ------------------------------------------------------
HOSTILE_MODELS = Path(__file__).resolve().parent / "hostile_models.py"
LEGACY = re.compile(r"##\[")


def _clean_lines(lines: list[str]) -> None:
    for line in lines:
        assert not line.lstrip(" ").startswith("::") or OWN_ANNOTATION.match(line), line
        assert not LEGACY.search(line), line
        assert "\x1b" not in line and "\x07" not in line, line


@pytest.mark.parametrize(
    "text", ["a ##[error]forged", "x##[stop-commands]tok", "##\x1b[0m[error]y", "::set-output name=a::b", "a:::b"]
)
def test_clean_text_defuses_both_workflow_command_forms_anywhere(text: str) -> None:
    out = clean_text(text)
    assert "##[" not in out and "::" not in out


def test_a_model_s_print_never_reaches_stdout(run_cli: Callable[..., CliResult]) -> None:
    import json

    result = run_cli("run", f"{HOSTILE_MODELS}:printer", "--audit", "roundtrip", "--samples", "8", "-o", "json=-")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["exit_code"] == 0, "stdout is the report alone"
    assert "set-output name=verdict" in result.stderr, "the model's output is kept, on stderr"
    _clean_lines(result.stderr.splitlines())


@pytest.mark.parametrize(
    "isolated",
    [pytest.param((), id="in-process"), pytest.param(("--timeout", "300"), id="isolated", marks=pytest.mark.slow)],
)
def test_a_model_s_c_level_output_never_reaches_stdout(
    cli_subprocess: Callable[..., CliResult], isolated: tuple[str, ...]
) -> None:
    import json

    args = ("--audit", "roundtrip", "--samples", "8", *isolated, "-o", "json=-")
    result = cli_subprocess("run", f"{HOSTILE_MODELS}:printer", *args)
    assert result.code == 0, result.stderr
    json.loads(result.stdout)
    assert "from C" in result.stderr
    _clean_lines(result.stderr.splitlines())


def test_render_of_a_monitor_log_sanitizes_every_string(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    import json

    log = tmp_path / "m.jsonl"
    finding = {"rule": "nonfinite", "dataset": f"s{HOSTILE}", "status": "fail", "message": f"m{HOSTILE} ##[error]x"}
    records = [
        {"kind": "start", "every": 1, "sets": [{"name": f"s{HOSTILE}"}], "audits": ["roundtrip"], "model": HOSTILE},
        {"kind": "check", "step": 0, "status": "fail", "findings": [finding], "sets": {}},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cli("render", log)
    assert result.code == 0, result.stderr
    assert "first failing check at step 0" in result.stdout
    _clean_lines(result.stdout.splitlines() + result.stderr.splitlines())


def test_compare_s_table_sanitizes_audit_set_and_metric_names(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    import json

    base = tmp_path / "base.json"
    assert (
        run_cli("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--samples", "8", "-o", f"json={base}").code
        == 0
    )
    data = json.loads(base.read_text())
    audit = data["audits"][0]
    audit["id"] = f"a{HOSTILE}##[error]id"
    audit["results"][0]["dataset"] = f"s{HOSTILE}" + "x" * 200  # long: the folded column wraps
    audit["results"][0]["metrics"][f"k{HOSTILE}##[error]"] = 1.0
    base.write_text(json.dumps(data))
    new = tmp_path / "new.json"
    data["audits"][0]["results"][0]["metrics"][f"k{HOSTILE}##[error]"] = 9.0
    new.write_text(json.dumps(data))
    result = run_cli("compare", base, new)
    assert result.code == 0, result.stderr
    assert "regressed" in result.stdout
    _clean_lines(result.stdout.splitlines() + result.stderr.splitlines())


def test_legacy_commands_from_a_file_name_or_an_exception_are_defused(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    data = tmp_path / "d ##[error]forged.npy"
    np.save(data, np.full((8, 4), 0.5, dtype=np.float32))
    for fmt in ("console", "github", "markdown"):
        result = run_cli("run", f"{FIXTURE_MODELS}:wrong", "--audit", "roundtrip", "--data", data, "-o", fmt)
        assert result.code == 1, result.stderr
        _clean_lines(result.stdout.splitlines() + result.stderr.splitlines())
    missing = run_cli("run", str(tmp_path / "m ##[stop-commands]tok.pt"))
    assert missing.code == 2
    _clean_lines(missing.stderr.splitlines())


def test_a_file_name_that_is_not_utf8_reaches_every_writer(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    import os

    folder = os.fsencode(tmp_path)
    data = os.fsdecode(folder + b"/d\xff\xfe.npy")  # undecodable bytes: lone surrogates in the str
    np.save(data, np.full((8, 4), 0.5, dtype=np.float32))
    outputs = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "html", "junit", "markdown", "github")}
    args = [x for fmt, path in outputs.items() for x in ("-o", f"{fmt}={path}")]
    result = run_cli("run", f"{FIXTURE_MODELS}:wrong", "--audit", "roundtrip", "--data", data, *args)
    assert result.code == 1, result.stderr
    assert all(p.stat().st_size > 0 for p in outputs.values())
    assert read_report(outputs["json"])["run"]["datasets"][0]["name"] == os.path.basename(data)[:-4]
    assert "\\udcff" in outputs["html"].read_text(encoding="utf-8")
    result = run_cli("run", f"{FIXTURE_MODELS}:wrong", "--audit", "roundtrip", "--data", data, "-o", "json")
    assert result.code == 1 and '"schema_version"' in result.stdout
