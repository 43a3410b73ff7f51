"""End to end on the shipped checkpoints: the HTML report in headless Chromium, ``render`` and ``compare``.

The screenshot and the DOM dump are left in the test's tmp folder (``pytest --basetemp=DIR``
keeps them where you can look).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.helpers import REPO, invoke_cli, read_report

AFFINE, ADDITIVE = REPO / "checkpoints" / "digits-affine.pt", REPO / "checkpoints" / "digits-additive.pt"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# a real headless Chromium per page, and the audit runs it renders
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audit both checkpoints once (round trip, 200 samples a set) with every file format."""
    out = tmp_path_factory.mktemp("reports")
    for name, ckpt in (("affine", AFFINE), ("additive", ADDITIVE)):
        result = invoke_cli(
            "run",
            ckpt,
            "--samples",
            200,
            "--audit",
            "roundtrip",
            "-q",
            "-o",
            f"json={out / name}.json",
            "-o",
            f"html={out / name}.html",
            "-o",
            f"junit={out / name}.xml",
            "-o",
            f"markdown={out / name}.md",
        )
        assert result.code == (1 if name == "affine" else 0), result.stderr
    return out


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and raw RGB(A) scanlines (filter bytes removed) of an 8-bit PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        prev = line
    pixels = b"".join(bytes(r[i : i + 3]) for r in rows for i in range(0, stride, channels))
    return width, height, pixels


def _count(pixels: bytes, rgb: tuple[int, int, int], tol: int = 6) -> int:
    r0, g0, b0 = rgb
    return sum(
        1
        for i in range(0, len(pixels), 3)
        if abs(pixels[i] - r0) <= tol and abs(pixels[i + 1] - g0) <= tol and abs(pixels[i + 2] - b0) <= tol
    )


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_unstable_checkpoint_report_reads_in_a_browser(runs: Path, tmp_path: Path) -> None:
    page = tmp_path / "affine.html"
    shutil.copy(runs / "affine.html", page)
    shot = tmp_path / "affine.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri(), tmp=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1200, 2000)
    assert _count(pixels, (0xB3, 0x26, 0x1E)) > 20000  # the red FAIL verdict banner and badges
    assert _count(pixels, (0x1F, 0x5F, 0x99)) > 2000  # the histogram bars
    assert _count(pixels, (0xC0, 0x39, 0x2B)) > 500  # the non-finite bars beside them
    dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path).stdout
    (tmp_path / "affine.dom.html").write_text(dom)
    assert "FAIL (exit 1)" in dom
    assert "roundtrip on uniform: fail" in dom
    assert dom.count("<svg") >= 4  # one error histogram per set


def test_render_of_the_saved_json_gives_the_same_files(runs: Path, tmp_path: Path) -> None:
    for fmt, ext in (("html", "html"), ("junit", "xml"), ("markdown", "md")):
        result = invoke_cli("render", runs / "affine.json", "-o", f"{fmt}={tmp_path / 'again'}.{ext}")
        assert result.code == 0, result.stderr
        assert (tmp_path / f"again.{ext}").read_bytes() == (runs / f"affine.{ext}").read_bytes(), fmt


def test_render_refuses_another_schema_version(runs: Path, tmp_path: Path) -> None:
    data = (runs / "affine.json").read_text().replace('"schema_version": 1', '"schema_version": 2', 1)
    (tmp_path / "v2.json").write_text(data)
    result = invoke_cli("render", tmp_path / "v2.json", "-o", "markdown")
    assert result.code == 2 and len(result.stderr_lines) == 1
    assert "schema_version 2" in result.stderr


def test_compare_shows_the_regressions_of_the_unstable_checkpoint(runs: Path, tmp_path: Path) -> None:
    base, new = runs / "additive.json", runs / "affine.json"
    gated = invoke_cli(
        "compare", base, new, "--fail-on-regression", "-o", "console", "-o", f"json={tmp_path / 'cmp.json'}"
    )
    assert gated.code == 1, gated.stderr
    assert "regressed" in gated.stdout and "nonfinite_fraction" in gated.stdout
    data = read_report(tmp_path / "cmp.json")["baseline"]
    regressed = {(d["set"], d["metric"]) for d in data["deltas"] if d["change"] == "regressed"}
    assert {
        ("uniform", "nonfinite_fraction"),
        ("gaussian", "nonfinite_fraction"),
        ("rademacher", "nonfinite_fraction"),
    } <= regressed
    assert ("digits:test", "nonfinite_fraction") not in regressed
    assert invoke_cli("compare", base, new).code == 0  # without the flag: shown, not gated
    assert invoke_cli("compare", base, base, "--fail-on-regression").code == 0
    assert invoke_cli("compare", new, base, "--fail-on-regression").code == 0  # only improvements


def test_run_with_a_baseline_gates_on_regression(runs: Path, tmp_path: Path) -> None:
    result = invoke_cli(
        "run",
        ADDITIVE,
        "--samples",
        200,
        "--audit",
        "roundtrip",
        "--baseline",
        runs / "affine.json",
        "--fail-on-regression",
        "-o",
        f"markdown={tmp_path / 's.md'}",
    )
    assert result.code == 0, result.stderr  # the stable checkpoint only improves on the unstable one
    text = (tmp_path / "s.md").read_text()
    assert "Against the baseline" in text and "| improved |" in text and "| regressed |" not in text
    worse = invoke_cli(
        "run",
        AFFINE,
        "--samples",
        200,
        "--audit",
        "roundtrip",
        "--baseline",
        runs / "additive.json",
        "--fail-on-regression",
        "-o",
        f"github={tmp_path / 'a.txt'}",
    )
    assert worse.code == 1
    assert (
        "::error title=innaudit regression roundtrip (uniform)::nonfinite_fraction regressed"
        in (tmp_path / "a.txt").read_text()
    )
    missing = invoke_cli("run", ADDITIVE, "--fail-on-regression")
    assert missing.code == 2 and "--fail-on-regression needs --baseline" in missing.stderr
