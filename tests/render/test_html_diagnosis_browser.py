"""The HTML diagnosis in headless Chromium: visible above the fold, before the findings.

The screenshot is left in the test's tmp folder (``pytest --basetemp=DIR`` keeps it).
"""

from __future__ import annotations

import pytest

from innaudit.render import html
from innaudit.verdict.diagnosis import diagnose

from .fabricated import diagnosable_report
from .test_html_browser import CHROMIUM, _chromium, _count, _png_pixels

# a real headless Chromium per page, and the audit runs it renders
pytestmark = pytest.mark.slow

DIAGNOSIS_BACKGROUND = (0xEE, 0xF5, 0xFC)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_diagnosis_is_visible_above_the_fold(tmp_path: pytest.TempPathFactory) -> None:
    report = diagnosable_report()
    page = tmp_path / "report.html"
    page.write_text(html.render(report), encoding="utf-8")
    shot = tmp_path / "fold.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri(), tmp=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1200, 900)
    assert _count(pixels, DIAGNOSIS_BACKGROUND, tol=2) > 150_000  # the diagnosis box, in the first screen
    top = pixels[: 3 * width * 200]
    assert _count(top, (0xB3, 0x26, 0x1E)) > 20_000  # the red FAIL banner above it
    dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path).stdout
    assert dom.index('id="diagnosis"') < dom.index("Findings, worst first")
    assert "First failing block (of 16): 7:Coupling[7] on uniform." in dom
    assert all(s.kind.label in dom for s in diagnose(report).statements)
