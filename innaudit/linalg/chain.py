"""Lipschitz bounds of chains of linear maps and element-wise activations, tighter than products.

A feed-forward net, a residual block ``x + g(x)``, an additive coupling ``x2 + t(x1)``, and a
whole flow built of them are all *chains* ``f = M_K o s_K o ... o s_1 o M_0``: affine maps
(linear part ``M_i``, dense) between element-wise activations ``s_i`` whose slopes lie in
``[low, high]`` per coordinate (a skip connection carries its coordinates through an activation
stage with slope exactly 1). At every point the Jacobian is ``M_K D_K ... D_1 M_0`` with
``D_i = A_i + B_i R_i``, ``A_i = diag((low + high) / 2)``, ``B_i = diag((high - low) / 2)`` and
``R_i`` diagonal with entries in ``[-1, 1]``. Expanding the product over the ``2^K`` choices and
splitting ``B_i R_i = B_i^(1/2) R_i B_i^(1/2)``:

    Lip(f) <= sum over cut sets 0 < c_1 < ... < c_m <= K of  prod_t || S_(c_t+1) P(c_t, c_(t+1)) S_(c_t) ||

where ``P(i, j) = M_(j-1) A_(j-1) ... A_(i+1) M_i`` is the chain between two cuts with the
activations replaced by their mean slopes and ``S = B^(1/2)``. This is the bound of Combettes and
Pesquet for averaged activations ("Lipschitz Certificates for Layered Network Structures Driven
by Averaged Activation Operators", SIAM J. Math. Data Sci. 2020,
https://arxiv.org/abs/1903.01014) generalized to any slope interval; the empty cut set is the
norm of the mean-slope chain, the full one the product bound divided by ``2^K`` (for ReLU). It
is never above the product of the layers' norms times the activations' largest slopes, and it is
computed exactly by dynamic programming over the ``(K + 1)(K + 2) / 2`` segments (``V(j) = sum_{i
< j} V(i) ||segment(i, j)||``), each norm by SVD or its Gram bound (:mod:`.gram`). It needs the
chain's matrices dense, so it serves chains of a few thousand coordinates at most; a run of affine
stages that passes through fewer coordinates than it has on either side (the state between two
blocks of a flow, narrower than the blocks' hidden states) is kept as its two factors, and every
norm through it is that of an ``r x r`` core (QR of each factor), so a whole flow costs little
more than its blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from innaudit.linalg.gram import GRAM_STEPS, matrix_norm_bound
from innaudit.linalg.operators import dense_matrix, slope_range

__all__ = [
    "CHAIN_MAX_DIM",
    "Affine",
    "ChainParts",
    "Slopes",
    "Stage",
    "chain_bound",
    "chain_limit",
    "chain_parts",
    "chain_width",
    "compose",
    "net_stages",
    "skip_stages",
    "stage_dims",
]


@dataclass(frozen=True)
class Affine:
    """An affine stage ``x -> M x + offset``: ``matrix`` a float64 ``(out, in)`` matrix, ``offset``
    its float64 ``(out,)`` constant (None: zero). Bounds read only the matrix; evaluating the
    chain (:mod:`.intervals`) reads both."""

    matrix: Tensor
    offset: Tensor | None = None


@dataclass(frozen=True)
class Slopes:
    """An element-wise stage whose derivative in coordinate ``i`` lies in ``[low_i, high_i]``.

    ``act`` is the activation it applies (None: unknown, the chain cannot be evaluated) to every
    coordinate from ``carry`` on; the first ``carry`` coordinates pass unchanged (a skip
    connection), their slopes exactly 1.
    """

    low: Tensor
    high: Tensor
    act: nn.Module | None = None
    carry: int = 0

    @staticmethod
    def uniform(dim: int, low: float, high: float, act: nn.Module | None = None) -> Slopes:
        """The same slope range on ``dim`` coordinates."""
        return Slopes(
            torch.full((dim,), float(low), dtype=torch.float64),
            torch.full((dim,), float(high), dtype=torch.float64),
            act,
        )


Stage = Affine | Slopes


def stage_dims(stage: Stage) -> tuple[int, int]:
    """``(out, in)`` dimensions of a stage."""
    if isinstance(stage, Affine):
        return int(stage.matrix.shape[0]), int(stage.matrix.shape[1])
    return int(stage.low.numel()), int(stage.low.numel())


@dataclass(frozen=True)
class _Factored:
    """The matrix ``left @ right`` kept as its two factors: a run of affine stages that passes
    through ``r`` coordinates, fewer than it has on either side (the state between two blocks of
    a flow), so every product and norm through it costs ``r`` times its sides, not their square."""

    left: Tensor
    right: Tensor


_Matrix = Tensor | _Factored


def _run_product(run: Sequence[Tensor]) -> _Matrix:
    """The product of a run of affine stages (in order), factored at its narrowest state."""
    if len(run) == 1:
        return run[0]
    widths = [int(run[0].shape[1])] + [int(m.shape[0]) for m in run]
    cut = min(range(len(widths)), key=lambda t: widths[t])
    right = torch.eye(widths[0], dtype=torch.float64)
    for m in run[:cut]:
        right = m @ right
    left = torch.eye(widths[cut], dtype=torch.float64)
    for m in run[cut:]:
        left = m @ left
    if widths[cut] < min(widths[0], widths[-1]):
        return _Factored(left, right)
    return left @ right


def _alternate(stages: Sequence[Stage]) -> tuple[list[_Matrix], list[Slopes]]:
    """``M_0, s_1, M_1, ..., s_K, M_K``: adjacent affine stages multiplied (factored where they
    pass through a narrow state), identities put between adjacent activations and at the ends."""
    if not stages:
        raise ValueError("an empty chain has no Lipschitz bound to compute")
    mats: list[_Matrix] = []
    acts: list[Slopes] = []
    run: list[Tensor] = []
    for stage in stages:
        if isinstance(stage, Affine):
            run.append(stage.matrix.to(torch.float64))
            continue
        dim = stage.low.numel()
        mats.append(_run_product(run) if run else torch.eye(dim, dtype=torch.float64))
        acts.append(stage)
        run = []
    last = acts[-1].low.numel() if acts else 0
    mats.append(_run_product(run) if run else torch.eye(last, dtype=torch.float64))
    return mats, acts


def _dense(m: _Matrix) -> Tensor:
    return m.left @ m.right if isinstance(m, _Factored) else m


def _shape(m: _Matrix) -> tuple[int, int]:
    if isinstance(m, _Factored):
        return int(m.left.shape[0]), int(m.right.shape[1])
    return int(m.shape[0]), int(m.shape[1])


def _rows(m: _Matrix, scale: Tensor, rows: Tensor) -> _Matrix:
    """``diag(scale) m`` restricted to ``rows``."""
    if isinstance(m, _Factored):
        return _Factored(scale[rows, None] * m.left[rows], m.right)
    return scale[rows, None] * m[rows]


def _columns(m: _Matrix, scale: Tensor, columns: Tensor) -> _Matrix:
    """``m diag(scale)`` restricted to ``columns``."""
    if isinstance(m, _Factored):
        return _Factored(m.left, m.right[:, columns] * scale[columns])
    return m[:, columns] * scale[columns]


def _times(m: _Matrix, center: Tensor, p: _Matrix) -> _Matrix:
    """``m diag(center) p``, factored when either side is."""
    if isinstance(m, _Factored):
        return _Factored(m.left, _dense(_times(m.right, center, p)))
    if isinstance(p, _Factored):
        return _Factored(m @ (center[:, None] * p.left), p.right)
    return m @ (center[:, None] * p)


def _norm(m: _Matrix, steps: int) -> float:
    """A certified ``||m||_2``; of a factored ``L R`` the norm of ``R_L R_R^T`` from the QR
    factorizations ``L = Q_L R_L`` and ``R^T = Q_R R_R`` (the ``Q`` have orthonormal columns)."""
    if isinstance(m, _Factored):
        n, r, k = int(m.left.shape[0]), int(m.left.shape[1]), int(m.right.shape[1])
        if r >= min(n, k):
            return matrix_norm_bound(_dense(m), steps)[0]
        core = torch.linalg.qr(m.left, mode="r").R @ torch.linalg.qr(m.right.mT, mode="r").R.mT
        return matrix_norm_bound(core, steps)[0]
    return matrix_norm_bound(m, steps)[0]


CHAIN_MAX_DIM = 512
"""By default a chain is bounded only when none of its states has more coordinates than this: the
dynamic program takes ``O(K^2)`` dense products and norms of that size (:func:`chain_limit`)."""

_LIMIT = [CHAIN_MAX_DIM]


@contextlib.contextmanager
def chain_limit(max_dim: int) -> Iterator[None]:
    """Within the block, chains up to ``max_dim`` coordinates wide are bounded."""
    before = _LIMIT[0]
    _LIMIT[0] = int(max_dim)
    try:
        yield
    finally:
        _LIMIT[0] = before


def chain_width(stages: Sequence[Stage]) -> int:
    """The most coordinates any state of the chain has."""
    return max((max(stage_dims(s)) for s in stages), default=0)


@dataclass(frozen=True)
class ChainParts:
    """The chain bound and its empty cut set.

    Attributes:
        bound: the certified bound on ``Lip`` of the chain (the sum over all cut sets).
        mid_norm: the empty cut set's term, the certified norm of the mean-slope chain
            ``J_mid = M_K A_K ... A_1 M_0``; ``bound - mid_norm`` bounds ``||J(x) - J_mid||`` at
            every point whose slopes lie in the ranges.
        mid: ``J_mid`` itself, dense float64.
    """

    bound: float
    mid_norm: float
    mid: Tensor


def chain_parts(stages: Sequence[Stage], steps: int = GRAM_STEPS) -> ChainParts | None:
    """The chain bound (module docstring) with its empty cut set kept apart, in float64; None
    when a state of the chain is wider than the current limit (:func:`chain_limit`,
    :data:`CHAIN_MAX_DIM`). Where the chain passes through a narrow state (between the blocks of
    a flow) its segments are kept factored, so a whole flow costs little more than its blocks."""
    if not stages or chain_width(stages) > _LIMIT[0]:
        return None
    mats, acts = _alternate(stages)
    k = len(acts)
    centers = [((a.low + a.high) / 2).to(torch.float64) for a in acts]
    roots = [((a.high - a.low) / 2).clamp_min(0).sqrt().to(torch.float64) for a in acts]
    keep = [torch.nonzero(r > 0).flatten() for r in roots]
    value = [0.0] * (k + 2)
    value[0] = 1.0
    mid_norm, mid = 0.0, torch.zeros(0, 0, dtype=torch.float64)
    for i in range(k + 1):
        if value[i] == 0.0:
            continue
        p = mats[0] if i == 0 else _columns(mats[i], roots[i - 1], keep[i - 1])
        for j in range(i + 1, k + 2):
            if 0 in _shape(p):
                break
            if j == k + 1:
                term = _norm(p, steps)
                value[j] += value[i] * term
                if i == 0:
                    mid_norm, mid = term, _dense(p)
                break
            rows = keep[j - 1]
            if rows.numel():
                value[j] += value[i] * _norm(_rows(p, roots[j - 1], rows), steps)
            p = _times(mats[j], centers[j - 1], p)
    return ChainParts(value[k + 1], mid_norm, mid)


def chain_bound(stages: Sequence[Stage], steps: int = GRAM_STEPS) -> float | None:
    """A certified bound on ``Lip`` of the chain (:func:`chain_parts`), or None when too wide."""
    parts = chain_parts(stages, steps)
    return parts.bound if parts is not None else None


def net_stages(
    layers: Sequence[nn.Module], in_shape: tuple[int, ...], max_entries: int | None = None
) -> list[Stage] | None:
    """The chain of a feed-forward net given as its layers in order (nested ``nn.Sequential``
    flattened; ``nn.Flatten`` only reshapes), on inputs of ``in_shape``; None when a layer is
    neither linear nor an activation with a known slope range, or a matrix would exceed
    ``max_entries`` (:data:`~innaudit.linalg.operators.DENSE_MAX_ENTRIES` by default)."""
    stages: list[Stage] = []
    shape = tuple(int(s) for s in in_shape)
    for layer in layers:
        if isinstance(layer, nn.Sequential):
            inner = net_stages(list(layer), shape, max_entries)
            if inner is None:
                return None
            stages += inner
            shape = _out_shape(layer, shape)
            continue
        if isinstance(layer, nn.Flatten):
            shape = _out_shape(layer, shape)
            continue
        matrix = dense_matrix(layer, shape, max_entries)
        if matrix is not None:
            stages.append(Affine(matrix, _offset(layer, shape)))
            shape = _out_shape(layer, shape)
            continue
        slopes = slope_range(layer)
        if slopes is None:
            return None
        dim = int(torch.Size(shape).numel())
        stages.append(Slopes.uniform(dim, *slopes, act=layer))
    return stages


def _offset(layer: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """A linear layer's constant (its bias, spread over the output positions): ``layer(0)``."""
    p = next(iter(layer.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else "cpu"
    with torch.no_grad():
        return layer(torch.zeros(1, *shape, dtype=dtype, device=device)).reshape(-1).to("cpu", torch.float64)


def _out_shape(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    p = next(iter(layer.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else "cpu"
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, *shape, dtype=dtype, device=device)).shape[1:])


def compose(run: Sequence[Affine]) -> Affine:
    """One affine stage for a run of them applied in order (dense product, offsets carried)."""
    matrix, offset = run[0].matrix.to(torch.float64), _zero_offset(run[0])
    for stage in run[1:]:
        m = stage.matrix.to(torch.float64)
        matrix, offset = m @ matrix, m @ offset + _zero_offset(stage)
    return Affine(matrix, offset)


def _zero_offset(stage: Affine) -> Tensor:
    if stage.offset is None:
        return torch.zeros(int(stage.matrix.shape[0]), dtype=torch.float64)
    return stage.offset.to(torch.float64)


def _runs(stages: Sequence[Stage]) -> tuple[list[Affine], list[Slopes]]:
    """``M_0, s_1, M_1, ..., s_K, M_K`` as dense affine stages with their offsets (identities
    between adjacent activations and at the ends)."""
    runs: list[Affine] = []
    acts: list[Slopes] = []
    run: list[Affine] = []
    dim = stage_dims(stages[0])[1]
    for stage in stages:
        if isinstance(stage, Affine):
            run.append(stage)
            continue
        runs.append(compose(run) if run else Affine(torch.eye(stage.low.numel(), dtype=torch.float64)))
        acts.append(stage)
        run = []
        dim = stage.low.numel()
    runs.append(compose(run) if run else Affine(torch.eye(dim, dtype=torch.float64)))
    return runs, acts


def skip_stages(
    inner: Sequence[Stage], dim: int, select: Tensor | None = None, embed: Tensor | None = None, sign: float = 1.0
) -> list[Stage]:
    """The chain of ``x -> x + sign * E g(P x)`` on ``dim`` coordinates, from the chain of
    ``g``: ``P`` picks the coordinates ``select`` of ``x`` (all when None), ``E`` writes ``g``'s
    output into the coordinates ``embed`` (all when None). Every stage carries ``x`` alongside
    ``g``'s hidden state, through activations with slope exactly 1."""
    eye = torch.eye(dim, dtype=torch.float64)
    pick = eye if select is None else eye[select]
    put = eye if embed is None else eye[:, embed]
    runs, acts = _runs([Affine(pick), *inner, Affine(sign * put)])
    zero = torch.zeros(dim, dtype=torch.float64)
    if not acts:
        return [Affine(eye + runs[0].matrix, runs[0].offset)]
    out: list[Stage] = [Affine(torch.cat([eye, runs[0].matrix], 0), torch.cat([zero, _zero_offset(runs[0])]))]
    ones = torch.ones(dim, dtype=torch.float64)
    for i, act in enumerate(acts):
        low, high = act.low.to(torch.float64), act.high.to(torch.float64)
        out.append(Slopes(torch.cat([ones, low]), torch.cat([ones, high]), act.act if act.carry == 0 else None, dim))
        m = runs[i + 1]
        if i + 1 == len(acts):
            out.append(Affine(torch.cat([eye, m.matrix], 1), _zero_offset(m)))
        else:
            out.append(Affine(torch.block_diag(eye, m.matrix), torch.cat([zero, _zero_offset(m)])))
    return out
