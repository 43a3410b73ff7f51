"""A small flow written the way the paper's code writes one (Glow ports: a list of layers, each
with ``forward(input, logdet, reverse)``, the log-determinant threaded through), and a factory
that hands it to innaudit (``innaudit run tests/audits/paper_style.py:build``).

Only torch is imported here, so the CLI can load this file by path."""

from __future__ import annotations

import torch
from torch import nn

DIM = 4


class ActNorm(nn.Module):
    """Per-feature affine map with data-dependent initialization on the first batch (``inited``
    is a plain attribute, as in the Glow ports)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, dim))
        self.logs = nn.Parameter(torch.zeros(1, dim))
        self.inited = False

    def initialize(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.bias.copy_(-x.mean(0, keepdim=True))
            self.logs.copy_(torch.log(1.0 / (x.std(0, keepdim=True, unbiased=False) + 1e-6)))
        self.inited = True

    def forward(
        self, x: torch.Tensor, logdet: torch.Tensor | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.inited:
            self.initialize(x)
        if reverse:
            y = x * torch.exp(-self.logs) - self.bias
            return y, None if logdet is None else logdet - self.logs.sum()
        y = (x + self.bias) * torch.exp(self.logs)
        return y, None if logdet is None else logdet + self.logs.sum()


class InvertibleLinear(nn.Module):
    """``y = W x``; the reverse pass uses ``torch.inverse(W)`` as the paper's 1x1 convolution does."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        self.weight = nn.Parameter(q @ torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.5])))

    def forward(
        self, x: torch.Tensor, logdet: torch.Tensor | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dlogdet = torch.slogdet(self.weight)[1]
        if reverse:
            return x @ torch.inverse(self.weight).T, None if logdet is None else logdet - dlogdet
        return x @ self.weight.T, None if logdet is None else logdet + dlogdet


class AffineCoupling(nn.Module):
    """Glow's affine coupling: ``scale = sigmoid(h + 2)``, ``y2 = (x2 + shift) * scale``."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng():  # seeded weights, the caller's random state untouched
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(dim // 2, 16), nn.ReLU(), nn.Linear(16, dim))
        with torch.no_grad():
            self.net[2].weight.mul_(1.5)

    def forward(
        self, x: torch.Tensor, logdet: torch.Tensor | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, b = x.chunk(2, dim=1)
        h = self.net(a)
        shift, raw = h[:, 0::2], h[:, 1::2]
        scale = torch.sigmoid(raw + 2.0)
        if reverse:
            b = b / scale - shift
            sign = -1.0
        else:
            b = (b + shift) * scale
            sign = 1.0
        out = torch.cat([a, b], dim=1)
        return out, None if logdet is None else logdet + sign * torch.log(scale).sum(1)


class FlowNet(nn.Module):
    """The paper's ``FlowNet`` shape: ``layers`` walked forward to encode, reversed to decode."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for k in range(steps):
            self.layers.extend([ActNorm(DIM), InvertibleLinear(DIM, 7 + k), AffineCoupling(DIM, 11 + k)])

    def encode(self, z: torch.Tensor, logdet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            z, logdet = layer(z, logdet, reverse=False)
        return z, logdet

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z, _ = layer(z, None, reverse=True)
        return z


class _Block(nn.Module):
    """One paper layer seen through innaudit's block contract."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, None, reverse=False)[0]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z, None, reverse=True)[0]


class Audited(nn.Module):
    """``forward(x) -> (z, logdet)``, ``inverse(z) -> x`` and ``blocks`` over a :class:`FlowNet`."""

    input_shape = (DIM,)
    data_range = (0.0, 1.0)

    def __init__(self, flow: FlowNet) -> None:
        super().__init__()
        self.flow = flow
        self.blocks = nn.ModuleList(_Block(layer) for layer in flow.layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.encode(x, torch.zeros(len(x), dtype=x.dtype, device=x.device))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow.decode(z)


def trained_flow() -> FlowNet:
    """The flow after its data-dependent initialization on a fixed batch, as training leaves it."""
    flow = FlowNet()
    flow.encode(torch.rand(256, DIM, generator=torch.Generator().manual_seed(0)), torch.zeros(256))
    return flow


def build() -> nn.Module:
    """Factory: the initialized flow, wrapped for innaudit."""
    return Audited(trained_flow())


def fresh() -> nn.Module:
    """Factory: a new flow whose ActNorm layers will initialize on the first batch they see
    (``--weights`` then holds the trained state)."""
    return Audited(FlowNet())
