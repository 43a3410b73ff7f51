"""The search behind the ``attack`` audit: the region around data and two ways to search it.

:class:`Ball` is the region of every attacked sample (its dequantized point, an L_inf ball,
clipped to the data range; :func:`attack_ball`). :func:`sign_gradient_attack` is projected
sign-gradient ascent on an objective (Behrmann et al., AISTATS 2021, section 4(b)),
:func:`random_search` the baseline of uniform draws from the same region; both score every
point by its round trip and return an :class:`AttackResult` (best error, first non-finite
point, witness, curve). The audit that runs them is :mod:`innaudit.audits.attack`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from innaudit.core.domain import DataDomain
from innaudit.core.stats import per_sample_norm
from innaudit.model.contract import InvertibleModel

__all__ = [
    "AMPLIFICATION_ETA",
    "CELL_SHARE",
    "OBJECTIVES",
    "AttackResult",
    "Ball",
    "attack_ball",
    "dequantize",
    "random_search",
    "sign_gradient_attack",
]

OBJECTIVES = ("reconstruction", "amplification")
CELL_SHARE = 0.5
"""Data on a quantization level moves up by ``U(0, CELL_SHARE)`` bins before the attack (the
paper's code adds ``U(0, 0.5)`` bins although its comment says "centering")."""
AMPLIFICATION_ETA = 1e-3
"""Latent step of the amplification objective, relative to ``||x||``: ``||z||`` would do for a
flow whose latents are standard normal, but a hole often sits where a few latent elements are
huge (an exploding scale), and a step relative to those would swamp the small ones."""


@dataclass(frozen=True)
class Ball:
    """The search region of each sample: the box ``[low, high]`` = L_inf ball ∩ data range.

    Attributes:
        centre: the attacked points ``x0`` (data moved into their dequantization cell).
        low: elementwise lower bound, ``max(x0 - eps, domain.low)``.
        high: elementwise upper bound, ``min(x0 + eps, domain.high)``.
        epsilon: the L_inf radius.
    """

    centre: Tensor
    low: Tensor
    high: Tensor
    epsilon: float

    def uniform(self, generator: torch.Generator) -> Tensor:
        """A point drawn uniformly from the region of every sample."""
        u = torch.rand(self.centre.shape, generator=generator, dtype=torch.float64)
        u = u.to(device=self.centre.device, dtype=self.centre.dtype)
        return torch.minimum(torch.maximum(self.low + u * (self.high - self.low), self.low), self.high)

    def project(self, x: Tensor) -> Tensor:
        """Clip ``x`` into the region."""
        return torch.minimum(torch.maximum(x, self.low), self.high)


@dataclass
class AttackResult:
    """Per-sample outcome of a search.

    Attributes:
        error: the largest finite round-trip error ``||x' - F^-1(F(x'))||_2`` seen (float64).
        nonfinite: whether a point with a non-finite ``z`` or reconstruction was found.
        witness: the worst point per sample: the first non-finite one, else the largest error.
        reconstruction: ``F^-1(F(witness))``.
        first_step: the evaluation at which the first non-finite point was found (-1: none).
        curve: per evaluation, the running best errors (``(evaluations, samples)``, inf once
            non-finite).
        evaluations: points scored per sample (``steps + 1`` for a search that ran all its
            steps; summed over restarts).
        steps_run: gradient steps the search ran (the fewest over merged searches; -1 for a
            search without steps, the random one).
        cut: per sample, whether a ``stop`` callback (a budget's deadline) ended its search
            while it was still searching (None when none was cut).
    """

    error: Tensor
    nonfinite: Tensor
    witness: Tensor
    reconstruction: Tensor
    first_step: Tensor
    curve: list[Tensor] = field(default_factory=list)
    evaluations: int = 0
    steps_run: int = -1
    cut: Tensor | None = None

    @classmethod
    def start(cls, x: Tensor) -> AttackResult:
        """An empty result for the samples of ``x``."""
        n = len(x)
        return cls(
            torch.zeros(n, dtype=torch.float64, device=x.device),
            torch.zeros(n, dtype=torch.bool, device=x.device),
            x.detach().clone(),
            x.detach().clone(),
            torch.full((n,), -1, dtype=torch.long, device=x.device),
        )

    @property
    def done(self) -> Tensor:
        """Samples whose search has ended (a non-finite point was found)."""
        return self.nonfinite

    def record(self, index: Tensor, x: Tensor, back: Tensor, z_bad: Tensor, step: int) -> None:
        """Fold the round trips ``x -> back`` of the samples ``index`` into the result."""
        err = per_sample_norm(back.detach() - x.detach())
        bad = z_bad | ~torch.isfinite(back.detach().reshape(len(x), -1)).all(1) | ~torch.isfinite(err)
        better = ~bad & (err > self.error[index])
        take = better | bad
        self.error[index] = torch.where(better, err, self.error[index])
        self.witness[index[take]] = x.detach()[take]
        self.reconstruction[index[take]] = back.detach()[take]
        self.first_step[index[bad]] = step
        self.nonfinite[index[bad]] = True

    def snapshot(self) -> None:
        """Append the running best error of every sample (inf once non-finite) to the curve."""
        self.curve.append(torch.where(self.nonfinite, math.inf, self.error).cpu())

    def merge(self, other: AttackResult) -> None:
        """Keep, per sample, the worse of two searches (a restart); curves are concatenated."""
        take = (other.nonfinite & ~self.nonfinite) | (~self.nonfinite & ~other.nonfinite & (other.error > self.error))
        self.error = torch.where(take, other.error, self.error)
        self.witness[take], self.reconstruction[take] = other.witness[take], other.reconstruction[take]
        self.first_step = torch.where(take, other.first_step, self.first_step)
        self.nonfinite = self.nonfinite | other.nonfinite
        self.curve += [
            torch.where(self.nonfinite.cpu(), math.inf, torch.maximum(c, self.error.cpu())) for c in other.curve
        ]
        self.evaluations += other.evaluations
        self.steps_run = min(self.steps_run, other.steps_run)
        self.stop_searching(other.cut)

    def stop_searching(self, rows: Tensor | None) -> None:
        """Mark ``rows`` (a per-sample mask; None: none) as cut by the budget, where still searching."""
        if rows is None:
            return
        cut = rows & ~self.nonfinite
        self.cut = cut if self.cut is None else self.cut | cut


def _rows(x: Tensor) -> Tensor:
    return ~torch.isfinite(x.reshape(len(x), -1)).all(1)


def _unit(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    u = torch.randn(shape, generator=generator, dtype=torch.float64)
    u = u / torch.linalg.vector_norm(u.reshape(len(u), -1), dim=1).clamp_min(1e-30).view(-1, *[1] * (u.dim() - 1))
    return u.to(device=like.device, dtype=like.dtype)


def _objective(
    model: InvertibleModel, x: Tensor, objective: str, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss per sample, z, reconstruction)`` at ``x`` (which requires grad).

    ``reconstruction``: ``||x - F^-1(F(x))||_2``. ``amplification``:
    ``log ||F^-1(F(x) + eta u) - x||_2`` with ``u`` a random unit latent direction and
    ``eta = 1e-3 ||x||``; the plain round trip is then a separate pass without autograd.
    """
    z = model.forward(x, grad=True)
    if objective == "reconstruction":
        back = model.inverse(z, grad=True)
        return per_sample_norm(back - x), z, back
    eta = AMPLIFICATION_ETA * per_sample_norm(x.detach()).clamp_min(1e-12).to(z.dtype)
    moved = model.inverse(z + eta.view(-1, *[1] * (z.dim() - 1)) * _unit(z.shape, generator, z), grad=True)
    with torch.no_grad():
        back = model.inverse(z.detach())
    return torch.log(per_sample_norm(moved - x)), z, back


def _differentiable_objective(
    model: InvertibleModel, x: Tensor, objective: str, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_objective`, or, for a map autograd cannot differentiate (in-place writes into
    its own outputs, say), the same values without a graph: the search then takes the
    fallback steps of :func:`_ascent_direction`, and the round trips are still scored."""
    try:
        return _objective(model, x, objective, generator)
    except RuntimeError:
        with torch.no_grad():
            return _objective(model, x.detach(), objective, generator)


def _gradient(loss: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad of the summed finite losses, per-sample usable, per-sample non-finite)``;
    non-finite entries are zeroed."""
    ok = torch.isfinite(loss)
    grad = torch.zeros_like(x)
    if ok.any() and loss.requires_grad:
        try:
            (got,) = torch.autograd.grad(loss[ok].sum(), x, allow_unused=True)
        except RuntimeError:  # a map autograd cannot differentiate: fallback steps, no crash
            got = None
        if got is not None:
            grad = got.detach()
    finite = torch.isfinite(grad.reshape(len(x), -1)).all(1)
    grad = torch.nan_to_num(grad, 0.0, 0.0, 0.0)
    return grad, ok & finite & (grad.reshape(len(x), -1).abs().sum(1) > 0), ~ok | ~finite


def _ascent_direction(
    loss: Tensor,
    x: Tensor,
    last: Tensor,
    generator: torch.Generator,
    wide: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]] | None = None,
) -> Tensor:
    """``sign(grad loss)`` per sample; where the loss or gradient is unusable, the last step.

    A sample whose float32 loss or gradient is non-finite (a backward pass through ``y / g``
    squares ``g`` and overflows long before the forward pass does) gets its gradient from the
    float64 copy ``wide`` of the model when one is given. Still without a usable gradient, it
    repeats its last usable step (``last``; the loss usually turns non-finite right
    next to a hole, so the way there is the way on), or takes a random sign step when it has
    none. Its best point is kept by the caller, never replaced by this step.
    """
    grad, usable, broken = _gradient(loss, x)
    if wide is not None and broken.any():
        rows = torch.nonzero(broken).flatten()
        grad64, usable64, _ = wide(x.detach()[rows])
        grad[rows] = torch.where(usable64.view(-1, *[1] * (x.dim() - 1)), grad64.to(x.dtype), grad[rows])
        usable[rows] = usable64
    step = grad.sign()
    stuck = ~usable
    if stuck.any():
        noise = torch.randint(0, 2, x.shape, generator=generator).to(device=x.device, dtype=x.dtype) * 2 - 1
        fallback = torch.where((last.reshape(len(x), -1).abs().sum(1) > 0).view(-1, *[1] * (x.dim() - 1)), last, noise)
        step = torch.where(stuck.view(-1, *[1] * (x.dim() - 1)), fallback, step)
    return step


def sign_gradient_attack(
    model: InvertibleModel,
    ball: Ball,
    steps: int,
    step_size: float,
    objective: str,
    generator: torch.Generator,
    on_step: Callable[[int], None] = lambda k: None,
    stop: Callable[[], bool] | None = None,
) -> AttackResult:
    """Projected sign-gradient ascent from a random start in ``ball`` (Behrmann et al. 4(b)).

    ``x_{k+1} = clip_ball(x_k + step_size * sign(grad L(x_k)))`` for ``steps`` steps; every
    iterate (``steps + 1`` points) is round-tripped and scored. A sample whose round trip turns
    non-finite stops there: that point is its witness. ``stop()``, asked after each scored
    point before the next step, ends the search there (a budget's deadline): the result keeps
    the steps it ran (``steps_run``) and marks the samples still searching (``cut``).
    """
    x = ball.project(ball.uniform(generator))
    last = torch.zeros_like(x)
    wide_model: list[InvertibleModel] = []

    def wide(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not wide_model:
            wide_model.append(model.copy_as(torch.float64))
        p = points.double().requires_grad_(True)
        with torch.enable_grad():
            loss64, _, _ = _differentiable_objective(wide_model[0], p, objective, generator)
            return _gradient(loss64, p)

    result = AttackResult.start(x)
    result.steps_run = steps
    for k in range(steps + 1):
        result.evaluations = k + 1
        active = torch.nonzero(~result.done).flatten()
        if len(active) == 0:
            result.snapshot()
            on_step(k)
            continue
        xa = x[active].detach().requires_grad_(True)
        with torch.enable_grad():
            loss, z, back = _differentiable_objective(model, xa, objective, generator)
            result.record(active, xa, back, _rows(z.detach()), k)
            if k < steps and stop is not None and stop():
                result.steps_run = k
                result.stop_searching(~result.done)
                result.snapshot()
                on_step(k)
                break
            if k < steps:
                direction = _ascent_direction(
                    loss, xa, last[active], generator, wide if model.dtype != torch.float64 else None
                )
                last[active] = direction
                x[active] = _project_rows(ball, active, xa.detach() + step_size * direction)
        result.snapshot()
        on_step(k)
    return result


def _project_rows(ball: Ball, index: Tensor, x: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, ball.low[index]), ball.high[index])


def random_search(
    model: InvertibleModel,
    ball: Ball,
    evaluations: int,
    generator: torch.Generator,
    chunk: int = 8,
    stop: Callable[[], bool] | None = None,
) -> AttackResult:
    """The baseline: ``evaluations`` points per sample drawn uniformly from the same region.

    ``stop()``, asked before each chunk of draws but the first, ends the search there (the
    samples still searching are marked ``cut``; ``evaluations`` counts the points drawn)."""
    result = AttackResult.start(ball.centre)
    n = len(ball.centre)
    done = 0
    while done < evaluations:
        if done > 0 and stop is not None and stop():
            result.stop_searching(~result.done)
            break
        k = min(chunk, evaluations - done)
        points = torch.cat([ball.uniform(generator) for _ in range(k)])
        index = torch.arange(n, device=points.device).repeat(k)
        with torch.no_grad():
            z = model.forward(points)
            back = model.inverse(z)
        for j in range(k):  # in order, so "first non-finite" is the first drawn
            rows = slice(j * n, (j + 1) * n)
            keep = ~result.done
            result.record(index[rows][keep], points[rows][keep], back[rows][keep], _rows(z[rows])[keep], done + j)
            result.snapshot()
        done += k
        result.evaluations = done
    return result


def dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    """Move data sitting on quantization levels into the lower half of its cell, as the paper does.

    Elements within ``1e-4`` bins of a level ``low + k bin`` become ``low + (k + u) bin`` with
    ``u ~ U(0, CELL_SHARE)``: Behrmann et al.'s ``x_nat = (x (n - 1) + u / 2) / n``. With a radius
    of half a bin the ball around such a point never reaches past the top of the cell, so every
    point searched lies in the sample's own cell or the lower half of the cell below: data the
    model was trained on. Elements already inside a cell, and continuous data, are left as they
    are.
    """
    bin_width = domain.bin_width
    if bin_width is None:
        return x
    position = (x.double() - domain.low) / bin_width
    on_level = (position - position.round()).abs() < 1e-4
    u = CELL_SHARE * torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    moved = domain.low + (position.round() + u) * bin_width
    moved = torch.where(on_level, moved, x.double()).clamp(domain.low, domain.high)
    return moved.to(x.dtype)


def attack_ball(x: Tensor, domain: DataDomain, epsilon: float, generator: torch.Generator) -> Ball:
    """The region around data ``x``: its dequantized point, the L_inf ball, the data range."""
    centre = dequantize(x, domain, generator)
    return Ball(centre, (centre - epsilon).clamp_min(domain.low), (centre + epsilon).clamp_max(domain.high), epsilon)
