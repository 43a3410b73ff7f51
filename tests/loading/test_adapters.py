"""Every library's models audited through the CLI alike, one case per library.

Per library (``tests/adapters/helpers.py`` :data:`CASES`): the stable factory model passes with
the library named in the report, the unstable one fails, and its weights (``.pt`` and
``.safetensors``) load into the factory; the reported round-trip errors equal those the
library's own API gives on the same inputs. What only one library has (directions, caches,
conditions, blocks) is in ``test_adapters_<lib>.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.adapters.helpers import (
    CASES,
    LibraryCase,
    assert_matches,
    audit,
    factory,
    factory_module,
    roundtrip_metrics,
    save_weights,
    write_inputs,
)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> LibraryCase:
    """The library's case; the test is skipped when the library is not installed."""
    return CASES[request.param].require()


def _assert_fails(
    case: LibraryCase, code: int, metrics: dict[str, Any], unstable: torch.nn.Module, x: torch.Tensor, note: object = ""
) -> None:
    """The unstable model fails: NaN/Inf where it overflows, else errors above 1e-2 equal to
    the library's own round trip."""
    if case.unstable_nonfinite:  # exp(scale) overflows
        assert code == 1 and metrics["nonfinite_fraction"] > 0, note
        return
    assert code == 1 and metrics["rel_error_l2"]["max"] > 1e-2, note
    assert_matches(metrics, case.hand(unstable, x))


def test_stable_model_matches_the_library_and_passes(tmp_path: Path, case: LibraryCase) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(case.lib), data)
    assert code == 0 and report["target"]["library"] == case.library
    assert_matches(roundtrip_metrics(report), case.hand(factory_module(case.lib).build(), x))


def test_unstable_coupling_fails_with_the_library_error(tmp_path: Path, case: LibraryCase) -> None:
    data, x = write_inputs(tmp_path)
    code, report, _ = audit(tmp_path, factory(case.lib, "build_unstable"), data)
    _assert_fails(case, code, roundtrip_metrics(report), factory_module(case.lib).build_unstable(), x)


def test_weights_pt_and_safetensors_load_into_the_factory(tmp_path: Path, case: LibraryCase) -> None:
    data, x = write_inputs(tmp_path)
    unstable = factory_module(case.lib).build_unstable()
    for weights in save_weights(unstable, tmp_path, "unstable"):
        code, report, _ = audit(tmp_path, factory(case.lib), data, "--weights", weights)
        assert report["target"]["weights"] == str(weights)
        _assert_fails(case, code, roundtrip_metrics(report), unstable, x, weights)
