"""The Lightning and Hugging Face callbacks with the real libraries (skipped where not installed)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from torch import nn

from innaudit.core.results import Status

from .models import ScaleCoupling, data, far


def _blow_up_at(model: ScaleCoupling, step: int, at: int = 6) -> None:
    if step >= at:
        with torch.no_grad():
            model.s.fill_(30.0)


def _nll(flow: ScaleCoupling, x: torch.Tensor) -> torch.Tensor:
    z, log_det = flow(x)
    return (0.5 * z.pow(2).sum(1) - log_det).mean()


def test_lightning_callback_stops_the_trainer_at_the_first_failing_step(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (extra [monitor])")
    from innaudit.monitor.lightning import InvertibilityCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.flow = ScaleCoupling()

        def training_step(self, batch, batch_idx):
            return _nll(self.flow, batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-4)

    class Perturb(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _blow_up_at(pl_module.flow, trainer.global_step)

    class Recorder(pl.loggers.Logger):
        def __init__(self) -> None:
            super().__init__()
            self.logged: list[tuple[int, dict]] = []

        name, version = "recorder", "0"  # type: ignore[assignment]

        def log_metrics(self, metrics, step=None):
            self.logged.append((step, dict(metrics)))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    callback = InvertibilityCallback(data=data(), ood={"far": far()}, every=2, on_fail="stop", flow=lambda m: m.flow)
    logger = Recorder()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(160, 2)), batch_size=8)
    trainer = pl.Trainer(
        max_steps=20,
        callbacks=[Perturb(), callback],
        logger=logger,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(Module(), loader)
    assert [r.step for r in callback.results] == [2, 4, 6]
    assert [r.status for r in callback.results] == [Status.PASS, Status.PASS, Status.FAIL]
    assert trainer.global_step == 6 and callback.monitor is not None and callback.monitor.first_failure == 6
    mine = [(s, m) for s, m in logger.logged if "innaudit/status" in m]
    assert [s for s, _ in mine] == [2, 4, 6] and mine[-1][1]["innaudit/far/nonfinite"] == 1.0


def test_hf_callback_stops_the_trainer_at_the_first_failing_step(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (extra [monitor])")
    pytest.importorskip("accelerate", reason="the transformers Trainer needs accelerate (extra [monitor])")
    from innaudit.monitor.hf import InvertibilityTrainerCallback

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flow = ScaleCoupling()

        def forward(self, x):
            return {"loss": _nll(self.flow, x)}

    class Perturb(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            _blow_up_at(model.flow, state.global_step)

    class Points(torch.utils.data.Dataset):
        def __len__(self):
            return 160

        def __getitem__(self, i):
            return {"x": torch.rand(2, generator=torch.Generator().manual_seed(i))}

    callback = InvertibilityTrainerCallback(
        data=data(), ood={"far": far()}, every=2, on_fail="stop", flow=lambda m: m.flow
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=Wrapper(), args=args, train_dataset=Points(), callbacks=[Perturb(), callback])
    trainer.train()
    assert [r.step for r in callback.results] == [2, 4, 6]
    assert callback.results[-1].status is Status.FAIL and trainer.state.global_step == 6
    logged = [e for e in trainer.state.log_history if "innaudit/status" in e]
    assert [e["step"] for e in logged] == [2, 4, 6]


@pytest.mark.parametrize(
    ("module", "blocked", "package"),
    [
        ("innaudit.monitor.lightning", ("lightning.pytorch", "lightning", "pytorch_lightning"), "lightning"),
        ("innaudit.monitor.hf", ("transformers",), "transformers"),
    ],
)
def test_without_the_library_the_import_error_names_the_extra(monkeypatch, module, blocked, package):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"innaudit\[monitor\].*pip install {package}"):
        importlib.import_module(module)
    monkeypatch.delitem(sys.modules, module, raising=False)
