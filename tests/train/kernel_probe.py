"""A fingerprint of the CPU kernels a digits recipe trains with: ``python kernel_probe.py``.

The bytes of a trained checkpoint depend on the arithmetic of torch's CPU kernels, which MKL,
oneDNN and ATen pick per CPU: the same torch build on another CPU sums in another order, and
2000 Adam steps turn last-bit differences into another model. This probe runs, in plain torch
with fixed inputs, the kinds of operations a coupling flow's training uses (3x3 and 1x1
convolutions forward and backward through oneDNN, an MKL matrix product, ATen's vectorized
exp/log/sigmoid/tanh, reductions, an Adam step) and prints the sha256 of every result's bytes.
Two machines with the same probe hash compute those kernels bit for bit alike. It imports no
innaudit code, so a change of a recipe cannot change it.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def probe() -> str:
    """The sha256 of the probe's results (one thread, deterministic algorithms)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 2, 4, 4, generator=g)
    w1 = (0.1 * torch.randn(64, 2, 3, 3, generator=g)).requires_grad_()
    w2 = (0.1 * torch.randn(64, 64, 1, 1, generator=g)).requires_grad_()
    w3 = (0.1 * torch.randn(4, 64, 3, 3, generator=g)).requires_grad_()
    mix = (torch.eye(4) + 0.1 * torch.randn(4, 4, generator=g)).requires_grad_()
    h = F.relu(F.conv2d(x, w1, padding=1))
    h = F.relu(F.conv2d(h, w2))
    out = F.conv2d(h, w3, padding=1)
    y = torch.einsum("oc,bchw->bohw", mix, out)
    loss = (0.5 * y.pow(2).sum((1, 2, 3)) - torch.log(torch.sigmoid(y + 2)).sum((1, 2, 3))).mean()
    loss = loss + torch.tanh(y).exp().mean() + torch.logsumexp(y.flatten(1), 1).mean()
    loss.backward()
    params = [w1, w2, w3, mix]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(3):
        optimizer.step()
    digest = hashlib.sha256()
    for t in (h, out, y, loss, *params, *(p.grad for p in params)):
        digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    print(probe())
