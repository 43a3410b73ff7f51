"""The ``attack`` audit: a gradient search for non-invertible points inside the dequantization cell."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..config import Threshold
from ..data import Dataset, Role
from ..domain import DataDomain
from ..errors import ConfigError
from ..model import InvertibleModel
from ..stats import per_sample_norm, summarize
from .base import Audit, AuditContext, Measurement, register
from .common import full_range_floor

__all__ = ["Attack", "AttackResult", "Ball", "attack_ball", "random_search", "sign_gradient_attack"]

OBJECTIVES = ("reconstruction", "amplification")
CONTINUOUS_EPSILON = 0.5 / 256
"""Radius, as a share of the data range, used for continuous data when no ``epsilon`` is given:
half an 8-bit bin, the finest quantization images usually have."""
AMPLIFICATION_ETA = 1e-3
"""Latent step of the amplification objective, relative to ``||x||``: ``||z||`` would do for a
flow whose latents are standard normal, but a hole often sits where a few latent elements are
huge (an exploding scale), and a step relative to those would swamp the small ones."""
CURVE_POINTS = 101


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
    """

    error: Tensor
    nonfinite: Tensor
    witness: Tensor
    reconstruction: Tensor
    first_step: Tensor
    curve: list[Tensor] = field(default_factory=list)

    @classmethod
    def start(cls, x: Tensor) -> AttackResult:
        """An empty result for the samples of ``x``."""
        n = len(x)
        return cls(torch.zeros(n, dtype=torch.float64, device=x.device),
                   torch.zeros(n, dtype=torch.bool, device=x.device), x.detach().clone(),
                   x.detach().clone(), torch.full((n,), -1, dtype=torch.long, device=x.device))

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
        take = (other.nonfinite & ~self.nonfinite) | (~self.nonfinite & ~other.nonfinite
                                                      & (other.error > self.error))
        self.error = torch.where(take, other.error, self.error)
        self.witness[take], self.reconstruction[take] = other.witness[take], other.reconstruction[take]
        self.first_step = torch.where(take, other.first_step, self.first_step)
        self.nonfinite = self.nonfinite | other.nonfinite
        self.curve += [torch.where(self.nonfinite.cpu(), math.inf, torch.maximum(c, self.error.cpu()))
                       for c in other.curve]


def _rows(x: Tensor) -> Tensor:
    return ~torch.isfinite(x.reshape(len(x), -1)).all(1)


