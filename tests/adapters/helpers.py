"""What the per-library adapter tests share: inputs on disk, a CLI audit, the hand computation.

Every test audits a model built by the library itself through ``innaudit run FILE.py:build``
and recomputes the round trip with the library's own API on the very inputs the audit read
(the ``--data`` file), one batch as the audit does.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.stats import per_sample_norm
from tests.conftest import invoke_cli, read_report

HERE = Path(__file__).resolve().parent
SCHEMA = Path(__file__).resolve().parents[2] / "innaudit" / "render" / "report.schema.json"
SAMPLES = 256


def factory(lib: str, name: str = "build") -> str:
    """``tests/adapters/<lib>_models.py:<name>`` as a MODEL argument."""
    return f"{HERE / f'{lib}_models.py'}:{name}"


def factory_module(lib: str) -> ModuleType:
    """The factory file imported as a module (to rebuild the same model for the hand check)."""
    spec = importlib.util.spec_from_file_location(f"adapter_models_{lib}", HERE / f"{lib}_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_inputs(folder: Path, seed: int = 0, features: int = 4, name: str = "x") -> tuple[Path, Tensor]:
    """``SAMPLES`` standard-normal float32 rows in ``folder/x.npy``, and the same as a tensor."""
    x = np.random.default_rng(seed).standard_normal((SAMPLES, features)).astype(np.float32)
    path = folder / f"{name}.npy"
    np.save(path, x)
    return path, torch.from_numpy(x)


def audit(folder: Path, model: str, data: Path, *extra: object) -> tuple[int, dict[str, Any], str]:
    """Run ``innaudit run MODEL --data DATA --audit roundtrip -o json=...``; the report is
    checked against ``report.schema.json``. Returns ``(exit code, report, stderr)``."""
    import jsonschema

    out = folder / "report.json"
    result = invoke_cli("run", model, "--data", data, "--audit", "roundtrip", "--no-progress",
                        "--batch-size", 500, "--samples", SAMPLES, "-o", f"json={out}", *extra)
    assert result.code in (0, 1), result.stderr
    report = read_report(out)
    jsonschema.validate(report, json.loads(SCHEMA.read_text(encoding="utf-8")))
    return result.code, report, result.stderr


def roundtrip_metrics(report: dict[str, Any], dataset: str = "x") -> dict[str, Any]:
    """The roundtrip audit's metrics for one set."""
    (entry,) = [a for a in report["audits"] if a["id"] == "roundtrip"]
    (row,) = [r for r in entry["results"] if r["dataset"] == dataset]
    return row["metrics"]


def hand_errors(x: Tensor, forward: Callable[[Tensor], Tensor],
                inverse: Callable[[Tensor], Tensor]) -> Tensor:
    """Per-sample ``||x - inverse(forward(x))||_2`` with the library's own calls (fresh tensors)."""
    with torch.no_grad():
        z = forward(x.clone())
        back = inverse(z.clone())
    return per_sample_norm(back - x)


def assert_matches(metrics: dict[str, Any], errors: Tensor) -> None:
    """The report's error summary equals the hand computation (same float32 ops, same batch)."""
    assert metrics["n"] == len(errors)
    assert metrics["nonfinite_fraction"] == 0.0
    values = errors.numpy()
    for key, value in (("max", values.max()), ("median", np.median(values)), ("mean", values.mean())):
        reported = float(metrics["error_l2"][key])
        assert abs(reported - float(value)) <= 1e-6 * float(value) + 1e-12, (key, reported, float(value))


def save_weights(module: torch.nn.Module, folder: Path, stem: str) -> tuple[Path, Path]:
    """The module's state dict as ``stem.pt`` (torch.save) and ``stem.safetensors``."""
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    pt, st = folder / f"{stem}.pt", folder / f"{stem}.safetensors"
    torch.save(state, pt)
    save_file(state, str(st))
    return pt, st
