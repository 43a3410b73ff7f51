"""Weights files as people save them load into their factory with no ``--weights-key`` when
exactly one reading fits; an ambiguous file lists the candidates and the key for each.

Which weights were loaded is told by the verdict: the good reading round-trips (exit 0), the
NaN one fails every sample (exit 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import invoke_cli
from tests.loading.keyed_models import Affine, Wrapper, good_state, nan_state

HERE = Path(__file__).resolve().parent
FACTORY = f"{HERE / 'keyed_models.py'}:build"


def run(tmp_path: Path, weights: Path, *extra: object) -> tuple[int, dict[str, Any] | None, str]:
    out = tmp_path / "r.json"
    out.unlink(missing_ok=True)
    result = invoke_cli(
        "run", FACTORY, "--weights", weights, "--audit", "roundtrip", "--ood", "uniform", "--samples", 16,
        "--no-progress", "-o", f"json={out}", *extra,
    )  # fmt: skip
    report = json.loads(out.read_text()) if out.exists() else None
    return result.code, report, result.stderr_lines[-1] if result.stderr_lines else ""


def save(tmp_path: Path, obj: Any, name: str = "w.pt") -> Path:
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def lightning_layout(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The entries Lightning 2.x writes to a ``.ckpt`` (``Trainer.save_checkpoint``)."""
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": prefixed(state, "model."),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {},
        "optimizer_states": [
            {"state": {0: {"momentum_buffer": torch.zeros(4, 4)}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
        ],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "hidden": 64},
    }


@pytest.mark.parametrize(
    ("case", "obj", "entry", "stripped"),
    [
        ("lightning", lightning_layout(good_state()), "state_dict", "model."),
        ("dataparallel", prefixed(good_state(), "module."), "(top level)", "module."),
        ("ignite", {"model": good_state(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 9}, "model", None),
        ("net-model", {"ema": prefixed(good_state(), "net.model.")}, "ema", "net.model."),
        ("compiled-in-ddp", prefixed(good_state(), "module._orig_mod."), "(top level)", "module._orig_mod."),
    ],
)
def test_layouts_load_with_no_weights_key(
    tmp_path: Path, case: str, obj: Any, entry: str, stripped: str | None
) -> None:
    code, report, last = run(tmp_path, save(tmp_path, obj, f"{case}.ckpt"))
    assert code == 0 and report is not None, last
    reading = report["target"]["weights_reading"]
    assert reading["entry"] == entry and reading["stripped"] == stripped


def test_a_torch_compiled_state_dict_loads(tmp_path: Path) -> None:
    model = Wrapper().model
    model.load_state_dict(good_state(), strict=True)
    state = torch.compile(model).state_dict()
    assert set(state) == {"_orig_mod.w", "_orig_mod.b"}  # what torch.compile really saves
    code, report, last = run(tmp_path, save(tmp_path, state))
    assert code == 0 and report is not None, last
    assert report["target"]["weights_reading"]["stripped"] == "_orig_mod."


def test_an_ema_shadow_params_dict_loads(tmp_path: Path) -> None:
    """torch_ema's state dict: ``shadow_params`` in ``parameters()`` order; buffers come from the
    model entry beside it, which holds NaN weights here, so exit 0 shows the EMA was used."""
    module = Affine()
    ema = {"decay": 0.999, "num_updates": 10, "shadow_params": [2 * torch.eye(4)], "collected_params": None}
    obj = {"model": {"w": module.w.detach() * float("nan"), "b": torch.zeros(4)}, "ema": ema}
    code, report, last = run(tmp_path, save(tmp_path, obj), "--weights-key", "ema")
    assert code == 0 and report is not None, last
    assert report["target"]["weights_reading"]["ema_shadow"] is True
    code, _, last = run(tmp_path, save(tmp_path, {"ema": ema, "model": good_state(3.0)}))
    assert code == 2 and "--weights-key 'model'" in last and "--weights-key 'ema.shadow_params'" in last


def test_raw_and_ema_weights_are_ambiguous_and_each_key_picks_one(tmp_path: Path) -> None:
    path = save(tmp_path, {"model": nan_state(), "ema": good_state(), "step": 5})
    code, report, last = run(tmp_path, path)
    assert code == 2 and report is None
    assert "2 different sets of weights" in last and "--weights-key 'model'" in last and "--weights-key 'ema'" in last
    assert run(tmp_path, path, "--weights-key", "ema")[0] == 0
    assert run(tmp_path, path, "--weights-key", "model")[0] == 1


def test_two_prefixes_in_one_state_dict_and_the_at_key(tmp_path: Path) -> None:
    state = {**prefixed(nan_state(), "model."), **prefixed(good_state(), "ema_model.")}
    path = save(tmp_path, {"state_dict": state})
    code, _, last = run(tmp_path, path)
    assert code == 2 and "--weights-key 'state_dict@ema_model.'" in last
    assert run(tmp_path, path, "--weights-key", "state_dict@ema_model.")[0] == 0
    assert run(tmp_path, path, "--weights-key", "state_dict@model.")[0] == 1


def test_identical_copies_are_one_reading(tmp_path: Path) -> None:
    code, report, last = run(tmp_path, save(tmp_path, {"model": good_state(), "ema": good_state()}))
    assert code == 0 and report is not None, last
    assert report["target"]["weights_key"] == "model"


def test_nothing_fits_names_the_closest_reading(tmp_path: Path) -> None:
    code, _, last = run(tmp_path, save(tmp_path, {"state_dict": prefixed({"w": torch.eye(4)}, "model.")}))
    assert code == 2 and "closest reading: state_dict with prefix 'model.' stripped: missing keys ['b']" in last


def _shards(tmp_path: Path, mapping: dict[str, str], tensors: dict[str, dict[str, torch.Tensor]]) -> Path:
    from safetensors.torch import save_file

    for name, shard in tensors.items():
        save_file(shard, tmp_path / name)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 80}, "weight_map": mapping}))
    return index


def test_sharded_safetensors_load_and_hostile_indexes_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    good = good_state()
    names = {"w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = _shards(tmp_path, names, {names["w"]: {"w": good["w"]}, names["b"]: {"b": good["b"]}})
    code, report, last = run(tmp_path, index)
    assert code == 0 and report is not None, last
    assert [s["file"] for s in report["target"]["weights_reading"]["shards"]] == sorted(names.values())
    index.write_text(json.dumps({"weight_map": {"w": "../outside.safetensors", "b": names["b"]}}))
    assert "not a plain file name" in run(tmp_path, index)[2]
    index.write_text(json.dumps({"weight_map": {"w": names["w"], "b": names["w"]}}))
    assert "does not hold what" in run(tmp_path, index)[2]


@pytest.mark.slow
def test_a_real_lightning_checkpoint_loads(tmp_path: Path) -> None:
    """``Trainer.save_checkpoint`` of a LightningModule holding the flow in ``self.model``."""
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = Affine()

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            return self.model(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, 4)), batch_size=4)
    trainer = lightning.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(Module(), data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    code, report, last = run(tmp_path, tmp_path / "last.ckpt")
    assert code == 0 and report is not None, last
    assert report["target"]["weights_reading"] == {
        "weights_key": "state_dict@model.",
        "entry": "state_dict",
        "stripped": "model.",
        "ema_shadow": False,
    }
    assert "lightning" in sys.modules and isinstance(Module().model, nn.Module)
