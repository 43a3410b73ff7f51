"""What the per-library adapter tests share: inputs on disk, a CLI audit, the hand computation.

Every test audits a model built by the library itself through ``innaudit run FILE.py:build``
and recomputes the round trip with the library's own API on the very inputs the audit read
(the ``--data`` file), one batch as the audit does. :data:`CASES` holds one row per library
(factory file, import name, report label, that hand computation) for the tests every library
runs alike (``tests/loading/test_adapters.py``).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.stats import per_sample_norm
from innaudit.loading import load_model
from innaudit.model.contract import InvertibleModel
from tests.helpers import invoke_cli, read_report

HERE = Path(__file__).resolve().parent
SCHEMA = Path(__file__).resolve().parents[2] / "innaudit" / "render" / "report.schema.json"
SAMPLES = 256
DOMAIN = DataDomain(shape=(4,), low=-4.0, high=4.0)
"""The domain of every factory model when no ``--data`` gives one (R^4, inputs ~ N(0, 1))."""


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
    result = invoke_cli(
        "run",
        model,
        "--data",
        data,
        "--audit",
        "roundtrip",
        "--no-progress",
        "--batch-size",
        500,
        "--samples",
        SAMPLES,
        "-o",
        f"json={out}",
        *extra,
    )
    assert result.code in (0, 1), result.stderr
    report = read_report(out)
    jsonschema.validate(report, json.loads(SCHEMA.read_text(encoding="utf-8")))
    return result.code, report, result.stderr


def roundtrip_metrics(report: dict[str, Any], dataset: str = "x") -> dict[str, Any]:
    """The roundtrip audit's metrics for one set."""
    (entry,) = [a for a in report["audits"] if a["id"] == "roundtrip"]
    (row,) = [r for r in entry["results"] if r["dataset"] == dataset]
    return row["metrics"]


def hand_errors(x: Tensor, forward: Callable[[Tensor], Tensor], inverse: Callable[[Tensor], Tensor]) -> Tensor:
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


def load(lib: str, name: str = "build") -> InvertibleModel:
    """The factory's model as innaudit loads it (``FILE.py:name``), on :data:`DOMAIN`."""
    return load_model(factory(lib, name), fallback_domain=lambda: DOMAIN).model


def assert_blocks_compose(model: InvertibleModel, x: Tensor) -> None:
    """Running the blocks one after the other gives the whole model's forward and log-det."""
    z, ld = x, torch.zeros(len(x))
    for block in model.blocks():
        z, block_ld = block.forward_and_log_det(z)
        ld = ld + block_ld
    whole, whole_ld = model.forward_and_log_det(x)
    torch.testing.assert_close(z, whole)
    torch.testing.assert_close(ld, whole_ld)


def assert_condition_required(lib: str, data: Path) -> None:
    """A conditional factory audited without ``--condition``: exit 2, one line naming the flag."""
    missing = invoke_cli("run", factory(lib, "build_conditional"), "--data", data, "--audit", "roundtrip")
    assert missing.code == 2 and "--condition" in missing.stderr_lines[-1]


# The round trip data -> latent -> data with each library's own calls.


def hand_freia(inn: nn.Module, x: Tensor, c: list[Tensor] | None = None) -> Tensor:
    """FrEIA: ``inn(x, c=c)[0]`` forward, ``inn(z, c=c, rev=True)[0]`` back."""
    inn.eval()
    return hand_errors(x, lambda t: inn(t, c=c)[0], lambda t: inn(t, c=c, rev=True)[0])


def hand_nflows(flow: nn.Module, x: Tensor) -> Tensor:
    """nflows: the flow's ``_transform(x)[0]`` and ``_transform.inverse(z)[0]``."""
    flow.eval()
    t = flow._transform
    return hand_errors(x, lambda u: t(u)[0], lambda u: t.inverse(u)[0])


def hand_normflows(model: nn.Module, x: Tensor) -> Tensor:
    """normflows: data -> latent is its ``inverse``, latent -> data its ``forward``."""
    model.eval()
    return hand_errors(x, model.inverse, model.forward)


def hand_zuko(flow: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
    """zuko: ``flow(c).transform`` and its ``inv``."""
    flow.eval()
    t = flow(c).transform
    return hand_errors(x, t, t.inv)


def hand_pyro(t: Any, x: Tensor) -> Tensor:
    """pyro: forward samples (latent -> data), so data -> latent is ``t.inv``; the fresh tensors
    of :func:`hand_errors` bypass its cache."""
    return hand_errors(x, t.inv, t)


@dataclass(frozen=True)
class LibraryCase:
    """One library in the shared adapter tests.

    Attributes:
        lib: the factory file ``tests/adapters/<lib>_models.py`` (``build``, ``build_unstable``).
        module: what to import to tell whether the library is installed.
        package: what pip installs, for the skip reason.
        library: ``report["target"]["library"]``.
        hand: the round-trip errors with the library's own API.
        unstable_nonfinite: the unstable model overflows to NaN/Inf (no finite error to compare).
    """

    lib: str
    module: str
    package: str
    library: str
    hand: Callable[[Any, Tensor], Tensor]
    unstable_nonfinite: bool = False

    def require(self) -> LibraryCase:
        """Skip the calling test (or module) when the library is not installed."""
        pytest.importorskip(self.module, reason=f"{self.package} is not installed (pip install innaudit[adapters])")
        return self


CASES = {
    case.lib: case
    for case in (
        LibraryCase("freia", "FrEIA", "FrEIA", "FrEIA", hand_freia),
        LibraryCase("nflows", "nflows", "nflows", "nflows", hand_nflows),
        LibraryCase("normflows", "normflows", "normflows", "normflows", hand_normflows, unstable_nonfinite=True),
        LibraryCase("zuko", "zuko", "zuko", "zuko", hand_zuko),
        LibraryCase("pyro", "pyro", "pyro-ppl", "torch.distributions/pyro", hand_pyro),
    )
}
