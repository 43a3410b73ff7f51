"""Known-answer models for the repair tests, each failing in a region known in closed form.

- :func:`overflow_flow`: a one-coupling zoo flow on 2-D vectors with the ``exp`` scale whose scale
  net is exactly ``h = 200 x1 - 10`` on ``x1 >= 0``. The training data lie in ``[0, 0.1]^2``,
  where ``|h| <= 10``; off it (``x1`` near 1, all of the noise battery's reach in ``[0, 1]``)
  ``exp(h)`` overflows float32 and the latent is Inf. A bounded scale with ``c = 1.2 * 10 = 12``
  keeps every scale in ``(e^-12, e^12)``: finite everywhere.
- :func:`normflows_overflow`: the same map built from normflows' ``AffineCouplingBlock``
  (normflows' ``inverse`` is innaudit's forward, so its latent multiplies by ``exp(-h)``, which
  underflows to 0 off the data and the inverse gives ``0 * inf = NaN``), as a factory.
- :func:`precision_flow`: an additive zoo flow whose ActNorm has ``log_scale = -90``: the forward
  ``x e^-90`` is a float32 subnormal (finite, about 4e-40), but the inverse multiplies by
  ``e^90``, which overflows float32 (its largest number is 3.4e38 = e^88.7). In float64 both are
  fine, and a float64 inverse of the float32 output recovers ``x`` to the subnormal's precision.
- :func:`ill_conditioned_flow`: a learned 1x1 "convolution" (a linear map) with condition number
  1e7: float32 rounding in the forward is amplified by the inverse, whatever precision the
  inverse runs in, so a float64 inverse does not fix it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InvertibleModel
from innaudit.zoo.coupling import CouplingVector

__all__ = [
    "DOMAIN",
    "as_model",
    "hinge_overflow_flow",
    "ill_conditioned_flow",
    "normflows_overflow",
    "overflow_flow",
    "precision_flow",
    "train_data",
]

DOMAIN = DataDomain(shape=(2,), low=0.0, high=1.0, name="square")
CONFIG = {"shape": [2], "steps": 1, "hidden": 4, "permutation": "reverse", "actnorm": False, "seed": 0}


def as_model(module: nn.Module) -> InvertibleModel:
    """A zoo flow of this module as an InvertibleModel over :data:`DOMAIN`."""
    return adapt_module(module, DOMAIN, {"test": "repair"}, "coupling-vector")


def train_data(count: int = 400, high: float = 0.1, seed: int = 0) -> np.ndarray:
    """``count`` points uniform in ``[0, high]^2`` (float32)."""
    generator = np.random.default_rng(seed)
    return (high * generator.random((count, 2))).astype(np.float32)


def _set_scale_net(body0: nn.Linear, body2: nn.Linear | None, out: nn.Linear, scale_row: int) -> None:
    """First layer passes ``x1`` through (ReLU keeps ``x1 >= 0``), the output gives ``200 x1 - 10``
    in ``scale_row`` and 0 elsewhere."""
    with torch.no_grad():
        body0.weight.zero_()
        body0.weight[0, 0] = 1.0
        body0.bias.zero_()
        if body2 is not None:
            body2.weight.copy_(torch.eye(body2.weight.shape[0]))
            body2.bias.zero_()
        out.weight.zero_()
        out.bias.zero_()
        out.weight[scale_row, 0] = 200.0
        out.bias[scale_row] = -10.0


def overflow_flow() -> CouplingVector:
    """The zoo flow of the module docstring (architecture ``coupling-vector``, :data:`CONFIG`)."""
    model = CouplingVector(**{**CONFIG, "coupling": "affine", "scale": "exp"})
    net = model.blocks[1].net
    _set_scale_net(net.body[0], net.body[2], net.out, scale_row=1)  # the net gives [t, h]
    return model


def hinge_overflow_flow() -> CouplingVector:
    """The overflow flow's architecture with a scale net that is optimal on :func:`train_data`
    and explodes off it: ``h = H + 1000 relu(x1 - 0.1)``, ``t = -0.05`` (the coupling gives ``(x2 + t) e^h``) with ``e^H = 1 / sd``
    (``sd = 0.1 / sqrt(12)``, the uniform's), so on ``[0, 0.1]^2`` the latent's second coordinate
    is the standardized ``x2`` (the Gaussian NLL's optimum for this coupling), while ``x1 >= 0.19``
    gives ``h > 88``: ``exp`` overflows float32. The bounded scale's ``c = 1.2 H`` moves
    ``H`` to ``c tanh(1 / 1.2) = 0.82 H`` on the data, which costs likelihood that a fine-tune
    recovers."""
    model = CouplingVector(**overflow_config())
    net = model.blocks[1].net
    scale = math.log(math.sqrt(12.0) / 0.1)
    with torch.no_grad():
        for layer in (net.body[0], net.body[2], net.out):
            layer.weight.zero_()
            layer.bias.zero_()
        net.body[0].weight[0, 0], net.body[0].bias[0] = 1.0, -0.1
        net.body[2].weight.copy_(torch.eye(net.body[2].weight.shape[0]))
        net.out.weight[1, 0], net.out.bias[1] = 1000.0, scale
        net.out.bias[0] = -0.05  # the coupling computes (x2 + t) e^h
    return model


def overflow_config() -> dict[str, object]:
    """The zoo config :func:`overflow_flow` is built from."""
    return {**CONFIG, "coupling": "affine", "scale": "exp"}


def normflows_overflow() -> nn.Module:
    """The normflows flow of the module docstring (a factory: ``models.py:normflows_overflow``)."""
    import normflows as nf

    net = nf.nets.MLP([1, 4, 2], init_zeros=False)
    layers = [m for m in net.net if isinstance(m, nn.Linear)]
    _set_scale_net(layers[0], None, layers[-1], scale_row=1)  # normflows reads shift 0::2, scale 1::2
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), [nf.flows.AffineCouplingBlock(net)])
    flow.input_shape = (2,)
    flow.data_range = (0.0, 1.0)
    return flow


def precision_flow(log_scale: float = -90.0) -> CouplingVector:
    """The additive flow with an ActNorm of ``log_scale`` (architecture ``coupling-vector``)."""
    model = CouplingVector(**precision_config())
    with torch.no_grad():
        model.blocks[0].log_scale.fill_(log_scale)
    return model


def precision_config() -> dict[str, object]:
    """The zoo config :func:`precision_flow` is built from."""
    return {**CONFIG, "coupling": "additive", "actnorm": True}


def ill_conditioned_flow(condition: float = 1e7) -> CouplingVector:
    """An additive flow whose learned linear mixing has singular values 1 and ``condition``."""
    model = CouplingVector(**ill_conditioned_config())
    generator = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(2, 2, generator=generator, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(2, 2, generator=generator, dtype=torch.float64))
    weight = (q1 * torch.tensor([1.0, 1.0 / condition], dtype=torch.float64)) @ q2.T
    with torch.no_grad():
        model.blocks[0].weight.copy_(weight.float())
    return model


def ill_conditioned_config() -> dict[str, object]:
    """The zoo config :func:`ill_conditioned_flow` is built from."""
    return {**CONFIG, "coupling": "additive", "permutation": "linear"}
