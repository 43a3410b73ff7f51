"""Certified global Lipschitz bounds of invertible blocks, from their parameters.

For a block ``f`` the pair ``(L, L_inv)`` bounds ``Lip(f)`` and ``Lip(f^-1)`` on all of
``R^d`` in the L2 norm (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, the
block lemmas of Section 3). A composition is bounded by the product of its blocks' bounds, and,
where every block is a chain of linear maps and activations, by the tighter chain bound of
:mod:`innaudit.linalg.chain`.

Where a block's bound comes from, in order:

1. a **residual block** ``y = x + g(x)`` described by a registered :func:`register_residual`
   rule (the zoo's blocks, normflows ``Residual``, FrEIA ``IResNetLayer``): ``c >= Lip(g)`` is
   certified from ``g``'s layers as they act in eval (:func:`net_bound`), and
   ``Lip(f) <= min(1 + c, chain bound of x + g(x))``, ``Lip(f^-1) <= 1 / (1 - c)`` (no inverse
   bound when ``c >= 1``: the fixed-point inverse is then not guaranteed to converge). The
   library's own estimate of ``Lip(g)`` (power iteration, a lower bound of each layer's norm)
   is kept beside it.
2. the block's own ``lipschitz_bounds(self) -> tuple[float, float] | None`` hook, used as is
   (``None``: no global bound exists);
3. a rule in :data:`RULES`, keyed by block type and registered by the module that defines the
   type (:mod:`innaudit.zoo.bounds` for the zoo's blocks).

``Lip(t)`` of a net (:func:`net_bound`) is the smaller of the product of its layers' certified
norms (:mod:`innaudit.linalg.operators`: SVD, Gram iteration with the layer's real padding,
stride and dilation) times the activations' largest slopes, and the chain bound of its layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from innaudit.core.bound_kind import BoundKind
from innaudit.linalg.chain import Stage, chain_bound, net_stages, skip_stages
from innaudit.linalg.operators import conv_operator_norm, layer_norm

__all__ = [
    "CHAINS",
    "RULES",
    "BlockBound",
    "LayerNorm",
    "NetBound",
    "ResidualBranch",
    "block_bound",
    "block_mirrored",
    "block_stages",
    "conv_operator_norm",
    "flat_layers",
    "net_bound",
    "net_lipschitz",
    "register_chain",
    "register_mirrored",
    "register_net",
    "register_residual",
    "register_rule",
    "residual_branch",
]


@dataclass(frozen=True)
class LayerNorm:
    """One layer's certified norm: ``name`` (``index:Type``), ``norm``, ``how``."""

    name: str
    norm: float
    how: str


@dataclass(frozen=True)
class NetBound:
    """A certified ``Lip(t)`` of a feed-forward net.

    Attributes:
        bound: the smaller of ``product`` and ``chain``.
        product: the product of the layers' certified norms and activation slopes.
        chain: the chain bound (None when the net is too large for dense matrices).
        layers: each layer's certified norm, in order.
    """

    bound: float
    product: float
    chain: float | None
    layers: tuple[LayerNorm, ...]

    def describe(self) -> str:
        """One line: which bound won, from what."""
        linear = [la for la in self.layers if "slope" not in la.how]
        worst = max(linear, key=lambda la: la.norm, default=None)
        text = f"product {self.product:.4g}"
        if self.chain is not None:
            text += f", chain {self.chain:.4g}"
        if worst is not None:
            text += f"; largest layer {worst.name} {worst.norm:.4g} ({worst.how})"
        return text


@dataclass(frozen=True)
class BlockBound:
    """Bounds of one block: ``forward``/``inverse`` are None when no global bound exists.

    Attributes:
        name: the block's name (index and type).
        forward: bound on ``Lip(f)``.
        inverse: bound on ``Lip(f^-1)``.
        how: one line saying where the numbers come from, or why there are none.
        kind: the rule that bounded it (:class:`~innaudit.core.bound_kind.BoundKind`), which
            the diagnosis reads.
        lip_g: residual blocks: the certified ``Lip(g)``.
        lip_g_estimate: residual blocks: the library's own estimate of ``Lip(g)`` (None when
            it keeps none).
        estimate_how: where that estimate comes from.
        layers: the certified norms of the block's layers (residual branch, coupling net).
        empirical: for a block without a global bound, why any certificate is empirical
            (unbounded scale); the audit then measures its log-scale range.
    """

    name: str
    forward: float | None
    inverse: float | None
    how: str
    kind: BoundKind = BoundKind.UNKNOWN
    lip_g: float | None = None
    lip_g_estimate: float | None = None
    estimate_how: str = ""
    layers: tuple[LayerNorm, ...] = field(default=())
    empirical: str = ""

    @property
    def worst_layer(self) -> LayerNorm | None:
        """The linear layer with the largest certified norm."""
        linear = [la for la in self.layers if "slope" not in la.how]
        return max(linear, key=lambda la: la.norm, default=None)


