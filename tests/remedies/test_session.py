"""``innaudit.repair`` end to end on known-answer models: the plan, the fix, the proof, the price."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import innaudit
from innaudit.core.errors import UsageError
from innaudit.core.results import ExitCode
from innaudit.remedies import bound_scales
from innaudit.remedies.result import Outcome, RepairStatus
from tests.helpers import FIXTURE_MODELS

from . import models

FAST = {"audits": ["roundtrip"], "samples": 300, "steps": 20}
NORMFLOWS = f"{Path(models.__file__)}:normflows_overflow"


def nonfinite(report: innaudit.Report, dataset: str) -> float:
    return float(report.result("roundtrip", dataset).metrics["nonfinite_fraction"])


def test_the_overflow_flow_is_repaired_by_a_bounded_scale(
    overflow_ckpt: Path, train_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "fixed.pt"
    result = innaudit.repair(str(overflow_ckpt), data=str(train_file), output=output, **FAST)
    assert result.status is RepairStatus.REPAIRED and result.exit_code is ExitCode.OK
    assert result.plan.chosen == ("bounded-scale",)
    (remedy,) = result.remedies
    assert remedy.outcome is Outcome.FIXED and remedy.parameters["clamp"] == {
        "blocks.1": pytest.approx(12.0, rel=1e-2)
    }  # 1.2 x max |h| = 1.2 x 10
    assert result.before is not None and result.after is not None
    assert nonfinite(result.before, "rademacher") > 0.3 and nonfinite(result.after, "rademacher") == 0.0
    comparison = result.after.comparison
    assert comparison is not None and comparison.counts["improved"] > 0 and not comparison.regressions
    assert result.price is not None and result.price.metric == "nll_bits_per_dim" and result.price.n == 80
    assert output.read_bytes() == result.checkpoint and result.checkpoint_kind == "native"
    block = result.report.run["repair"]
    assert block["status"] == "repaired" and block["plan"]["chosen"] == ["bounded-scale"]


def test_the_written_checkpoint_is_what_the_reaudit_audited(
    overflow_ckpt: Path, train_file: Path, tmp_path: Path
) -> None:
    output, test = tmp_path / "fixed.pt", tmp_path / "test.npy"
    np.save(test, models.train_data(100, seed=1))
    result = innaudit.repair(str(overflow_ckpt), data=str(train_file), test=str(test), output=output, **FAST)
    assert result.after is not None and result.price is not None and result.price.n == 100
    again = innaudit.audit(str(output), data=str(test), audits=["roundtrip"], samples=300)
    assert again.target["sha256"] == result.after.target["sha256"]
    for name in ("test", "uniform", "rademacher"):  # the same seed and sets: the same numbers
        assert again.result("roundtrip", name).metrics == result.after.result("roundtrip", name).metrics
    provenance = again.target["provenance"]["repair"]
    assert provenance["source"]["sha256"] == result.before.target["sha256"] and provenance["plan"] == ["bounded-scale"]
    loaded = torch.load(io.BytesIO(output.read_bytes()), weights_only=True)
    assert loaded["architecture"]["name"] == "repaired"
    assert loaded["architecture"]["config"]["scale_clamp"] == result.remedies[0].parameters["clamp"]


def test_the_same_seed_gives_the_same_checkpoint_bytes(overflow_ckpt: Path, train_file: Path) -> None:
    runs = [innaudit.repair(str(overflow_ckpt), data=str(train_file), seed=seed, **FAST) for seed in (3, 3)]
    assert runs[0].checkpoint == runs[1].checkpoint and runs[0].checkpoint is not None
    assert runs[0].report.run["repair"]["price"] == runs[1].report.run["repair"]["price"]


def test_a_wrong_inverse_gets_no_remedy(tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((200, 4)).astype(np.float32))
    result = innaudit.repair(f"{FIXTURE_MODELS}:wrong", data=str(data), audits=["roundtrip"], samples=200)
    assert result.status is RepairStatus.NO_REMEDY and result.exit_code is ExitCode.GATE_FAILED
    assert result.plan.blocker is not None and result.plan.chosen == ()
    assert result.checkpoint is None and result.after is None and not result.remedies


def test_a_float32_overflow_of_the_inverse_is_fixed_by_a_float64_inverse(
    precision_ckpt: Path, train_file: Path
) -> None:
    config = {"float64_check": True}
    result = innaudit.repair(str(precision_ckpt), data=str(train_file), config=config, **FAST)
    assert result.plan.chosen == ("precision",)
    scale = next(c for c in result.plan.choices if c.remedy == "bounded-scale")
    assert "no affine coupling" in scale.not_applicable  # called for by the noise sets, nothing to bound
    (remedy,) = result.remedies
    assert remedy.parameters["blocks"] == ["blocks.0"] and remedy.outcome is Outcome.FIXED
    assert result.status is RepairStatus.REPAIRED and result.after is not None
    assert nonfinite(result.before, "uniform") == 1.0 and nonfinite(result.after, "uniform") == 0.0


def test_a_float64_inverse_does_not_fix_an_ill_conditioned_forward_and_says_so(
    ill_ckpt: Path, train_file: Path
) -> None:
    result = innaudit.repair(str(ill_ckpt), data=str(train_file), config={"float64_check": True}, **FAST)
    assert result.plan.chosen == ("precision",)
    (remedy,) = result.remedies  # cond * u = 0.6 in float32 whichever side runs in float64
    assert remedy.parameters["blocks"] == ["blocks.0"] and remedy.outcome in (Outcome.IMPROVED, Outcome.NOT_FIXED)
    assert result.status is RepairStatus.NOT_FIXED and result.exit_code is ExitCode.GATE_FAILED
    assert any("roundtrip[" in line for line in result.still_failing)


def test_a_normflows_factory_gets_a_state_dict_that_loads_back(train_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "fixed.pt"
    result = innaudit.repair(NORMFLOWS, data=str(train_file), output=output, **FAST)
    assert result.status is RepairStatus.REPAIRED and result.checkpoint_kind == "state_dict"
    clamps = result.remedies[0].parameters["clamp"]
    assert list(clamps) == ["flows.0.flows.1"] and "bound_scales" in result.load_hint
    plain = innaudit.audit(NORMFLOWS, weights=str(output), data=str(train_file), audits=["roundtrip"], samples=300)
    assert plain.exit_code is ExitCode.GATE_FAILED  # the weights alone: the scale is unbounded again
    flow = models.normflows_overflow()
    flow.load_state_dict(torch.load(output, weights_only=True), strict=True)
    bound_scales(flow, clamps)
    fixed = innaudit.audit(flow, data=str(train_file), audits=["roundtrip"], samples=300)
    assert fixed.exit_code is ExitCode.OK


def test_plan_only_changes_nothing_and_a_passing_model_needs_nothing(
    overflow_ckpt: Path, healthy_ckpt: Path, train_file: Path
) -> None:
    planned = innaudit.repair(str(overflow_ckpt), data=str(train_file), plan_only=True, **FAST)
    assert planned.status is RepairStatus.PLANNED and planned.exit_code is ExitCode.OK
    assert planned.plan.chosen == ("bounded-scale",) and planned.checkpoint is None
    healthy = innaudit.repair(str(healthy_ckpt), data=str(train_file), **FAST)
    assert healthy.status is RepairStatus.NOTHING_TO_REPAIR and healthy.exit_code is ExitCode.OK
    assert healthy.plan.passed and healthy.checkpoint is None


def test_a_saved_report_can_start_the_repair_and_must_be_of_this_model(
    overflow_ckpt: Path, healthy_ckpt: Path, train_file: Path, tmp_path: Path
) -> None:
    first = innaudit.repair(str(overflow_ckpt), data=str(train_file), plan_only=True, **FAST)
    saved = tmp_path / "before.json"
    innaudit.Report.of(first.before).save(saved)
    again = innaudit.repair(str(overflow_ckpt), data=str(train_file), before=saved, plan_only=True)
    assert again.plan.to_dict() == first.plan.to_dict()
    with pytest.raises(UsageError, match=r"not .*healthy"):
        innaudit.repair(str(healthy_ckpt), data=str(train_file), before=saved, plan_only=True)
    with pytest.raises(UsageError, match="--before fixes"):
        innaudit.repair(str(overflow_ckpt), data=str(train_file), before=saved, samples=10)


def test_the_held_out_split_is_never_trained_on(overflow_ckpt: Path, train_file: Path) -> None:
    from innaudit.remedies.data import prepare_data

    data = prepare_data(models.DOMAIN, str(train_file), seed=0)
    rows = {tuple(r) for r in data.train.tolist()}
    assert len(data.heldout) == 80 and len(data.valid) == 32 and len(data.train) == 288
    assert not rows & {tuple(r) for r in data.heldout.tolist()} and not rows & {tuple(r) for r in data.valid.tolist()}
    with pytest.raises(UsageError, match="is the training data"):
        prepare_data(models.DOMAIN, str(train_file), test=str(train_file))


def test_the_fine_tune_runs_under_the_monitor_and_its_timeline_is_in_the_report(
    hinge_ckpt: Path, train_file: Path
) -> None:
    result = innaudit.repair(
        str(hinge_ckpt), data=str(train_file), audits=["roundtrip"], samples=300, steps=12, monitor_every=4
    )
    assert nonfinite(result.before, "rademacher") > 0.3  # the hinge overflows off the data
    assert result.fine_tune is not None, result.notes  # the clamp costs validation likelihood: recovered
    timeline = result.report.run["repair"]["timeline"]
    assert [check["step"] for check in timeline["timeline"]] == [0, 4, 8, 12]
    assert set(timeline["sets"]) == {"data", "uniform", "gaussian", "rademacher"}
    first = timeline["timeline"][0]["sets"]["rademacher"]
    assert first["nonfinite"] == 0.0  # the monitor watches the bounded model


def test_a_spent_budget_stops_the_fine_tune_and_says_so(hinge_ckpt: Path, train_file: Path) -> None:
    result = innaudit.repair(
        str(hinge_ckpt), data=str(train_file), audits=["roundtrip"], samples=300, steps=50, budget=1e-3
    )
    assert result.fine_tune is not None and result.fine_tune["steps_done"] == 0
    assert result.fine_tune["kept_step"] == 0  # the best validated weights: the bounded model as it was
    assert any("the budget ran out after 0 of 50 steps" in note for note in result.notes)
    assert result.before.run["config"]["budget"] == pytest.approx(3e-4)  # 30 % of the budget per audit