def _unit(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    u = torch.randn(shape, generator=generator, dtype=torch.float64)
    u = u / torch.linalg.vector_norm(u.reshape(len(u), -1), dim=1).clamp_min(1e-30).view(-1, *[1] * (u.dim() - 1))
    return u.to(device=like.device, dtype=like.dtype)


def _objective(model: InvertibleModel, x: Tensor, objective: str,
               generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
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


def _differentiable_objective(model: InvertibleModel, x: Tensor, objective: str,
                              generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
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


def _ascent_direction(loss: Tensor, x: Tensor, last: Tensor, generator: torch.Generator,
                      wide: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]] | None = None) -> Tensor:
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


def sign_gradient_attack(model: InvertibleModel, ball: Ball, steps: int, step_size: float,
                         objective: str, generator: torch.Generator,
                         on_step: Callable[[int], None] = lambda k: None) -> AttackResult:
    """Projected sign-gradient ascent from a random start in ``ball`` (Behrmann et al. 4(b)).

    ``x_{k+1} = clip_ball(x_k + step_size * sign(grad L(x_k)))`` for ``steps`` steps; every
    iterate (``steps + 1`` points) is round-tripped and scored. A sample whose round trip turns
    non-finite stops there: that point is its witness.
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
    for k in range(steps + 1):
        active = torch.nonzero(~result.done).flatten()
        if len(active) == 0:
            result.snapshot()
            on_step(k)
            continue
        xa = x[active].detach().requires_grad_(True)
        with torch.enable_grad():
            loss, z, back = _differentiable_objective(model, xa, objective, generator)
            result.record(active, xa, back, _rows(z.detach()), k)
            if k < steps:
                direction = _ascent_direction(loss, xa, last[active], generator,
                                              wide if model.dtype != torch.float64 else None)
                last[active] = direction
                x[active] = _project_rows(ball, active, xa.detach() + step_size * direction)
        result.snapshot()
        on_step(k)
    return result


def _project_rows(ball: Ball, index: Tensor, x: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(x, ball.low[index]), ball.high[index])


def random_search(model: InvertibleModel, ball: Ball, evaluations: int, generator: torch.Generator,
                  chunk: int = 8) -> AttackResult:
    """The baseline: ``evaluations`` points per sample drawn uniformly from the same region."""
    result = AttackResult.start(ball.centre)
    n = len(ball.centre)
    done = 0
    while done < evaluations:
        k = min(chunk, evaluations - done)
        points = torch.cat([ball.uniform(generator) for _ in range(k)])
        index = torch.arange(n, device=points.device).repeat(k)
        with torch.no_grad():
            z = model.forward(points)
            back = model.inverse(z)
        for j in range(k):  # in order, so "first non-finite" is the first drawn
            rows = slice(j * n, (j + 1) * n)
            keep = ~result.done
            result.record(index[rows][keep], points[rows][keep], back[rows][keep], _rows(z[rows])[keep],
                          done + j)
            result.snapshot()
        done += k
    return result


def dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    """Move data sitting on quantization levels to a uniform random point of its cell.

    Elements within ``1e-4`` bins of a level ``low + k bin`` become ``low + (k + u) bin`` with
    ``u ~ U(0, 1)`` (the paper moves its image "into the dequantization cube" the same way);
    elements already inside a cell, and continuous data, are left as they are.
    """
    bin_width = domain.bin_width
    if bin_width is None:
        return x
    position = (x.double() - domain.low) / bin_width
    on_level = (position - position.round()).abs() < 1e-4
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    moved = domain.low + (position.round() + u) * bin_width
    moved = torch.where(on_level, moved, x.double()).clamp(domain.low, domain.high)
    return moved.to(x.dtype)


def attack_ball(x: Tensor, domain: DataDomain, epsilon: float, generator: torch.Generator) -> Ball:
    """The region around data ``x``: its dequantized point, the L_inf ball, the data range."""
    centre = dequantize(x, domain, generator)
    return Ball(centre, (centre - epsilon).clamp_min(domain.low), (centre + epsilon).clamp_max(domain.high),
                epsilon)


def default_epsilon(domain: DataDomain) -> tuple[float, str]:
    """Half a quantization bin; half an 8-bit bin of the range for continuous data."""
    if domain.bin_width is not None:
        return 0.5 * domain.bin_width, f"half a bin of {domain.levels} levels"
    return CONTINUOUS_EPSILON * domain.width, "continuous data: half an 8-bit bin of the range (set epsilon)"


def _metrics(result: AttackResult, x: Tensor, floor: float, threshold: float) -> dict[str, object]:
    err = torch.where(result.nonfinite, math.inf, result.error).cpu().numpy()
    norm = per_sample_norm(result.witness).clamp_min(floor).cpu().numpy()
    rel = err / norm
    n = len(err)
    return {
        "n": n,
        "nonfinite_fraction": float((~np.isfinite(err)).mean()) if n else 0.0,
        "fraction_above_threshold": float((rel > threshold).mean()) if n else 0.0,
        "error_l2": summarize(err),
        "rel_error_l2": summarize(rel),
    }


def _curve(attack: AttackResult, search: AttackResult) -> dict[str, list[float]]:
    def stats(curve: list[Tensor]) -> tuple[list[float], list[float], list[float]]:
        stack = torch.stack(curve).double().numpy()
        finite = np.where(np.isfinite(stack), stack, np.nan)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nan_to_num(np.nanmedian(finite, axis=1), nan=0.0)
                high = np.nan_to_num(np.nanmax(finite, axis=1), nan=0.0)
        return median.tolist(), high.tolist(), (~np.isfinite(stack)).mean(axis=1).tolist()

    total = len(attack.curve)
    pick = sorted({round(i * (total - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)}) if total > CURVE_POINTS else list(range(total))
    a_med, a_max, a_bad = stats(attack.curve)
    r_med, r_max, r_bad = stats(search.curve[:total]) if search.curve else ([], [], [])
    out = {"step": [float(i) for i in pick],
           "error_median": [a_med[i] for i in pick], "error_max": [a_max[i] for i in pick],
           "nonfinite_fraction": [a_bad[i] for i in pick]}
    if len(r_med) == total:
        out |= {"random_error_median": [r_med[i] for i in pick], "random_error_max": [r_max[i] for i in pick],
                "random_nonfinite_fraction": [r_bad[i] for i in pick]}
    return out


def _image(t: Tensor) -> list:
    t = t.detach().double().cpu()
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    elif t.dim() == 3:
        t = t.permute(1, 2, 0)
    return t.tolist()


def _images(x: Tensor, result: AttackResult, count: int = 4) -> dict[str, list]:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        return {}
    order = torch.argsort(torch.where(result.nonfinite, math.inf, result.error), descending=True)[:count]
    out: dict[str, list] = {}
    for i in order.tolist():
        out[f"x[{i}]"] = _image(x[i])
        out[f"x'[{i}]"] = _image(result.witness[i])
        out[f"F^-1(F(x'))[{i}]"] = _image(result.reconstruction[i])
    return out


@register
class Attack(Audit):
    r"""Invertibility attack: search the dequantization cell around data for non-invertible points.

    Property: a model can round-trip every test point and still be non-invertible a fraction of a
    quantization bin away from one (Behrmann et al. 2021, section 4(b): NaN reconstructions were
    reached within half a 5-bit bin of a CelebA image after 56 sign steps). Random round trips
    rarely land on such points; a gradient search does.

    Per attacked sample ``x`` (the first ``samples`` of the first in-distribution set): ``x`` is
    moved to a random point ``x0`` of its dequantization cell (elements on a quantization level
    get ``+ U(0, 1) bin``), then projected sign-gradient ascent maximizes the objective over
    ``B = {x' : ||x' - x0||_inf <= eps} ∩ [low, high]^D`` from a uniform random start:
    ``x'_{k+1} = clip_B(x'_k + a sign(grad L(x'_k)))``, ``steps`` steps, ``a = step_size * eps``
    (the paper's 5e-4 at eps = 1/64 is ``step_size = 0.032``). Every iterate is round-tripped;
    the score of a sample is the largest ``err = ||x' - F^-1(F(x'))||_2`` over its iterates, and a
    non-finite ``z`` or reconstruction ends its search and counts (error ``inf``). Non-finite
    gradient entries are zeroed; a sample without a usable gradient takes a random sign step; the
    best point so far is kept apart from the iterate, so it is never lost. ``restarts`` repeats
    the search from new random starts and keeps the worst point.

    ``epsilon`` (null): half a quantization bin of the model's domain, ``bin_width / 2``; for
    continuous data (no levels) half an 8-bit bin of the range, ``width / 512``, and the report
    says so. ``--epsilon`` overrides it.

    Objectives: ``reconstruction`` is the paper's ``L = ||x' - F^-1(F(x'))||_2``;
    ``amplification`` is ``L = log ||F^-1(F(x') + eta u) - x'||_2`` with ``u`` a fresh random unit
    latent direction and ``eta = 1e-3 ||x'||``: the inverse's local amplification, which keeps
    a useful gradient where the round-trip error is flat at rounding level (a scale sliding
    towards underflow). Default ``amplification``, by measurement (32 samples, 200 steps, seed 0):
    on the shipped ``digits-affine`` checkpoint both find nothing at the default half bin; at
    eps = 2 bins ``amplification`` finds non-finite points for 31% of the test digits and
    ``reconstruction`` for 28%, at 4 bins 100% against 97% (random search: 0% and 12%); on
    ``digits-additive`` both find nothing. On a planted scale underflow (the test model
    ``PlantedHole``) ``amplification`` finds 88% and ``reconstruction`` 59% (random search 0%):
    the round-trip error stays at rounding level until the very edge of the hole, so its
    gradient is mostly noise, while ``1/g`` grows smoothly. It costs one extra inverse pass
    without autograd per step (``benchmarks/attack.py``).

    Baseline ``random_search``: ``restarts * (steps + 1)`` points per sample drawn uniformly
    from the same region (as many round trips as the attack scores; the attack also pays for
    gradients), with the same metrics.

    Metrics per set: ``epsilon``, ``steps``, ``n``; ``error_l2`` and ``rel_error_l2``
    (``err / max(||x'||, floor)``) with ``median``, ``p99``, ``max``, ``mean`` over samples of
    the best finite error found; ``nonfinite_fraction`` (share of samples where a non-finite
    point was found); ``fraction_above_threshold`` (share whose relative error exceeds
    ``threshold``, non-finite included); ``first_nonfinite_step`` (median evaluation index of
    the first non-finite point, -1 if none); ``random_search`` with the same keys.

    Reading a failure: non-finite or large errors within half a bin of test data mean the model
    cannot be trusted as a bijection on its own data: memory-saving gradients, density values and
    reconstructions of points a dequantization step away are wrong. ``--save-witnesses DIR``
    writes the points (``witnesses.npy``, ``originals.npy``, ``witnesses.pt``);
    ``innaudit run MODEL --data DIR/witnesses.npy --audit roundtrip`` reproduces the failure.
    Gate: any non-finite point fails; a relative error above ``threshold`` (1e-2, the roundtrip
    fail level: a visibly wrong reconstruction) fails; a relative error above 1e-4 warns.
    """

    id = "attack"
    title = "Gradient attack on invertibility inside the dequantization cell"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "fraction_above_threshold": Threshold(warn=None, fail=0.0),
        "rel_error_l2.max": Threshold(warn=1e-4, fail=None),
    }
    options = {"samples": 32, "epsilon": None, "steps": 200, "step_size": 0.032,
               "objective": "amplification", "restarts": 1, "threshold": 1e-2}
    metrics = tuple(f"{prefix}{m}" for prefix in ("", "random_search.") for m in (
        "nonfinite_fraction", "fraction_above_threshold", "error_l2.median", "error_l2.p99",
        "error_l2.max", "error_l2.mean", "rel_error_l2.median", "rel_error_l2.p99",
        "rel_error_l2.max", "rel_error_l2.mean"))

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped without an in-distribution set (the attack starts from data)."""
        if not any(d.role is Role.IN_DISTRIBUTION for d in ctx.datasets):
            return "no in-distribution data set to start the attack from (give --data)"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement, on the first in-distribution set."""
        options = _checked(ctx)
        ds = next(d for d in ctx.datasets if d.role is Role.IN_DISTRIBUTION)
        yield self._attack(ctx, ds, options)

    def _attack(self, ctx: AuditContext, ds: Dataset, o: dict[str, object]) -> Measurement:
        domain = ctx.model.info.domain
        eps, why = (float(o["epsilon"]), "given") if o["epsilon"] is not None else default_epsilon(domain)
        steps, restarts = int(o["steps"]), int(o["restarts"])
        x = ds.first(int(o["samples"])).to(device=ctx.device, dtype=ctx.model.dtype)
        n = len(x)
        total = n * restarts * (steps + 1) * 2
        done = [0]

        def tick(count: int) -> None:
            done[0] += count
            ctx.progress(ds.name, min(done[0], total), total)

        attack: AttackResult | None = None
        search: AttackResult | None = None
        centres = []
        for start in range(0, n, ctx.batch_size):
            chunk = x[start:start + ctx.batch_size]
            a_chunk, r_chunk, centre = self._chunk(ctx, chunk, start, eps, o, tick)
            attack, search = _cat(attack, a_chunk), _cat(search, r_chunk)
            centres.append(centre)
        assert attack is not None and search is not None
        floor = full_range_floor(domain.numel, domain.width)
        threshold = float(o["threshold"])
        metrics: dict[str, object] = {"epsilon": eps, "steps": steps, "restarts": restarts,
                                      **_metrics(attack, x, floor, threshold)}
        first = attack.first_step[attack.nonfinite].double()
        metrics["first_nonfinite_step"] = float(first.median()) if len(first) else -1.0
        metrics["random_search"] = {"evaluations": restarts * (steps + 1),
                                    **_metrics(search, x, floor, threshold)}
        series = {"curve": _curve(attack, search), "images": _images(x, attack),
                  "values": {"error_l2": [float(v) for v in torch.where(attack.nonfinite, math.inf, attack.error)],
                             "random_error_l2": [float(v) for v in torch.where(search.nonfinite, math.inf, search.error)]}}
        artifacts = {"witnesses": attack.witness.detach().cpu().numpy(),
                     "originals": x.detach().cpu().numpy(),
                     "starts": torch.cat(centres).detach().cpu().numpy(),
                     "errors": torch.where(attack.nonfinite, math.inf, attack.error).cpu().numpy(),
                     "epsilon": eps}
        return Measurement(ds.name, metrics, _message(metrics, why, str(o["objective"])), series, artifacts)

    def _chunk(self, ctx: AuditContext, x: Tensor, start: int, eps: float, o: dict[str, object],
               tick: Callable[[int], None]) -> tuple[AttackResult, AttackResult, Tensor]:
        domain = ctx.model.info.domain
        ball = attack_ball(x, domain, eps, ctx.generator("cell", start))
        steps, size = int(o["steps"]), float(o["step_size"]) * eps
        attack: AttackResult | None = None
        search: AttackResult | None = None
        for r in range(int(o["restarts"])):
            a = sign_gradient_attack(ctx.model, ball, steps, size, str(o["objective"]),
                                     ctx.generator("attack", start, r), lambda k: tick(len(x)))
            s = random_search(ctx.model, ball, steps + 1, ctx.generator("random", start, r))
            tick(len(x) * (steps + 1))
            if attack is None or search is None:
                attack, search = a, s
            else:
                attack.merge(a)
                search.merge(s)
        assert attack is not None and search is not None
        return attack, search, ball.centre


def _cat(a: AttackResult | None, b: AttackResult) -> AttackResult:
    if a is None:
        return b
    curve = [torch.cat([p, q]) for p, q in zip(a.curve, b.curve)]
    return AttackResult(torch.cat([a.error, b.error]), torch.cat([a.nonfinite, b.nonfinite]),
                        torch.cat([a.witness, b.witness]), torch.cat([a.reconstruction, b.reconstruction]),
                        torch.cat([a.first_step, b.first_step]), curve)


def _checked(ctx: AuditContext) -> dict[str, object]:
    o = {k: ctx.option(k) for k in Attack.options}
    if o["objective"] not in OBJECTIVES:
        raise ConfigError(f"attack.objective is {o['objective']!r}; expected one of {', '.join(OBJECTIVES)}")
    for key in ("samples", "steps", "restarts"):
        if int(o[key]) < 1:
            raise ConfigError(f"attack.{key} is {o[key]}; expected at least 1")
    if o["epsilon"] is not None and not float(o["epsilon"]) > 0:
        raise ConfigError(f"attack.epsilon is {o['epsilon']}; expected a positive radius (or null)")
    if not float(o["step_size"]) > 0:
        raise ConfigError(f"attack.step_size is {o['step_size']}; expected a positive share of epsilon")
    return o


def _message(m: dict[str, object], why: str, objective: str) -> str:
    rs = m["random_search"]
    assert isinstance(rs, dict)
    return (f"eps {m['epsilon']:.3g} ({why}), {objective}: attack non-finite {m['nonfinite_fraction']:.0%}, "
            f"above threshold {m['fraction_above_threshold']:.0%}; random search non-finite "
            f"{rs['nonfinite_fraction']:.0%}, above threshold {rs['fraction_above_threshold']:.0%}")