NETS: dict[type[nn.Module], Callable[[Any], list[nn.Module]]] = {}
"""How to list the layers of a network type in order (the zoo registers its MLP and conv nets)."""


def register_net(kind: type[nn.Module], layers: Callable[[Any], list[nn.Module]]) -> None:
    """Register how to list the layers of networks of type ``kind``, in order."""
    NETS[kind] = layers


def flat_layers(net: nn.Module) -> list[nn.Module]:
    """The layers of ``net`` in order: a registered net type, an ``nn.Sequential`` (nested
    ones flattened), or the module itself."""
    for kind, unpack in NETS.items():
        if isinstance(net, kind):
            return [la for sub in unpack(net) for la in flat_layers(sub)]
    if isinstance(net, nn.Sequential):
        return [la for sub in net for la in flat_layers(sub)]
    return [net]


def _probe(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    p = next(iter(layer.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else "cpu"
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, *in_shape, dtype=dtype, device=device)).shape[1:])


def net_bound(net: nn.Module | Sequence[nn.Module], in_shape: tuple[int, ...]) -> NetBound | None:
    """A certified ``Lip`` of a feed-forward net (a module or its layers in order) on inputs
    of ``in_shape``; None when a layer is of unknown type."""
    layers = [la for m in net for la in flat_layers(m)] if isinstance(net, Sequence) else flat_layers(net)
    norms: list[LayerNorm] = []
    shape = tuple(int(s) for s in in_shape)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Flatten):
            shape = _probe(layer, shape)
            continue
        found = layer_norm(layer, shape)
        if found is None:
            return None
        norms.append(LayerNorm(f"{i}:{type(layer).__name__}", found[0], found[1]))
        shape = _probe(layer, shape)
    product = math.prod(la.norm for la in norms)
    stages = net_stages(layers, in_shape)
    chain = chain_bound(stages) if stages else None
    best = min(product, chain) if chain is not None else product
    return NetBound(best, product, chain, tuple(norms))


def net_lipschitz(net: nn.Module, in_shape: tuple[int, ...]) -> float | None:
    """``Lip(t)`` of a feed-forward net (:func:`net_bound`), or None if a layer is unknown."""
    found = net_bound(net, in_shape)
    return found.bound if found is not None else None


@dataclass(frozen=True)
class ResidualBranch:
    """The branch ``g`` of a residual block ``y = x + g(x)`` as it acts in eval.

    Attributes:
        layers: ``g``'s layers in order as plain modules (``nn.Linear`` / ``nn.Conv2d`` with the
            effective, normalized weights; activations with known slope ranges).
        estimate: the library's own estimate of ``Lip(g)`` (None when it keeps none).
        estimate_how: where that estimate comes from.
        inverted: the block's forward (data to latent) is the fixed point, its inverse
            ``x + g(x)`` (normflows ``Residual(reverse=False)``): the two bounds swap.
    """

    layers: tuple[nn.Module, ...]
    estimate: float | None = None
    estimate_how: str = ""
    inverted: bool = False


RESIDUALS: list[tuple[Callable[[nn.Module], bool], Callable[[Any, tuple[int, ...]], ResidualBranch]]] = []
"""``(matches(block), describe(block, in_shape))`` pairs for residual block types."""


def register_residual(
    matches: Callable[[nn.Module], bool], describe: Callable[[Any, tuple[int, ...]], ResidualBranch]
) -> None:
    """Declare that blocks for which ``matches(block)`` holds are ``x + g(x)`` with ``g`` as
    ``describe(block, in_shape)`` gives it."""
    RESIDUALS.append((matches, describe))


def residual_branch(block: nn.Module, in_shape: tuple[int, ...]) -> ResidualBranch | None:
    """The residual branch of ``block`` when a registered rule recognizes it."""
    for matches, describe in RESIDUALS:
        if matches(block):
            return describe(block, in_shape)
    return None


def _residual_bound(block: nn.Module, branch: ResidualBranch, in_shape: tuple[int, ...], name: str) -> BlockBound:
    g = net_bound(branch.layers, in_shape)
    if g is None:
        return BlockBound(name, None, None, "residual branch has a layer without a known norm", kind=BoundKind.RESIDUAL)
    c = g.bound
    forward = 1.0 + c
    stages = net_stages(branch.layers, in_shape)
    if stages:
        chained = chain_bound(skip_stages(stages, math.prod(in_shape)))
        forward = min(forward, chained) if chained is not None else forward
    inverse = 1.0 / (1.0 - c) if c < 1.0 else None
    how = f"residual block, Lip(g) <= {c:.4g} ({g.describe()})"
    if inverse is None:
        how += ": not a contraction, the fixed-point inverse is not guaranteed to converge"
    if branch.inverted:
        how += "; the block's forward is the fixed point"
        return BlockBound(
            name, inverse, forward, how, BoundKind.RESIDUAL, c, branch.estimate, branch.estimate_how, g.layers
        )
    return BlockBound(
        name, forward, inverse, how, BoundKind.RESIDUAL, c, branch.estimate, branch.estimate_how, g.layers
    )


