"""A shipped checkpoint rebuilds byte for byte where the CPU's kernels compute as the build
machine's did (``checkpoints/MANIFEST.md``, "What rebuilds a file exactly").

The bytes of a trained file depend on the arithmetic of the kernels MKL, oneDNN and ATen pick
for the CPU; ``kernel_probe.py`` fingerprints that arithmetic without innaudit code. Where the
probe matches the build machine's, a rebuild of ``digits-affine`` must give the MANIFEST's
sha256, so a mismatch is a change of the recipe or the training code; where it does not, the
test skips with the probe's hash rather than fail for the runner's CPU.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, invoke_subprocess, subprocess_env

PROBE = Path(__file__).with_name("kernel_probe.py")
BUILD_TORCH = "2.13.0+cpu"


def _manifest() -> str:
    return (REPO / "checkpoints" / "MANIFEST.md").read_text()


def build_probe() -> str:
    """The kernel probe of the machine that built the shipped digits files, as the MANIFEST
    records it."""
    found = re.search(r"it prints\s+`([0-9a-f]{64})`", _manifest())
    assert found, "MANIFEST.md no longer records the build machine's kernel probe"
    return found.group(1)


def _probe_here() -> str:
    proc = subprocess.run(
        [sys.executable, str(PROBE)],
        capture_output=True,
        text=True,
        env=subprocess_env({"OMP_NUM_THREADS": "1"}),
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


def test_the_kernel_probe_is_deterministic_and_recorded() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernel_probe", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    probe = module.probe
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        first, second = probe(), probe()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert first == second and re.fullmatch(r"[0-9a-f]{64}", first)
    assert re.fullmatch(r"[0-9a-f]{64}", build_probe())


@pytest.mark.slow
def test_digits_affine_rebuilds_bit_for_bit_where_the_kernels_match(tmp_path: Path) -> None:
    if torch.__version__ != BUILD_TORCH:
        pytest.skip(f"the shipped checkpoints were built with torch {BUILD_TORCH}; this is {torch.__version__}")
    here = _probe_here()
    if here != build_probe():
        pytest.skip(
            f"this CPU's kernels compute differently from the build machine's (kernel probe "
            f"{here[:12]}, built with {build_probe()[:12]}): a rebuild here trains another model"
        )
    out = tmp_path / "digits-affine.pt"
    result = invoke_subprocess(
        "train", "digits-affine", "-o", out, "--seed", "0", "--no-progress", env={"OMP_NUM_THREADS": "1"}, timeout=1200
    )
    assert result.code == 0, result.stderr[-2000:]
    row = next(line for line in _manifest().splitlines() if line.startswith("| `digits-affine.pt` |"))
    shipped = re.search(r"`([0-9a-f]{64})`", row).group(1)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == shipped
    assert hashlib.sha256((REPO / "checkpoints" / "digits-affine.pt").read_bytes()).hexdigest() == shipped
