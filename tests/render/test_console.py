"""The console report: golden output at 80 and 120 columns, widths, wrapping, colour.

The golden files are ``tests/render/golden/*.txt``; after a deliberate change of the wording,
regenerate them with ``INNAUDIT_REGEN_GOLDEN=1 python -m pytest tests/render/test_console.py``
and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from innaudit.core.results import Report
from innaudit.render import console

from .fabricated import LONG_SET, default_run_report, diagnosable_report, fabricated_report

GOLDEN = Path(__file__).parent / "golden"
REPORTS = {
    "fabricated": lambda: fabricated_report(nasty=False),
    "diagnosable": diagnosable_report,
    "default-run": default_run_report,
}


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", sorted(REPORTS))
def test_console_matches_the_golden_output(name: str, width: int) -> None:
    text = console.render(REPORTS[name](), width=width)
    golden = GOLDEN / f"{name}-{width}.txt"
    if os.environ.get("INNAUDIT_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_default_run_golden_holds_every_audit_and_fits_80_columns() -> None:
    """The issue's broken layout came from the precision audit's rows; the golden output of the
    default run (every registered audit) must fit: no line over 80 columns, every set name
    whole on one line, each audit's headline labels in words."""
    from innaudit.audits import REGISTRY

    text = (GOLDEN / "default-run-80.txt").read_text()
    assert text == console.render(default_run_report(), width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert {aid for aid in REGISTRY if any(line.startswith(f"{aid} ") for line in lines)} == set(REGISTRY)
    for name in ("digits:test", "uniform", "gaussian", "rademacher", "prior@T=1", "prior@T=0.7", LONG_SET):
        assert any(line.split()[:1] == [name] or f" {name} " in f"{line} " for line in lines), name
    precision = next(line for line in lines if line.startswith("precision "))
    assert "non-finite" in precision and "invertible to" in precision and "fraction" not in precision
    assert any(line.split() == ["uniform", "FAIL", "24.2", "%", "0.00095", "float64"] for line in lines)


@pytest.mark.parametrize("report", [fabricated_report(nasty=True), diagnosable_report(), default_run_report()])
def test_nothing_is_cut_at_80_columns(report: Report) -> None:
    text = console.render(report, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "> ;" not in text and "=nan >" not in text
    assert not any(line != line.rstrip() for line in text.splitlines())


def test_table_numbers_never_wrap_and_findings_keep_value_and_limit() -> None:
    text = console.render(diagnosable_report(), width=80)
    lines = text.splitlines()
    assert "           uniform      FAIL        67.6 %          nan" in lines
    assert "FAIL roundtrip[uniform] 67.6 % of 500 round trips with a NaN or Inf (limit 0 %)" in lines
    assert any(
        line.startswith("WARN spectrum[uniform] max condition number 3e+22 (warns above 1e+03)") for line in lines
    )
    narrow = console.render(diagnosable_report(), width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines() if not line.startswith(" " * 11))
    assert "0 %)" in narrow and not any(line.rstrip().endswith((" 0", "(limit")) for line in narrow.splitlines())


def test_each_audit_shows_its_own_figures_and_its_id_once() -> None:
    lines = console.render(diagnosable_report(), width=120).splitlines()
    assert sum(line.startswith("roundtrip ") for line in lines) == 1
    header = {line.split()[0]: line for line in lines if line.split()[1:3] == ["set", "status"]}
    assert "random n-f" in header["attack"] and "first failing block" in header["layers"]
    assert "min sv J_F" in header["spectrum"] and "max rel err" in header["roundtrip"]
    assert any("7:Coupling[7]" in line and "FAIL" in line for line in lines)


def test_verbose_shows_metric_paths_and_evidence() -> None:
    text = console.render(diagnosable_report(), width=120, verbose=True)
    assert "[rel_error_l2.max]" in text
    assert "evidence: layers[uniform] culprit=7:Coupling[7]" in text


def test_colour_only_when_asked() -> None:
    report = diagnosable_report()
    assert "\x1b[" not in console.render(report, width=80)
    coloured = console.render(report, color=True, width=80)
    assert "\x1b[" in coloured and "\x1b[1;31mFAIL" in coloured


def test_render_to_stdout_at_the_terminal_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from innaudit.render.json import render as render_json
    from tests.helpers import invoke_cli

    saved = tmp_path / "report.json"
    saved.write_text(render_json(diagnosable_report()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    result = invoke_cli("render", saved, "-o", "console=-")
    assert result.code == 0, result.stderr
    assert result.stdout == (GOLDEN / "diagnosable-80.txt").read_text()  # NO_COLOR wins; 80 columns
    assert not (tmp_path / "-").exists()
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "120")
    coloured = invoke_cli("render", saved, "-o", "console=-").stdout
    assert "\x1b[" in coloured and max(len(line) for line in coloured.splitlines()) > 80


def test_wording_of_rates_and_limits_follows_the_declarations() -> None:
    from innaudit.core.metrics import Direction, better, rate
    from innaudit.core.results import Check, Status
    from innaudit.render.common import check_text, limit_text, rate_text

    assert rate_text(0.676, 500, "samples non-finite", "limit 0 %") == "67.6 % of 500 samples non-finite (limit 0 %)"
    assert (
        rate_text(0.676, 500, "samples non-finite", "limit 0 %", (0.634, 0.716))
        == "67.6 % [95 % 63.4 %, 71.6 %] of 500 samples non-finite (limit 0 %)"
    )
    assert rate_text(0.0004, None, "points") == "<0.1 % points"
    assert limit_text(0.9, Direction.HIGHER_BETTER, False, True) == "minimum 90 %"
    assert limit_text(1e-3, Direction.HIGHER_BETTER, True, False) == "warns below 0.001"
    assert limit_text(None, Direction.HIGHER_WORSE, False, False) == "a NaN fails"
    table = {
        "x": {
            "converged": rate("converged", "runs that converged", Direction.HIGHER_BETTER),
            "sv_min": better("sv_min", doc="smallest singular value"),
        }
    }
    low = Check("converged", 0.5, None, 0.9, Status.FAIL)
    assert check_text("x", low, {"n": 64}, table) == "50.0 % of 64 runs that converged (minimum 90 %)"
    tiny = Check("sv_min.min", 1e-9, 1e-6, None, Status.WARN)
    assert check_text("x", tiny, {}, table) == "min smallest singular value 1e-09 (warns below 1e-06)"


@pytest.mark.slow
def test_the_deep_checkpoint_at_80_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The issue's must-show, with fewer samples (8 exact spectra per set: the 61-block flow's
    Jacobians are the slow part): nothing over 80 columns, a finding per failing check with value
    and limit, a diagnosis naming the first failing block and a remedy."""
    from tests.helpers import REPO, invoke_cli

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    config = tmp_path / "c.yaml"
    config.write_text("spectrum: {samples: 8}\n")
    result = invoke_cli(
        "run",
        REPO / "checkpoints" / "digits-affine-deep.pt",
        "--audit",
        "roundtrip",
        "--audit",
        "spectrum",
        "--audit",
        "layers",
        "--samples",
        64,
        "--config",
        config,
    )
    assert result.code == 1, result.stderr
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "> ;" not in text
    assert "First failing block (of 61)" in text and "Coupling[" in text
    assert "Use additive coupling or a bounded scale" in text and "fd_regularizer" in text
    assert "FAIL roundtrip[uniform] " in text and "(limit 0 %)" in text and "(limit 0.01)" in text
