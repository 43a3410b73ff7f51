"""Token-by-token traces of autoregressive blocks, for the ``tokens`` audit.

A batch is pushed through the model's blocks; then the inverse chain runs from ``z`` back to
the first autoregressive block's input. At every block that implements
:class:`~innaudit.model.autoregressive.AutoregressiveBlock` the trace records, per sample and
per token (in the block's own order, where the errors accumulate): the accumulated error of
the chain, the gap between the masked and the cached path, the log-scales of the masked pass,
optionally the block's own round trip on its exact input (riding along in the chain's inverse
call, as one batch of twice the size) and, for a Jacobi block, its solve against the
sequential inverse. Besides the model's own forward and inverse, that is one masked pass per
block.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from innaudit.model.autoregressive import AutoregressiveBlock, is_autoregressive
from innaudit.model.contract import InvertibleModel
from innaudit.model.iterative import IterativeInverse, solves_iteratively

__all__ = [
    "JacobiTrace",
    "LogScales",
    "SampleTrace",
    "TokenTrace",
    "token_blocks",
    "token_errors",
    "trace_batch",
    "trace_samples",
]


@dataclass(frozen=True)
class LogScales:
    """Summary of the masked pass's log-scales ``a`` of one block over the traced elements.

    ``peak`` is ``max_d |a_{t,d}|`` per sample and token ``(n, T)`` (block order)."""

    low: float
    high: float
    total: float
    squares: float
    count: int
    above_5: int
    above_10: int
    peak: np.ndarray

    @staticmethod
    def of(a: Tensor) -> LogScales:
        a = a.detach().double()
        finite = a[torch.isfinite(a)]
        mag = a.abs().nan_to_num(nan=math.inf)
        return LogScales(
            float(finite.min()) if finite.numel() else math.nan,
            float(finite.max()) if finite.numel() else math.nan,
            float(finite.sum()),
            float(finite.pow(2).sum()),
            int(a.numel()),
            int((mag > 5).sum()),
            int((mag > 10).sum()),
            mag.amax(-1).cpu().numpy(),
        )

    def merge(self, other: LogScales) -> LogScales:
        return LogScales(
            float(np.fmin(self.low, other.low)),
            float(np.fmax(self.high, other.high)),
            self.total + other.total,
            self.squares + other.squares,
            self.count + other.count,
            self.above_5 + other.above_5,
            self.above_10 + other.above_10,
            np.concatenate([self.peak, other.peak]),
        )


@dataclass(frozen=True)
class JacobiTrace:
    """A Jacobi block's solves of its exact outputs, per sample: iterations used, whether the
    stop criterion was met within the cap, the residual ``||f(x_J) - z|| / ||z||`` measured
    with the block's forward, and the per-token error of the Jacobi solution against the
    sequential inverse ``(n, T)``."""

    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    agreement: np.ndarray
    max_iter: int
    tolerance: float


@dataclass(frozen=True)
class TokenTrace:
    """One autoregressive block on the traced samples; ``(n, T)`` arrays in block order.

    Attributes:
        index: the block's position in ``model.blocks()``; name: its report name.
        order: sequence position of the token handled at each step ``(T,)``.
        chain: relative error of the inverse chain from ``z`` at this block's input (after its
            inverse), against the forward activation: the error accumulated up to here.
        own: relative error of this block's inverse applied to its exact output (None unless
            asked for: it costs an inverse pass).
        path: the masked pass applied to the chain's inverse output, ``(g_{k-1} - b) exp(-a)``
            with ``(a, b)`` of the masked pass on ``g_{k-1}``, against the latent ``g_k`` it
            was inverted from, token by token.
        scales: the masked pass's log-scales on the chain's inverse output.
        jacobi: the Jacobi solves, for a block whose inverse iterates.
    """

    index: int
    name: str
    order: np.ndarray
    chain: np.ndarray
    own: np.ndarray | None
    path: np.ndarray
    scales: LogScales
    jacobi: JacobiTrace | None = None


@dataclass(frozen=True)
class SampleTrace:
    """The sample side of the precision lane: the per-token departure ``(n, T)`` of the inverse
    chain's output (the sample's tokens, in the first autoregressive block's order) run under
    autocast, from the float32 run and from the float64 run, and of float32 from float64."""

    low_vs_32: np.ndarray
    low_vs_64: np.ndarray | None
    f32_vs_64: np.ndarray | None
    notes: tuple[str, ...] = field(default=())


def token_blocks(model: InvertibleModel) -> list[int]:
    """Indices into ``model.blocks()`` of the blocks that declare their token structure."""
    return [i for i, b in enumerate(model.blocks()) if is_autoregressive(b.module)]


def token_errors(got: Tensor, want: Tensor) -> np.ndarray:
    """``||got_t - want_t|| / max(||want_t||, ||want|| / sqrt(T))`` per sample and token of
    ``(B, T, D)`` tensors (a token near zero is measured against the sample's RMS token norm);
    inf where ``got_t`` is not finite."""
    got64, want64 = got.detach().double(), want.detach().double()
    tokens = want64.shape[1]
    scale = want64.flatten(1).norm(dim=1) / math.sqrt(tokens)
    den = torch.maximum(want64.norm(dim=-1), scale[:, None]).clamp_min(1e-30)
    err = (got64 - want64).norm(dim=-1) / den
    bad = ~torch.isfinite(got64).all(-1) | ~torch.isfinite(err)
    return torch.where(bad, torch.full_like(err, math.inf), err).cpu().numpy()


@contextlib.contextmanager
def _module_mode(block: InvertibleModel) -> Iterator[Any]:
    """The block's module in eval mode without autograd (its mode restored afterwards)."""
    module = block.module
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


def _params(block: InvertibleModel, h: Tensor) -> tuple[Tensor, Tensor]:
    """The masked pass's ``(a, b)`` on ``h``, in block order."""
    with _module_mode(block) as module:
        return cast(AutoregressiveBlock, module).affine_params(h.clone())


def _jacobi(block: InvertibleModel, y: Tensor, order: Tensor) -> tuple[JacobiTrace, Tensor]:
    """Solve ``f(x) = y`` by the block's own Jacobi settings and by the sequential pass."""
    with _module_mode(block) as module:
        solver = cast(IterativeInverse, module)
        x_j, solve = solver.solve_inverse(y.clone())
        x_s = cast(AutoregressiveBlock, module).sequential_inverse(y.clone())
    back = block.forward(x_j)
    den = y.detach().double().flatten(1).norm(dim=1).clamp_min(1e-30)
    residual = (back.double() - y.double()).flatten(1).norm(dim=1) / den
    residual = torch.where(torch.isfinite(residual), residual, torch.full_like(residual, math.inf))
    trace = JacobiTrace(
        solve.iterations.cpu().numpy().astype(np.int64),
        solve.converged.cpu().numpy().astype(bool),
        residual.cpu().numpy(),
        token_errors(x_j, x_s)[:, order.cpu().numpy()],
        int(solve.max_iter),
        float(solve.tolerance),
    )
    return trace, x_j


def trace_batch(
    model: InvertibleModel, x: Tensor, *, isolate: bool = False, jacobi: bool = True
) -> tuple[list[TokenTrace], Tensor, Tensor]:
    """Trace one batch (see the module docstring).

    One forward pass, then the inverse chain from ``z``; at each autoregressive block one call
    of ``affine_params`` on the chain's inverse output gives the masked path's ``(a, b)``: the
    log-scales, and the path gap ``(g_{k-1} - b) exp(-a)`` against ``g_k``. With ``isolate``
    the block's own round trip rides along in the chain's inverse call (twice the batch).

    Returns:
        the traces of the autoregressive blocks in forward order, the latent ``z`` and the
        chain's output at the first autoregressive block's input (the float32 sample tokens).
    """
    blocks = model.blocks()
    wanted = token_blocks(model)
    inputs: list[Tensor] = []
    h = x
    with torch.no_grad():
        for block in blocks:
            inputs.append(h)
            h = block.forward(h)
    z, g = h, h
    traces: list[TokenTrace] = []
    for i in range(len(blocks) - 1, wanted[0] - 1, -1):
        block, out = blocks[i], inputs[i + 1] if i + 1 < len(blocks) else z
        if i not in wanted:
            g = block.inverse(g)
            continue
        order = cast(AutoregressiveBlock, block.module).token_order().to(g.device)
        solved: JacobiTrace | None = None
        own: np.ndarray | None = None
        if jacobi and solves_iteratively(block.module):
            solved, own_back = _jacobi(block, out, order)
            back = block.inverse(g)
            own = token_errors(own_back, inputs[i])[:, order.cpu().numpy()] if isolate else None
        elif isolate:
            both = block.inverse(torch.cat([g, out]))
            back = both[: len(g)]
            own = token_errors(both[len(g) :], inputs[i])[:, order.cpu().numpy()]
        else:
            back = block.inverse(g)
        a, b = _params(block, back)
        rebuilt = (_wide(back[:, order]) - b) * torch.exp(-a)
        name = f"{i}:{block.info.architecture or type(block.module).__name__}"
        index = order.cpu().numpy()
        chain = token_errors(back, inputs[i])[:, index]
        path = token_errors(rebuilt, g[:, order])
        traces.append(TokenTrace(i, name, index, chain, own, path, LogScales.of(a), solved))
        g = back
    return traces[::-1], z, g


def _wide(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def trace_samples(
    model: InvertibleModel,
    wide: InvertibleModel | None,
    z: Tensor,
    f32: Tensor,
    lane: Callable[[], contextlib.AbstractContextManager[Any]],
    order: np.ndarray,
) -> SampleTrace:
    """The inverse chain from ``z`` to the first autoregressive block's input run under
    ``lane()`` (autocast) and, when ``wide`` is given, in float64; their per-token departures
    (block order) from the float32 chain output ``f32`` and from float64. A float64 run that
    raises gives a note instead of its numbers."""
    first = token_blocks(model)[0]
    low = _chain(model.blocks(), first, z, lane)
    notes: list[str] = []
    f64: Tensor | None = None
    if wide is not None:
        try:
            f64 = _chain(wide.blocks(), first, z.double(), contextlib.nullcontext)
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
            notes.append(f"float64 reference not computed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return SampleTrace(
        token_errors(low, f32)[:, order],
        token_errors(low, f64)[:, order] if f64 is not None else None,
        token_errors(f32, f64)[:, order] if f64 is not None else None,
        tuple(notes),
    )


def _chain(
    blocks: Sequence[InvertibleModel],
    first: int,
    z: Tensor,
    context: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Tensor:
    g = z
    with context():
        for i in range(len(blocks) - 1, first - 1, -1):
            g = blocks[i].inverse(g)
    return g.float() if g.dtype not in (torch.float32, torch.float64) else g
