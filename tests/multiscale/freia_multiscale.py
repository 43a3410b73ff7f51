"""A FrEIA GraphINN with two output nodes: a Split without Concat (multi-scale)."""

from __future__ import annotations

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
from torch import nn

SHAPE = (3, 8, 8)


def _subnet(c_in: int, c_out: int) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(c_in, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, c_out, 3, padding=1))
    with torch.no_grad():
        net[-1].weight.mul_(0.1)
    return net


def build() -> nn.Module:
    """Downsample, coupling, split: half out at 12x4x4 -> level 0; the rest: coupling -> level 1."""
    torch.manual_seed(0)
    x = Ff.InputNode(*SHAPE, name="x")
    h = Ff.Node(x, Fm.IRevNetDownsampling, {}, name="squeeze")
    h = Ff.Node(h, Fm.GLOWCouplingBlock, {"subnet_constructor": _subnet, "clamp": 2.0}, name="coupling0")
    split = Ff.Node(h, Fm.Split, {"section_sizes": [6, 6], "dim": 0}, name="split")
    z0 = Ff.OutputNode(split.out0, name="z0")
    h = Ff.Node(split.out1, Fm.GLOWCouplingBlock, {"subnet_constructor": _subnet, "clamp": 2.0}, name="coupling1")
    z1 = Ff.OutputNode(h, name="z1")
    inn = Ff.GraphINN([x, h, split, z0, z1, *_inner(split)])
    inn.input_shape = SHAPE
    return inn.eval()


def _inner(split: Ff.Node) -> list[Ff.Node]:
    nodes: list[Ff.Node] = []
    node = split.inputs[0][0]
    while not isinstance(node, Ff.InputNode):
        nodes.append(node)
        node = node.inputs[0][0]
    return nodes
