"""Known-answer models, and factories for ``innaudit run tests/audits/cli_models.py:NAME``.

Only torch is imported here, so the CLI can load this file by path from anywhere."""

from __future__ import annotations

import torch
from torch import nn


class UnderflowCoupling(nn.Module):
    r"""2D affine coupling ``y = (x1, x2 * sigmoid(-k x1))``, inverse ``x2 = y2 / sigmoid(-k y1)``.

    In float32 ``sigmoid(-k x1)`` underflows to exactly 0 once ``k x1`` exceeds about 104, so
    for ``k = 200`` every input with ``x1 > 0.52`` round-trips to NaN (0 / 0), while for
    ``x1 < 0.25`` the scale stays a normal float above 1e-22 and the round trip is exact to
    float32 rounding.
    """

    input_shape = (2,)
    data_range = (0.0, 1.0)

    def __init__(self, k: float = 200.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def _scale(self, x1: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-self.k * x1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._scale(x[:, :1])
        return torch.cat([x[:, :1], x[:, 1:] * s], dim=1), torch.log(s).squeeze(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[:, :1], y[:, 1:] / self._scale(y[:, :1])], dim=1)


class Scaling(nn.Module):
    """``z = diag(s) x``: exact inverse, singular values ``s`` (used for known SV answers)."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(scales))
        self.input_shape = (len(scales),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.s, torch.log(self.s.abs()).sum().expand(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.s


class Wrong(Scaling):
    """Its inverse forgets to divide: wrong everywhere."""

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z


class Crash(Scaling):
    """Its inverse raises: the audit must end as ERROR, not FAIL."""

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def exact() -> nn.Module:
    return Scaling([0.5, 2.0, 3.0])


def wrong() -> nn.Module:
    return Wrong([0.5, 2.0, 3.0])


def crash() -> nn.Module:
    return Crash([0.5, 2.0, 3.0])


class Slow(Scaling):
    """Its inverse announces itself in $INNAUDIT_TEST_STARTED, then sleeps a minute: a run
    of it cannot end before the test interrupts it, however loaded the machine."""

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        import os
        import pathlib
        import time

        pathlib.Path(os.environ["INNAUDIT_TEST_STARTED"]).touch()
        time.sleep(60.0)
        return z / self.s


def slow() -> nn.Module:
    return Slow([0.5, 2.0, 3.0])


class HangsOnNegative(Scaling):
    """Its inverse never returns for a latent with a negative entry (prior draws), so the
    round trip on data in [0, 1] finishes and the sampling audit hangs."""

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        import time

        while bool((z < 0).any()):
            time.sleep(0.05)
        return z / self.s


class Greedy(Scaling):
    """Its inverse asks for 16 GiB."""

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.s + torch.ones(1 << 32).sum() * 0


def hangs() -> nn.Module:
    return HangsOnNegative([0.5, 2.0, 3.0])


def greedy() -> nn.Module:
    return Greedy([0.5, 2.0, 3.0])
