"""Models whose inverse iterates, for the ``convergence`` and ``bounds`` audits.

Known answers:

- ``linear_residual(scale)``: one zoo residual block ``y = x + A x`` with ``g`` a single
  spectrally normalized linear layer whose stored estimate is stale (``sigma = 1`` while the raw
  weight is ``diag(3 s, s)``, coefficient 0.5), so ``A = diag(1.5 s, 0.5 s)``. The fixed point
  ``x <- z - A x`` contracts by ``1.5 s`` along the first axis: for ``scale = 1`` it diverges
  on every sample with ``x_1 != 0`` and converges exactly where ``x_1 = 0``; the certified
  ``Lip(g) = 1.5`` while the block's own estimate is 0.5. ``scale = 0.6`` gives ``Lip(g) = 0.9``:
  a contraction everywhere.
- ``normflows_residual``: three normflows ``Residual`` layers (``LipschitzMLP``, coefficient 0.9).
- ``freia_iresnet``: two FrEIA ``IResNetLayer`` blocks on vectors.
- ``freia_padding_mismatch``: an ``IResNetLayer`` on 3x3 images whose weights were put through
  FrEIA's own ``lipschitz_correction()`` (``spectral_norm_max = 1``): the correction measures
  ``conv2d`` at padding 0 while the layer pads by 1, so FrEIA's estimate of ``Lip(g)`` is just
  below 1 (0.996) while the certified ``Lip(g)`` is 1.24.
- ``zuko_naf``: a zuko NAF (bisection inverse on ``[-10, 10]``).
"""

from __future__ import annotations

import torch
from torch import nn

from innaudit.zoo.residual import ResidualBlock, ResidualFlow
from innaudit.zoo.spectral import SpectralLinear


def linear_residual(scale: float = 1.0, max_iter: int = 200) -> nn.Module:
    layer = SpectralLinear(2, 2, 0.5, 0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([3.0 * scale, scale])))
        layer.bias.zero_()
        layer.sigma.fill_(1.0)  # stale: the raw weight's norm is 3 s
    flow = ResidualFlow([ResidualBlock([layer], 1e-6, max_iter, "exact", 1)], 1e-6, max_iter, "exact")
    flow.input_shape = (2,)
    flow.data_range = (-1.0, 1.0)
    return flow.eval()


def stable_linear_residual() -> nn.Module:
    return linear_residual(0.6)


def normflows_residual() -> nn.Module:
    import normflows as nf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        flows = [
            nf.flows.Residual(nf.nets.LipschitzMLP([2, 32, 32, 2], init_zeros=False, lipschitz_const=0.9))
            for _ in range(3)
        ]
        model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows)
    return model.eval()


def freia_iresnet() -> nn.Module:
    from FrEIA.framework import SequenceINN
    from FrEIA.modules import IResNetLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        inn = SequenceINN(4)
        for _ in range(2):
            inn.append(IResNetLayer, internal_size=16, n_internal_layers=1)
        for block in inn.module_list:
            block.lipschitz_correction()
    return inn.eval()


def freia_padding_mismatch() -> nn.Module:
    from FrEIA.framework import SequenceINN
    from FrEIA.modules import IResNetLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        inn = SequenceINN(2, 3, 3)
        inn.append(IResNetLayer, internal_size=8, n_internal_layers=1, spectral_norm_max=1.0)
        block = inn.module_list[0]
        with torch.no_grad():
            for layer in block.layers:
                layer.weight.mul_(3.0)
        block.lipschitz_correction()
    return inn.eval()


def zuko_naf() -> nn.Module:
    import zuko

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        flow = zuko.flows.NAF(3, transforms=2, hidden_features=(16,))
    return flow.eval()
