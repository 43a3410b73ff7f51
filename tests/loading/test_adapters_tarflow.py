"""The ml-tarflow calling convention, audited from a factory and a plain state dict, no glue.

The model is ``tests/adapters/mltarflow_models.py`` (it mimics that repository's ``Model`` API:
mean log-det, ``var``, ``reverse`` that multiplies by ``var.sqrt()``, ``F.unfold`` patches, a
KV-cached reverse). Its weights go to disk as ``torch.save(state_dict)`` under a training
wrapper's prefix, as they come out of a DataParallel, Lightning or EMA run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from innaudit.core.errors import LoadError
from innaudit.core.stats import per_sample_norm
from innaudit.loading import load_model, load_object
from innaudit.loading.adapters import find_adapter, tarflow
from innaudit.model.autoregressive import is_autoregressive
from tests.adapters.helpers import factory_module
from tests.helpers import invoke_cli, read_report

MODELS = Path(__file__).resolve().parents[1] / "adapters" / "mltarflow_models.py"
mm: Any = factory_module("mltarflow")
SCHEMA = Path(__file__).resolve().parents[2] / "innaudit" / "render" / "report.schema.json"


def images(n: int = 32, seed: int = 0) -> np.ndarray:
    """Images in [-1, 1), the range ml-tarflow normalizes its data to."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)


def weights(
    folder: Path, model: nn.Module, prefix: str = "module.", name: str = "afhq_model_4_32_2_1_0.07.pth"
) -> Path:
    path = folder / name
    torch.save({prefix + k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    return path


def run(folder: Path, factory: str, weights_file: Path | None, *audits: str, extra: tuple = ()) -> tuple[int, dict]:
    data = folder / "x.npy"
    np.save(data, images())
    out = folder / "report.json"
    args = ["run", f"{MODELS}:{factory}", "--data", data, "--no-progress", "--ood", "uniform", "-o", f"json={out}"]
    if weights_file is not None:
        args += ["--weights", weights_file]
    for audit_id in audits:
        args += ["--audit", audit_id]
    result = invoke_cli(*args, *extra)
    assert result.code in (0, 1), result.stderr
    report = read_report(out)
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA.read_text(encoding="utf-8")))
    return result.code, report


def metrics(report: dict, audit_id: str, dataset: str = "x") -> dict[str, Any]:
    (entry,) = [a for a in report["audits"] if a["id"] == audit_id]
    (row,) = [r for r in entry["results"] if r["dataset"] == dataset]
    return row["metrics"]


def test_the_convention_is_recognized_without_a_library_import() -> None:
    from innaudit import zoo
    from innaudit.zoo.tarflow import tarflow_config

    assert find_adapter(mm.build()) is tarflow
    assert find_adapter(zoo.build("tarflow", tarflow_config())) is None  # has inverse(): plain module
    domain = tarflow.declared_domain(mm.build())
    assert domain is not None and (domain.shape, domain.low, domain.high) == ((3, 16, 16), -1.0, 1.0)


def test_log_det_sum_convention_is_recovered_and_logdet_passes(tmp_path: Path) -> None:
    model = mm.randomized(mm.build(), seed=1, std=0.05)
    code, report = run(tmp_path, "build", weights(tmp_path, model), "logdet", extra=("--samples", "4"))
    assert code == 0
    got = metrics(report, "logdet")
    assert got["rel_error"]["max"] < 1e-4
    # the mean the model returns is 768 times smaller than the true log-det: it would not pass
    x = torch.from_numpy(images(2))
    with torch.no_grad():
        _, _, mean = model(x)
    loaded = load_object(model).model
    jac = torch.autograd.functional.jacobian(lambda u: loaded.forward(u, grad=True).flatten(), x[:1]).reshape(768, 768)
    exact = torch.linalg.slogdet(jac.double())[1]
    assert abs(float(mean[0]) * 768 - float(exact)) < 1e-3 * abs(float(exact))
    assert abs(float(mean[0]) - float(exact)) > 0.5 * abs(float(exact))
    notes = " ".join(report["warnings"])
    assert "multiplied by 768 to a sum" in notes and "reverse(z / var.sqrt(), guidance=0)" in notes


def test_an_exact_model_round_trips_exactly(tmp_path: Path) -> None:
    """With zero heads (weights and biases) every block is the identity: the round trip is
    exact, 0, when the adapter divides by var.sqrt() where reverse multiplies by it."""
    model = mm.build()
    with torch.no_grad():
        for block in model.blocks:
            block.proj_out.bias.zero_()
        model.var.fill_(4.0)  # reverse multiplies by 2 (exact in binary), the adapter divides by 2
    code, report = run(tmp_path, "build", weights(tmp_path, model), "roundtrip")
    assert code == 0
    for dataset in ("x", "uniform"):
        got = metrics(report, "roundtrip", dataset)
        assert got["error_l2"]["max"] == 0.0 and got["nonfinite_fraction"] == 0.0


def test_round_trip_is_the_one_computed_with_the_models_own_api(tmp_path: Path) -> None:
    model = mm.randomized(mm.build(), seed=2, std=0.05)
    code, report = run(tmp_path, "build", weights(tmp_path, model), "roundtrip")
    x = torch.from_numpy(images())
    with torch.no_grad():
        z, _, _ = model(x.clone())
        back = model.reverse(z.clone() / model.var.sqrt())
    errors = per_sample_norm(back - x).numpy()
    got = metrics(report, "roundtrip")
    assert code == 0 and 0 < errors.max() < 1e-4
    assert abs(got["error_l2"]["max"] - float(errors.max())) <= 1e-6 * float(errors.max())


