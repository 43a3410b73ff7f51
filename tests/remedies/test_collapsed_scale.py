"""The shipped memory-saving classifier, whose sigmoid scale collapsed on the data (block 12 first),
repaired by a floored bounded scale: the re-audit's gradient passes."""

from __future__ import annotations

from pathlib import Path

import pytest

import innaudit
from innaudit.remedies.bounded_scale import SCALE_FLOOR, floor_bound
from innaudit.remedies.result import Outcome, RepairStatus
from innaudit.remedies.rules import BOUNDED_SCALE, COLLAPSED
from tests.helpers import invoke_cli

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "digits-classifier-affine-ms.pt"


@pytest.mark.slow
def test_a_floored_bound_repairs_the_memory_saving_gradient_of_the_ms_classifier(tmp_path: Path) -> None:
    fixed = tmp_path / "ms-fixed.pt"
    result = innaudit.repair(str(CHECKPOINT), data="digits:train", audits=["gradient"], seed=0, output=fixed)
    before = result.before.result("gradient", "digits:test").metrics
    assert float(before["nonfinite_fraction"]) > 0  # the failure the repair starts from
    assert [c.finding.rule for c in result.plan.choices if c.remedy == BOUNDED_SCALE] == [COLLAPSED]
    assert result.plan.floored and result.plan.chosen.count(BOUNDED_SCALE) == 1
    bounded = next(r for r in result.remedies if r.remedy == BOUNDED_SCALE)
    cap = floor_bound("sigmoid")
    assert bounded.parameters["floor"] == SCALE_FLOOR
    assert all(c <= round(cap, 3) + 1e-3 for c in bounded.parameters["clamp"].values())
    assert "blocks.12" in bounded.parameters["floored"]  # the collapsed block was lowered, not preserved
    assert bounded.outcome is Outcome.FIXED
    assert result.after is not None
    after = result.after.result("gradient", "digits:test").metrics
    assert float(after["nonfinite_fraction"]) == 0.0 and float(after["rel_error_l2"]["max"]) < 1e-2
    assert result.status is RepairStatus.REPAIRED and int(result.exit_code) == 0
    assert result.price is not None and abs(result.price.after - result.price.before) <= 0.02
    assert invoke_cli("run", fixed, "--audit", "gradient").code == 0  # the written bytes pass on their own
