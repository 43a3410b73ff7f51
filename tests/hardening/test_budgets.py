"""Bombs in data and config files cost what the budget allows, not what they describe."""

from __future__ import annotations

import io
import resource
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit import zoo
from innaudit.audits import specs
from innaudit.config.settings import load_config
from innaudit.core.domain import DataDomain
from innaudit.core.errors import ConfigError, DataError, LoadError
from innaudit.loading import load_model
from innaudit.loading.native import checkpoint_bytes
from innaudit.safeio.arrays import read_array
from tests.helpers import CliResult

BOMB_YAML = (
    "\n".join(
        ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)]
        + ["ood: [*h,*h,*h,*h,*h,*h,*h,*h,*h]"]
    )
    + "\n"
)


def _zeros_npz(path: Path, rows: int, cols: int = 256, extra: bool = True) -> Path:
    """An .npz whose float32 entry ``x`` of ``rows x cols`` zeros is deflated (ratio ~1000)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as entry:
            entry.write(header.getvalue())
            chunk = bytes(min(rows * cols * 4, 8 << 20))
            left = rows * cols * 4
            while left:
                entry.write(chunk[:left])
                left -= min(left, len(chunk))
        if extra:
            archive.writestr("y.npy", b"not even an array")
    return path


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_zip_bomb_npz_is_refused_before_inflating(tmp_path: Path) -> None:
    bomb = _zeros_npz(tmp_path / "bomb.npz", rows=1 << 18)  # 256 MiB of zeros
    assert bomb.stat().st_size < 2 << 20

    def read() -> None:
        with pytest.raises(DataError, match="zip bomb"):
            read_array(bomb, "x", 200)

    assert _peak(read) < 16 << 20


def test_only_the_rows_asked_for_are_inflated(tmp_path: Path) -> None:
    big = _zeros_npz(tmp_path / "big.npz", rows=48 << 10)  # 48 MiB declared, under the ratio check
    out: list[np.ndarray] = []
    peak = _peak(lambda: out.append(np.asarray(read_array(big, "x", 200))))
    assert out[0].shape == (200, 256) and not out[0].any()
    assert peak < 4 << 20, f"{peak} bytes traced for 200 rows of 1 KiB"


def test_the_npz_bomb_through_the_cli_is_exit_2(
    run_cli: Callable[..., CliResult], tmp_path: Path, fixture_models: Path
) -> None:
    bomb = _zeros_npz(tmp_path / "bomb.npz", rows=1 << 18, cols=4 << 6)
    result = run_cli("run", f"{fixture_models}:exact", "--data", f"{bomb}:x", "--samples", "200")
    assert result.code == 2 and "zip bomb" in result.stderr


def test_a_yaml_alias_bomb_is_refused_with_bounded_work(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB_YAML)
    assert len(BOMB_YAML.splitlines()) == 9

    def load() -> None:
        with pytest.raises(ConfigError, match="billion laughs"):
            load_config(config, specs())

    assert _peak(load) < 32 << 20


def test_the_yaml_bomb_through_the_cli_is_one_line_exit_2(
    run_cli: Callable[..., CliResult], tmp_path: Path, fixture_models: Path
) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB_YAML)
    result = run_cli("run", f"{fixture_models}:exact", "--config", config)
    assert result.code == 2 and len(result.stderr_lines) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("seed: 1\nseed: 2\n", "given twice"),
        ("waivers:\n  - {audit: roundtrip, reason: r, expires: 2099-13-45}\n", "not a date"),
        ("a: &a [*a]\n", "refers to itself"),
        ("samples: 1000000000000000000000\n", "expected a count from 1 to 1e"),
        ("ood: [" + ", ".join(["x"] * 10) + "]\n" + "#" * (5 << 20) + "\n", "MiB"),
        ("roundtrip:\n  thresholds: " + "[" * 2000 + "]" * 2000 + "\n", "expected a mapping|nested too deeply"),
    ],
)
def test_config_budget_errors_are_one_line(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(config, specs())
    assert len(str(info.value)) < 600


CONFIG = {
    "shape": [4],
    "steps": 2,
    "hidden": 8,
    "coupling": "additive",
    "permutation": "reverse",
    "actnorm": False,
    "seed": 0,
}


def _native(tmp_path: Path, **config: object) -> Path:
    module = zoo.build("coupling-vector", CONFIG)
    path = tmp_path / "hostile.pt"
    path.write_bytes(checkpoint_bytes(module, "coupling-vector", {**CONFIG, **config}, DataDomain(shape=(4,))))
    return path


def test_a_config_asking_for_50_gb_is_refused_without_allocating(tmp_path: Path) -> None:
    path = _native(tmp_path, hidden=16384, steps=200)  # 200 x 1 GiB hidden layers, within the ranges
    assert path.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LoadError, match="asks for more than"):
        load_model(str(path))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 << 10


@pytest.mark.parametrize(
    ("key", "value"),
    [("steps", 200000), ("hidden", 10**6), ("shape", [4] * 20), ("shape", [1 << 20]), ("steps", 2.5), ("hidden", True)],
)
def test_out_of_range_configs_are_refused_before_building(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(LoadError, match="damaged or hostile"):
        load_model(str(_native(tmp_path, **{key: value})))


def test_an_honest_checkpoint_still_loads(tmp_path: Path) -> None:
    loaded = load_model(str(_native(tmp_path)))
    assert loaded.target["loader"] == "native"
    assert torch.isfinite(loaded.model.forward(torch.rand(3, 4))).all()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "roundtrip:\n  sets:\n    unifrom: {thresholds: {nonfinite_fraction: {fail: 0.5}}}\n",
            "roundtrip.sets: 'unifrom' is not a set roundtrip measures in this run; did you mean 'uniform'",
        ),
        (
            "sampling:\n  sets:\n    prior@T=0.5: {thresholds: {nonfinite_fraction: {fail: 0.5}}}\n",
            "sampling.sets: 'prior@T=0.5' is not a set sampling measures in this run; did you mean 'prior@T=0.7'",
        ),
    ],
)
def test_a_typo_in_a_set_name_is_refused_before_the_run(
    run_cli: Callable[..., CliResult], tmp_path: Path, fixture_models: Path, text: str, match: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    report = tmp_path / "r.json"
    result = run_cli("run", f"{fixture_models}:exact", "--config", config, "-o", f"json={report}")
    assert result.code == 2 and result.stderr_lines == [f"error: config audits.{match}?"]
    assert not report.exists()


def test_set_names_the_run_measures_are_accepted(
    run_cli: Callable[..., CliResult], tmp_path: Path, fixture_models: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "roundtrip:\n  sets:\n    uniform: {thresholds: {nonfinite_fraction: {fail: 0.5}}}\n"
        "sampling:\n  sets:\n    prior@T=0.7: {thresholds: {nonfinite_fraction: {fail: 0.5}}}\n"
    )
    result = run_cli(
        "run",
        f"{fixture_models}:exact",
        "--config",
        config,
        "--audit",
        "roundtrip",
        "--audit",
        "sampling",
        "--samples",
        "64",
    )
    assert result.code == 0, result.stderr


# -- round 3 (issue 28, item 14 and the low list): every saved input is read within a cap --------
def _report_and_log(run_cli: Callable[..., CliResult], tmp_path: Path) -> tuple[Path, Path]:
    from innaudit.monitor import InvertibilityMonitor
    from tests.helpers import FIXTURE_MODELS
    from tests.monitor.models import ScaleCoupling, data

    report, log = tmp_path / "r.json", tmp_path / "m.jsonl"
    assert (
        run_cli("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}").code
        == 0
    )
    InvertibilityMonitor(ScaleCoupling(), data=data(), ood=(), every=1, samples=8, log=log).step(0)
    return report, log


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("command", ["render", "render log", "compare base", "compare new", "baseline"])
def test_an_endless_input_is_refused_within_the_cap(
    run_cli: Callable[..., CliResult], tmp_path: Path, command: str
) -> None:
    from innaudit.verdict.report_json import MAX_REPORT_BYTES
    from tests.helpers import FIXTURE_MODELS

    report, _ = _report_and_log(run_cli, tmp_path)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    args = {
        "render": ("render", "/dev/zero"),
        "render log": ("render", zero),
        "compare base": ("compare", "/dev/zero", report),
        "compare new": ("compare", report, "/dev/zero"),
        "baseline": ("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--baseline", "/dev/zero"),
    }[command]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    result = run_cli(*args)
    assert result.code == 2 and len(result.stderr_lines) == 1, result.stderr
    assert "MiB" in result.stderr
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - before
    assert grown < 4 * MAX_REPORT_BYTES, grown


def test_a_report_larger_than_a_config_still_reads(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    """The report cap is not the config's 4 MiB: a paper-size ``grid`` report is over 11 MB."""
    import json

    report, _ = _report_and_log(run_cli, tmp_path)
    data = json.loads(report.read_text())
    data["audits"][0]["results"][0]["series"]["padding"] = [0.5] * 1_000_000  # about 5 MB
    report.write_text(json.dumps(data))
    assert report.stat().st_size > 4 << 20
    assert run_cli("render", report, "-o", f"html={tmp_path / 'r.html'}").code == 0


def test_a_huge_string_in_a_report_is_capped_in_every_renderer(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    import json

    from innaudit.verdict.report_json import MAX_STRING

    report, _ = _report_and_log(run_cli, tmp_path)
    data = json.loads(report.read_text())
    data["target"]["model"] = "m" * 2_000_000
    data["audits"][0]["results"][0]["dataset"] = "s" * 2_000_000
    report.write_text(json.dumps(data))
    for fmt in ("console", "html", "junit", "markdown", "github"):
        out = tmp_path / f"out.{fmt}"
        assert run_cli("render", report, "-o", f"{fmt}={out}").code == 0, fmt
        size = out.stat().st_size
        assert size < 400_000, (fmt, size)
        assert "m" * MAX_STRING not in out.read_text(), fmt


@pytest.mark.parametrize("columns", ["0", "1", "7"])
def test_a_tiny_terminal_width_prints_the_report_at_80_columns(
    run_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    from tests.helpers import FIXTURE_MODELS

    monkeypatch.setenv("COLUMNS", columns)
    result = run_cli("run", f"{FIXTURE_MODELS}:exact", "--audit", "roundtrip", "--samples", "8")
    assert result.code == 0, result.stderr
    assert "innaudit: PASS (exit 0)" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