def test_vp_prior_is_divided_out_before_reverse(tmp_path: Path) -> None:
    """In the VP mode ``var`` is learned; ``reverse(z)`` without the division is off by it."""
    model = mm.build_vp()
    mm.randomized(model, seed=3, std=0.05)
    model.var.copy_(torch.rand(model.var.shape, generator=torch.Generator().manual_seed(4)) * 3 + 0.2)
    code, report = run(tmp_path, "build_vp", weights(tmp_path, model, prefix="net.model."), "roundtrip", "sampling")
    assert code == 0
    assert metrics(report, "roundtrip")["rel_error_l2"]["max"] < 1e-5
    assert report["target"]["weights_reading"]["stripped"] == "net.model."
    x = torch.from_numpy(images(4))
    with torch.no_grad():
        naive = model.reverse(model(x.clone())[0])  # the trap: reverse scales by var.sqrt() again
    assert float((per_sample_norm(naive - x) / per_sample_norm(x)).min()) > 0.1


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "net.", "model.ema.", "module.net."])
def test_training_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str) -> None:
    model = mm.randomized(mm.build(), seed=5, std=0.05)
    path = weights(tmp_path, model, prefix=prefix)
    loaded = load_model(f"{MODELS}:build", weights=str(path))
    assert loaded.target["weights_reading"]["stripped"] == prefix
    assert any(prefix in w for w in loaded.warnings)
    x = torch.from_numpy(images(2))
    with torch.no_grad():
        assert torch.equal(loaded.model.forward(x), model(x)[0])


def test_a_model_saved_beside_its_ema_copy_asks_which_to_audit(tmp_path: Path) -> None:
    """Two different complete copies (a model and its EMA): the loader names both readings and
    the ``--weights-key`` that picks each; the EMA one then loads with no glue."""
    plain = mm.randomized(mm.build(), seed=6, std=0.05)
    ema = mm.randomized(mm.build(), seed=7, std=0.05)
    state = {**{"net." + k: v for k, v in plain.state_dict().items()}}
    state.update({"net_ema." + k: v for k, v in ema.state_dict().items()})
    path = tmp_path / "both.pth"
    torch.save(state, path)
    with pytest.raises(LoadError, match=r"@net_ema\."):
        load_model(f"{MODELS}:build", weights=str(path))
    loaded = load_model(f"{MODELS}:build", weights=str(path), weights_key="@net_ema.")
    x = torch.from_numpy(images(2))
    with torch.no_grad():
        assert torch.equal(loaded.model.forward(x), ema(x)[0])


def test_blocks_carry_the_token_structure_of_the_convention() -> None:
    model = mm.randomized(mm.build(), seed=8, std=0.05)
    with torch.no_grad():
        first = model.blocks[0]
        first.proj_out.weight.zero_()
        first.proj_out.bias.copy_(torch.cat([torch.full((48,), 0.75), torch.full((48,), -0.25)]))
    loaded = load_object(model).model
    blocks = loaded.blocks()
    assert [b.info.architecture for b in blocks] == ["patchify", "MetaBlock[0]", "MetaBlock[1]"]
    views = [b.module for b in blocks]
    assert not is_autoregressive(views[0]) and all(is_autoregressive(v) for v in views[1:])
    assert views[1].token_order().tolist() == list(range(16))
    assert views[2].token_order().tolist() == list(range(15, -1, -1))
    h = model.patchify(torch.from_numpy(images(3)))
    with torch.no_grad():
        a, b = views[1].affine_params(h)
    assert torch.equal(a[:, 0], torch.zeros(3, 48)) and torch.equal(a[:, 1:], torch.full((3, 15, 48), 0.75))
    assert torch.equal(b[:, 1:], torch.full((3, 15, 48), -0.25))
    x = torch.from_numpy(images(3))
    z, ld = x, torch.zeros(3)
    for block in blocks:
        z, block_ld = block.forward_and_log_det(z)
        ld = ld + block_ld
    whole, whole_ld = loaded.forward_and_log_det(x)
    torch.testing.assert_close(z, whole)
    torch.testing.assert_close(ld, whole_ld)


def test_tokens_audit_runs_on_the_convention(tmp_path: Path) -> None:
    model = mm.randomized(mm.build(), seed=9, std=0.05)
    code, report = run(tmp_path, "build", weights(tmp_path, model), "tokens")
    assert code == 0
    got = metrics(report, "tokens")
    assert got["blocks"] == 2 and got["tokens"] == 16 and got["culprit_index"] == -1
    assert 0 < got["chain_rel_error"]["max"] < 1e-4 and got["path_gap"]["max"] < 1e-4
    (entry,) = [a for a in report["audits"] if a["id"] == "tokens"]
    # the convention's LayerNorm casts its input to float32: a float64 copy cannot run it
    assert "float64 reference not computed: RuntimeError" in entry["results"][0]["message"]
    assert got["autocast_bfloat16"]["departure_float32"]["max"] > 1e-4


def test_a_condition_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = invoke_cli("run", f"{MODELS}:build", "--condition", "constant:1", "--audit", "roundtrip", "--no-progress")
    assert result.code == 2
    assert "ml-tarflow convention" in result.stderr and "Traceback" not in result.stderr