RULES: dict[type[nn.Module], Callable[[nn.Module, tuple[int, ...]], BlockBound]] = {}
"""Bounds of block types without a ``lipschitz_bounds`` method, registered by the modules that
define those types (the zoo registers its coupling, ActNorm, 1x1 conv and permutation rules)."""


def register_rule(kind: type[nn.Module], rule: Callable[[Any, tuple[int, ...]], BlockBound]) -> None:
    """Register the bound of blocks of type ``kind``: ``rule(block, in_shape) -> BlockBound``."""
    RULES[kind] = rule


MATCHED_RULES: list[tuple[Callable[[nn.Module], bool], Callable[[Any, tuple[int, ...]], BlockBound]]] = []
"""``(matches(block), rule)`` pairs: the bounds of library block types, recognized by a test
rather than a class (the library need not be importable here)."""


def register_matched_rule(
    matches: Callable[[nn.Module], bool], rule: Callable[[Any, tuple[int, ...]], BlockBound]
) -> None:
    """Register the bound of blocks for which ``matches(block)`` holds (after the typed rules)."""
    MATCHED_RULES.append((matches, rule))


def block_bound(block: nn.Module, in_shape: tuple[int, ...], name: str = "") -> BlockBound:
    """Bounds of ``block`` on inputs of shape ``in_shape`` (no batch dimension)."""
    name = name or type(block).__name__
    branch = residual_branch(block, in_shape)
    if branch is not None:
        return _residual_bound(block, branch, in_shape, name)
    hook = getattr(block, "lipschitz_bounds", None)
    if callable(hook):
        pair = hook()
        if pair is None:
            return BlockBound(name, None, None, f"{type(block).__name__}.lipschitz_bounds(): none", kind=BoundKind.HOOK)
        return BlockBound(
            name, float(pair[0]), float(pair[1]), f"{type(block).__name__}.lipschitz_bounds()", kind=BoundKind.HOOK
        )
    found = [rule for kind, rule in RULES.items() if isinstance(block, kind)]
    found += [rule for matches, rule in MATCHED_RULES if matches(block)]
    if found:
        return dataclasses.replace(found[0](block, in_shape), name=name)
    return BlockBound(
        name, None, None, f"no Lipschitz rule for block type {type(block).__name__}", kind=BoundKind.UNKNOWN
    )


CHAINS: dict[type[nn.Module], Callable[[Any, tuple[int, ...], bool], list[Stage] | None]] = {}
"""How a block type is a chain (:mod:`.chain`) forward (``inverse=False``) or inverse."""


def register_chain(kind: type[nn.Module], stages: Callable[[Any, tuple[int, ...], bool], list[Stage] | None]) -> None:
    """Register ``stages(block, in_shape, inverse) -> list[Stage] | None`` for blocks of ``kind``."""
    CHAINS[kind] = stages


def block_stages(block: nn.Module, in_shape: tuple[int, ...], inverse: bool) -> list[Stage] | None:
    """The block's map (or its inverse) as a chain, or None when it is not one (or too large):
    residual blocks forward (their inverse iterates), and registered block types. ``in_shape``
    is the shape of the block's *forward* input in both directions."""
    branch = residual_branch(block, in_shape)
    if branch is not None:
        if inverse != branch.inverted:
            return None
        stages = net_stages(branch.layers, in_shape)
        return skip_stages(stages, math.prod(in_shape)) if stages else None
    for kind, rule in CHAINS.items():
        if isinstance(block, kind):
            return rule(block, in_shape, inverse)
    return None


MIRRORED: set[type[nn.Module]] = set()
"""Block types whose inverse chain evaluates the same activations at the same points as their
forward chain, in the same order (a coupling's ``t(x_1)``, with ``y_1 = x_1``)."""


def register_mirrored(kind: type[nn.Module]) -> None:
    """Declare that the inverse chain of blocks of ``kind`` (:func:`register_chain`) passes the
    same pre-activations through the same activations, in order, as the forward chain: a slope
    range found for the forward holds for the inverse."""
    MIRRORED.add(kind)


def block_mirrored(block: nn.Module) -> bool:
    """Whether ``block``'s inverse chain sees its forward chain's pre-activations."""
    return any(isinstance(block, kind) for kind in MIRRORED)
