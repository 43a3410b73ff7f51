"""Forward-only audits build no autograd graph, and their per-sample values stay on the device."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import nn

from innaudit.api import audit
from innaudit.audits.common import _inference_works
from innaudit.core.domain import DataDomain
from innaudit.core.stats import ErrorAccumulator
from innaudit.loading import load_model
from innaudit.loading.adapt import adapt_module
from tests.helpers import REPO

BATCH = 50


class Recording(nn.Module):
    """``z = 2 x``, recording for each call its rows, whether inference mode was on, and whether
    its output is an inference tensor that autograd does not track."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.seen: list[tuple[int, bool, bool]] = []

    def _record(self, out: torch.Tensor) -> torch.Tensor:
        self.seen.append(
            (len(out), torch.is_inference_mode_enabled(), torch.is_inference(out) and not out.requires_grad)
        )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._record(x * self.scale)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self._record(z / self.scale)


def test_roundtrip_sampling_and_precision_run_their_batches_in_inference_mode() -> None:
    module = Recording()
    model = adapt_module(module, DataDomain(shape=(4,)), {"test": "recording"})
    report = audit(
        model,
        data="uniform",
        audits=["roundtrip", "sampling", "precision"],
        samples=BATCH,
        batch_size=BATCH,
        threads=1,
    )
    assert all(a.status.value != "error" for a in report.audits), [a.message for a in report.audits]
    batches = [(inference, untracked) for rows, inference, untracked in module.seen if rows == BATCH]
    # roundtrip: F and F^-1 of one batch; sampling: two temperatures; precision: the data set and
    # the prior draws through each true cast (its autocast lanes run the float32 module too)
    assert len(batches) >= 2 + 4 + 4
    assert all(inference and untracked for inference, untracked in batches)


def test_a_model_that_takes_gradients_inside_its_forward_keeps_autograd_and_still_round_trips() -> None:
    """The zoo's residual flow with the series log-det estimates it with autograd inside ``forward``."""
    path = REPO / "checkpoints" / "digits-residual.pt"
    model = load_model(str(path)).model
    assert not _inference_works(model, torch.device("cpu"))
    report = audit(str(path), audits=["roundtrip"], samples=64, threads=1)
    (roundtrip,) = report.audits
    assert roundtrip.status.value != "error" and roundtrip.results[0].metrics["n"] == 64
    assert roundtrip.results[0].metrics["rel_error_l2"]["max"] < 1e-2


def test_per_sample_errors_stay_where_the_batch_was_computed_until_read() -> None:
    meta = ErrorAccumulator(floor=1e-6)
    u = torch.empty(8, 5, device="meta")
    meta.add(u, u * 2, u + 1)  # a device that never copies: any host copy in add() would raise
    assert all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in meta.errors + meta.nan)

    acc = ErrorAccumulator(floor=1e-6)
    x = torch.rand(8, 5, generator=torch.Generator().manual_seed(0))
    back = x.clone()
    back[2] = float("nan")
    acc.add(x, x * 2, back + 1e-3)
    acc.add(x, x * 2, back)
    shipped = pickle.loads(pickle.dumps(acc))  # what a torchrun rank gathers: host arrays only
    assert all(isinstance(p, np.ndarray) for p in shipped.errors + shipped.middle_bad)
    assert shipped.metrics("latent") == acc.metrics("latent")
    assert acc.metrics("latent")["nonfinite_fraction"] == 2 / 16
