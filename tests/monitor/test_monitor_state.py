"""The monitor never changes training (issue 28, items 4 and 12).

A Glow-port ActNorm initializes itself from the first batch it sees, guarded by a plain Python
attribute ``initialized = False``: if the monitor ran the model first (at construction, or in a
check before the first step), the training would start from the monitor's data instead of its
own batch. Training with the monitor must give bit for bit the weights of training without it;
a check that triggers such a mutation reports it and puts the model back. The log is appended
to, never truncated, and a log that stops being writable warns once while training goes on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from innaudit.core.results import Status
from innaudit.monitor import InvertibilityMonitor, read_log
from innaudit.monitor.core import MonitorLogWarning
from innaudit.monitor.state import ModelState


class LazyActNorm(nn.Module):
    """ActNorm as Glow ports write it: data-dependent init on the first forward, flagged by a
    plain attribute (not a buffer, so no state dict and no fingerprint sees it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.initialized = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.initialized:
            with torch.no_grad():
                self.bias.copy_(-x.mean(0))
                self.log_scale.copy_(-torch.log(x.std(0) + 1e-6))
            self.initialized = True
        return (x + self.bias) * torch.exp(self.log_scale)

    def inverse(self, z: Tensor) -> Tensor:
        return z * torch.exp(-self.log_scale) - self.bias


class LazyFlow(nn.Module):
    """ActNorm then an invertible linear map, on vectors of 3."""

    input_shape = (3,)
    data_range = (-4.0, 4.0)

    def __init__(self) -> None:
        super().__init__()
        self.norm = LazyActNorm(3)
        self.w = nn.Parameter(torch.eye(3) + 0.1 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
        self.calls: list[int] = []  # a plain list attribute, appended to on every forward
        self.seen = torch.zeros(())  # a plain tensor attribute, bumped in place

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls.append(len(x))
        self.seen += 1
        z = self.norm(x) @ self.w.T
        log_det = self.norm.log_scale.sum() + torch.linalg.slogdet(self.w)[1]
        return z, log_det.expand(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return self.norm.inverse(torch.linalg.solve(self.w, z.T).T)


def _batches() -> list[Tensor]:
    g = torch.Generator().manual_seed(3)
    return [2.0 + 0.5 * torch.randn(32, 3, generator=g) for _ in range(8)]


def _train(monitor_kind: str | None) -> tuple[dict[str, Tensor], InvertibilityMonitor | None]:
    torch.manual_seed(0)
    model = LazyFlow()
    monitor = None
    if monitor_kind is not None:
        monitor = InvertibilityMonitor(model, data=torch.rand(16, 3), ood=(), every=2, samples=16, spectrum_samples=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step, x in enumerate(_batches()):
        if monitor is not None and monitor_kind == "before":  # a check before the step it counts
            monitor.step(step)
        z, log_det = model(x)
        loss = 0.5 * (z**2).sum(1).mean() - log_det.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None and monitor_kind == "after":
            monitor.step(step)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, monitor


@pytest.mark.parametrize("kind", ["after", "before"])
def test_training_with_the_monitor_gives_bitwise_the_same_weights_as_without(kind: str) -> None:
    plain, _ = _train(None)
    monitored, monitor = _train(kind)
    assert monitor is not None and len(monitor.timeline) == 4
    for name, value in plain.items():
        assert torch.equal(value.view(torch.uint8), monitored[name].view(torch.uint8)), name


def test_making_the_monitor_runs_no_model_code() -> None:
    model = LazyFlow()
    InvertibilityMonitor(model, data=torch.rand(8, 3), ood=(), every=1, samples=8)
    assert model.calls == [] and not model.norm.initialized


def test_a_check_that_triggers_the_init_reports_it_and_puts_everything_back() -> None:
    model = LazyFlow()
    monitor = InvertibilityMonitor(model, data=torch.rand(16, 3), ood=(), every=1, samples=16, spectrum_samples=2)
    bias = model.norm.bias
    result = monitor.step(0)
    assert result is not None and result.status is Status.ERROR
    mutation = [f for f in result.findings if f.rule == "mutation"]
    assert mutation and "attr:norm.initialized" in mutation[0].message and "param:norm.bias" in mutation[0].message
    assert not model.norm.initialized and model.calls == [] and float(model.seen) == 0.0
    assert model.norm.bias is bias and torch.equal(bias, torch.zeros(3)), "the same parameter, zeroed again"


def test_model_state_restores_attributes_tables_and_classes() -> None:
    model = LazyFlow()
    state = ModelState.of(model)
    model(torch.rand(4, 3))
    model.extra = 5  # an attribute the check added
    model.register_buffer("stray", torch.ones(1))
    changed = state.restore()
    assert {"attr:calls", "attr:seen", "attr:extra", "buffer:stray", "attr:norm.initialized"} <= set(changed)
    assert not hasattr(model, "extra") and "stray" not in dict(model.named_buffers())
    assert model.calls == [] and not model.norm.initialized
    assert ModelState.of(model).restore() == [], "nothing changed: nothing reported"


def test_the_log_is_appended_to_never_truncated(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    for _ in range(2):  # a training run that resumes with the same log
        monitor = InvertibilityMonitor(LazyFlow(), data=torch.rand(8, 3), ood=(), every=1, samples=8, log=log)
        monitor.step(0)
    kinds = [r["kind"] for r in read_log(log)]
    assert kinds == ["start", "check", "start", "check"]


def test_a_log_that_stops_being_writable_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    monitor = InvertibilityMonitor(LazyFlow(), data=torch.rand(8, 3), ood=(), every=1, samples=8, log=log)
    log.unlink()
    log.mkdir()  # the path became a folder
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        results = [monitor.step(step) for step in range(3)]
    assert all(r is not None for r in results) and len(monitor.timeline) == 3
    log_warnings = [w for w in seen if issubclass(w.category, MonitorLogWarning)]
    assert len(log_warnings) == 1 and "cannot be written" in str(log_warnings[0].message)
