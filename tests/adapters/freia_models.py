"""FrEIA models for the adapter tests: ``innaudit run tests/adapters/freia_models.py:build``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import FrEIA.framework as Ff
import FrEIA.modules as Fm
from _common import FEATURES, blow_up


def _subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def build() -> nn.Module:
    """Two GLOW couplings with random permutations (stable)."""
    torch.manual_seed(0)
    inn = Ff.SequenceINN(FEATURES)
    for k in range(2):
        inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_subnet, clamp=2.0)
        inn.append(Fm.PermuteRandom, seed=k)
    return inn


def build_unstable() -> nn.Module:
    """The same network with its coupling subnets' weights multiplied by 1e3: huge shifts."""
    inn = build()
    for block in inn.module_list:
        if isinstance(block, Fm.GLOWCouplingBlock):
            blow_up(block, 1e3)
    return inn


def build_graph() -> nn.Module:
    """A GraphINN chain: RNVP coupling, permutation, RNVP coupling."""
    torch.manual_seed(1)
    nodes = [Ff.InputNode(FEATURES, name="in")]
    nodes.append(Ff.Node(nodes[-1], Fm.RNVPCouplingBlock, {"subnet_constructor": _subnet}, name="c1"))
    nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {"seed": 3}, name="p1"))
    nodes.append(Ff.Node(nodes[-1], Fm.RNVPCouplingBlock, {"subnet_constructor": _subnet}, name="c2"))
    nodes.append(Ff.OutputNode(nodes[-1], name="out"))
    return Ff.GraphINN(nodes)


def build_conditional() -> nn.Module:
    """A SequenceINN whose couplings take a 2-feature condition."""
    torch.manual_seed(2)
    inn = Ff.SequenceINN(FEATURES)
    for k in range(2):
        inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_subnet, cond=0, cond_shape=(2,))
        inn.append(Fm.PermuteRandom, seed=k)
    return inn


def build_allinone() -> nn.Module:
    """Two AllInOneBlocks (soft-clamped affine coupling, global affine, permutation), clamp 1.5."""
    torch.manual_seed(3)
    inn = Ff.SequenceINN(FEATURES)
    for _ in range(2):
        inn.append(Fm.AllInOneBlock, subnet_constructor=_subnet, affine_clamping=1.5)
    return inn
