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

The hook, for a user's block (an ``nn.Module`` whose ``forward`` maps data to latent)::

    class MyBlock(nn.Module):
        def solve_inverse(self, z, *, tolerance=None, max_iter=None):
            ...  # the block's own solver, with its own settings unless overridden
            return x, Solve(iterations, converged, max_iter, tolerance, "fixed-point")

Blocks of libraries that cannot carry the method (normflows ``Residual``, FrEIA
``IResNetLayer``, zuko's monotonic transforms) get a solver object from a factory registered
with :func:`register_solver`; :func:`solver_for` finds either. A solver whose iterating
direction is the block's *forward* (a normflows ``Residual`` built with ``reverse=False``)
says so with ``solves = "forward"``: ``solve_inverse`` then maps data to latent, and the audit
checks it with the block's inverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from torch import Tensor, nn

__all__ = [
    "SOLVERS",
    "IterativeInverse",
    "Solve",
    "register_solver",
    "solved_direction",
    "solver_for",
    "solves_iteratively",
]


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


SolverFactory = Callable[[nn.Module], "IterativeInverse | None"]

SOLVERS: list[SolverFactory] = []
"""Factories that give a library block its solver (None: not one of theirs), in registration
order (the library adapters register theirs)."""


def register_solver(factory: SolverFactory) -> None:
    """Register ``factory(module) -> IterativeInverse | None`` for blocks that cannot carry
    ``solve_inverse`` themselves."""
    SOLVERS.append(factory)


def solver_for(module: nn.Module) -> IterativeInverse | None:
    """The iterative solver of a block: the module itself when it implements
    :class:`IterativeInverse`, else the first registered factory's, else None."""
    if solves_iteratively(module):
        return cast(IterativeInverse, module)  # a runtime-checked protocol
    for factory in SOLVERS:
        found = factory(module)
        if found is not None:
            return found
    return None


def solved_direction(solver: object) -> str:
    """``"inverse"`` (latent to data, the default) or ``"forward"``: which of the block's maps
    the solver computes."""
    direction = getattr(solver, "solves", "inverse")
    if direction not in ("inverse", "forward"):
        raise ValueError(f"a solver's solves is {direction!r}; expected inverse or forward")
    return str(direction)
