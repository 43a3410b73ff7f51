"""The seam for blocks whose inverse iterates (fixed point, bisection, Jacobi, Newton).

Residual flows invert ``y = x + g(x)`` by the fixed point ``x <- y - g(x)``; monotonic
transforms by bisection; STARFlow-style autoregressive flows by Jacobi sweeps. Libraries stop
such solvers at an iteration cap and return whatever point they reached, often without a
word, so a finite output is no evidence of a converged inverse.

A block declares its solver by implementing :class:`IterativeInverse`: ``solve_inverse``
runs the block's own inverse and says, per sample, how many iterations it used and whether its
stop criterion was met before the cap. The audits measure the residual
``||F(x_hat) - z|| / ||z||`` themselves with the block's forward pass; the solver's own word is
never taken as proof of convergence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["IterativeInverse", "Solve", "solves_iteratively"]


@dataclass(frozen=True)
class Solve:
    """What one iterative inverse of a batch did, per sample.

    Attributes:
        iterations: ``(B,)`` integer tensor, iterations used per sample.
        converged: ``(B,)`` bool tensor, the solver's stop criterion was met before the cap.
        max_iter: the iteration cap the solve ran under.
        tolerance: the stop threshold the solve ran under (in the solver's own units).
        method: the solver's name (``"fixed-point"``, ``"bisection"``, ``"jacobi"``, ...).
    """

    iterations: Tensor
    converged: Tensor
    max_iter: int
    tolerance: float
    method: str


@runtime_checkable
class IterativeInverse(Protocol):
    """A block whose inverse is computed by an iterative solver.

    ``solve_inverse(z)`` must compute the same inverse as the block's ordinary inverse call
    with the block's own settings; ``tolerance`` / ``max_iter``, when given, override them for
    that call only (a tolerance sweep), and leave the block's settings unchanged afterwards.
    """

    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]: ...


def solves_iteratively(block: object) -> bool:
    """Whether ``block`` declares an iterative inverse through :class:`IterativeInverse`."""
    return isinstance(block, IterativeInverse)
