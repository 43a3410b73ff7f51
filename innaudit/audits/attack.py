"""The ``attack`` audit: a gradient search for non-invertible points inside the dequantization cell.

The search itself (region, objectives, sign-gradient ascent, random search) is
:mod:`innaudit.audits.attack_search`; this module holds the audit: options, metrics, series, witnesses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.audits.attack_search import OBJECTIVES, AttackResult, attack_ball, random_search, sign_gradient_attack
from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import full_range_floor
from innaudit.audits.cost import AuditCost, Cost
from innaudit.config.settings import Threshold
from innaudit.core.domain import DataDomain
from innaudit.core.errors import ConfigError
from innaudit.core.metrics import neither, percent, rate, worse
from innaudit.core.stats import per_sample_norm, summarize
from innaudit.data import Dataset, Role
from innaudit.linalg import autograd_blind_reason

__all__ = ["Attack", "default_epsilon"]

CONTINUOUS_EPSILON = 0.5 / 256
"""Radius, as a share of the data range, used for continuous data when no ``epsilon`` is given:
half an 8-bit bin, the finest quantization images usually have."""
CURVE_POINTS = 101


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
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nan_to_num(np.nanmedian(finite, axis=1), nan=0.0)
            high = np.nan_to_num(np.nanmax(finite, axis=1), nan=0.0)
        return median.tolist(), high.tolist(), (~np.isfinite(stack)).mean(axis=1).tolist()

    total = len(attack.curve)
    pick = (
        sorted({round(i * (total - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)})
        if total > CURVE_POINTS
        else list(range(total))
    )
    a_med, a_max, a_bad = stats(attack.curve)
    r_med, r_max, r_bad = stats(search.curve[:total]) if search.curve else ([], [], [])
    out = {
        "step": [float(i) for i in pick],
        "error_median": [a_med[i] for i in pick],
        "error_max": [a_max[i] for i in pick],
        "nonfinite_fraction": [a_bad[i] for i in pick],
    }
    if len(r_med) == total:
        out |= {
            "random_error_median": [r_med[i] for i in pick],
            "random_error_max": [r_max[i] for i in pick],
            "random_nonfinite_fraction": [r_bad[i] for i in pick],
        }
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
    reached within half a 5-bit bin of a CelebA image after 56 sign steps). The shipped
    ``digits-affine-deep`` checkpoint shows it: every test digit round-trips, yet non-finite
    points lie within half a bin of some of them. Random round trips
    rarely land on such points; a gradient search does.

    Per attacked sample ``x`` (the first ``samples`` of the first in-distribution set): ``x`` is
    moved into its dequantization cell as the paper does (elements on a quantization level get
    ``+ U(0, 0.5)`` bin), then projected sign-gradient ascent maximizes the objective over
    ``B = {x' : ||x' - x0||_inf <= eps} ∩ [low, high]^D`` from a uniform random start:
    ``x'_{k+1} = clip_B(x'_k + a sign(grad L(x'_k)))``, ``steps`` steps, ``a = step_size * eps``
    (the paper's 5e-4 at eps = 1/64 is ``step_size = 0.032``). At the default half bin, ``B``
    lies in the sample's own cell and the upper half of the cell below it: data the model was
    trained on, never beyond. Every iterate is round-tripped;
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
    a useful gradient where the round-trip error is flat at rounding level. Default
    ``reconstruction``, the stronger where the holes are forward overflows that build up over
    the last coupling layers, since the round-trip error itself grows towards them
    (``docs/attack.md`` compares both objectives on the shipped checkpoints).
    ``amplification`` is the choice for a scale sliding towards underflow, where the round trip
    stays at rounding level until the very edge of the hole, at the cost of one extra inverse
    pass without autograd per step.

    Baseline ``random_search``: ``restarts * (steps + 1)`` points per sample drawn uniformly
    from the same region (as many round trips as the attack scores; the attack also pays for
    gradients), with the same metrics.

    Metrics per set: ``epsilon``, ``steps``, ``n``; ``error_l2`` and ``rel_error_l2``
    (``err / max(||x'||, floor)``) with ``median``, ``p99``, ``max``, ``mean`` over samples of
    the best finite error found; ``nonfinite_fraction`` (share of samples where a non-finite
    point was found); ``fraction_above_threshold`` (share whose relative error exceeds
    ``threshold``, non-finite included); ``first_nonfinite_step`` (median evaluation index of
    the first non-finite point, -1 if none); ``random_search`` with the same keys.

    Under ``--budget``, the search stops between steps and between restarts once the audit is
    past its deadline (every attacked point is still scored at its start; the random search
    then draws as many points as the attack scored): ``steps_run`` (the fewest gradient steps a
    search ran) and ``budget_cut_fraction`` (the share of attacked points whose search was
    cut while still searching) are present only then. A failure found before the cut still
    fails; no failure found in the steps run is a warning (``budget_cut_fraction`` above 0),
    never a pass.

    Reading a failure: non-finite or large errors within half a bin of test data mean the model
    cannot be trusted as a bijection on its own data: memory-saving gradients, density values and
    reconstructions of points a dequantization step away are wrong. ``--save-witnesses DIR``
    writes the points (``witnesses.npy``, ``originals.npy``, ``witnesses.pt``);
    ``innaudit run MODEL --data DIR/witnesses.npy --audit roundtrip`` reproduces the failure.
    Gate: any non-finite point fails; a relative error above ``threshold`` (1e-2, the roundtrip
    fail level: a visibly wrong reconstruction) fails; a relative error above 1e-4 warns.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "attack"
    title = "Gradient attack on invertibility inside the dequantization cell"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "fraction_above_threshold": Threshold(warn=None, fail=0.0),
        "rel_error_l2.max": Threshold(warn=1e-4, fail=None),
        "budget_cut_fraction": Threshold(warn=0.0, fail=None),
    }
    options = {
        "samples": 32,
        "epsilon": None,
        "steps": 200,
        "step_size": 0.032,
        "objective": "reconstruction",
        "restarts": 1,
        "threshold": 1e-2,
    }
    metrics = (
        *tuple(
            m
            for prefix in ("", "random_search.")
            for m in (
                neither(f"{prefix}n", doc="points searched around"),
                rate(f"{prefix}nonfinite_fraction", "points with a non-finite round trip in the ball"),
                rate(f"{prefix}fraction_above_threshold", "points with an error above the threshold"),
                worse(f"{prefix}error_l2"),
                worse(f"{prefix}rel_error_l2"),
            )
        ),
        neither("epsilon", doc="L-inf radius"),
        neither("steps"),
        neither("restarts"),
        neither("first_nonfinite_step", doc="median step of the first non-finite point (-1: none)"),
        neither("random_search.evaluations", doc="round trips of the random search per point"),
        neither("steps_run", doc="fewest gradient steps a search ran before the budget stopped it"),
        rate("budget_cut_fraction", "points whose search the budget cut short"),
    )

    shrinkable = {"steps": 25}

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Per point and restart, ``steps + 1`` gradient round trips (two VJPs) and as many
        random-search round trips."""
        k = int(options["restarts"]) * (int(options["steps"]) + 1)
        return {"": AuditCost(Cost(forward=2 * k, inverse=2 * k, vjp=2 * k))}

    @classmethod
    def capacities(cls, datasets: Sequence[Dataset], options: Mapping[str, Any], samples: int) -> list[int]:
        """The first in-distribution set only."""
        return [min(d.size, samples) for d in datasets if d.role is Role.IN_DISTRIBUTION][:1]

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped without an in-distribution set (the attack starts from data)."""
        if not any(d.role is Role.IN_DISTRIBUTION for d in ctx.datasets):
            return "no in-distribution data set to start the attack from (give --data)"
        return None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Objective known, counts at least 1, epsilon and step size positive."""
        _check_values(options)

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement, on the first in-distribution set; its batches of attacked points are
        the work units of a sharded run (each seeded by its start, not by the rank)."""
        options = _checked(ctx)
        ds = next(d for d in ctx.datasets if d.role is Role.IN_DISTRIBUTION)
        yield self._attack(ctx, ds, options)

    def _attack(self, ctx: AuditContext, ds: Dataset, o: Mapping[str, Any]) -> Measurement:
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

        def work(start: int) -> tuple[AttackResult, AttackResult, Tensor]:
            a_chunk, r_chunk, centre = self._chunk(ctx, x[start : start + ctx.batch_size], start, eps, o, tick)
            return _on(a_chunk, "cpu"), _on(r_chunk, "cpu"), centre.cpu()  # gathered across ranks on the CPU

        attack: AttackResult | None = None
        search: AttackResult | None = None
        centres = []
        for a_chunk, r_chunk, centre in ctx.map(range(0, n, ctx.batch_size), work):
            attack, search = _cat(attack, _on(a_chunk, x.device)), _cat(search, _on(r_chunk, x.device))
            centres.append(centre)
        assert attack is not None and search is not None
        floor = full_range_floor(domain.numel, domain.width)
        threshold = float(o["threshold"])
        metrics: dict[str, object] = {
            "epsilon": eps,
            "steps": steps,
            "restarts": restarts,
            **_metrics(attack, x, floor, threshold),
        }
        first = attack.first_step[attack.nonfinite].double()
        metrics["first_nonfinite_step"] = float(first.median()) if len(first) else -1.0
        metrics["random_search"] = {"evaluations": search.evaluations, **_metrics(search, x, floor, threshold)}
        if attack.cut is not None:
            metrics["steps_run"] = attack.steps_run
            metrics["budget_cut_fraction"] = float(attack.cut.double().mean())
        series = {
            "curve": _curve(attack, search),
            "images": _images(x, attack),
            "values": {
                "error_l2": [float(v) for v in torch.where(attack.nonfinite, math.inf, attack.error)],
                "random_error_l2": [float(v) for v in torch.where(search.nonfinite, math.inf, search.error)],
            },
        }
        artifacts = {
            "witnesses": attack.witness.detach().cpu().numpy(),
            "originals": x.detach().cpu().numpy(),
            "starts": torch.cat(centres).detach().cpu().numpy(),
            "errors": torch.where(attack.nonfinite, math.inf, attack.error).cpu().numpy(),
            "epsilon": eps,
        }
        text = _message(metrics, why, str(o["objective"])) + _cut_note(metrics, steps) + _gradient_free(ctx, x[:8])
        return Measurement(ds.name, metrics, text, series, artifacts)

    def _chunk(
        self, ctx: AuditContext, x: Tensor, start: int, eps: float, o: Mapping[str, Any], tick: Callable[[int], None]
    ) -> tuple[AttackResult, AttackResult, Tensor]:
        domain = ctx.model.info.domain
        ball = attack_ball(x, domain, eps, ctx.generator("cell", start))
        steps, size = int(o["steps"]), float(o["step_size"]) * eps
        attack: AttackResult | None = None
        search: AttackResult | None = None
        for r in range(int(o["restarts"])):
            if attack is not None and search is not None and ctx.overdue():  # restarts left out
                attack.stop_searching(torch.ones_like(attack.nonfinite))
                search.stop_searching(torch.ones_like(search.nonfinite))
                break
            a = sign_gradient_attack(
                ctx.model,
                ball,
                steps,
                size,
                str(o["objective"]),
                ctx.generator("attack", start, r),
                lambda k: tick(len(x)),
                stop=ctx.overdue,
            )
            s = random_search(ctx.model, ball, a.evaluations, ctx.generator("random", start, r), stop=ctx.overdue)
            tick(len(x) * (steps + 1))
            if attack is None or search is None:
                attack, search = a, s
            else:
                attack.merge(a)
                search.merge(s)
        assert attack is not None and search is not None
        return attack, search, ball.centre


def _on(r: AttackResult, device: torch.device | str) -> AttackResult:
    """``r`` with its tensors on ``device``."""
    return AttackResult(
        r.error.to(device),
        r.nonfinite.to(device),
        r.witness.to(device),
        r.reconstruction.to(device),
        r.first_step.to(device),
        [c.to(device) for c in r.curve],
        r.evaluations,
        r.steps_run,
        None if r.cut is None else r.cut.to(device),
    )


def _cat(a: AttackResult | None, b: AttackResult) -> AttackResult:
    if a is None:
        return b
    curve = [torch.cat([p, q]) for p, q in zip(a.curve, b.curve, strict=False)]
    return AttackResult(
        torch.cat([a.error, b.error]),
        torch.cat([a.nonfinite, b.nonfinite]),
        torch.cat([a.witness, b.witness]),
        torch.cat([a.reconstruction, b.reconstruction]),
        torch.cat([a.first_step, b.first_step]),
        curve,
        min(a.evaluations, b.evaluations),
        min(a.steps_run, b.steps_run),
        None if a.cut is None and b.cut is None else torch.cat([_cut_rows(a), _cut_rows(b)]),
    )


def _cut_rows(r: AttackResult) -> Tensor:
    """``r.cut``, or no sample cut."""
    return r.cut if r.cut is not None else torch.zeros_like(r.nonfinite)


def _cut_note(m: Mapping[str, object], steps: int) -> str:
    """The message's note on a search the budget cut short ("" when none was)."""
    if "budget_cut_fraction" not in m:
        return ""
    return (
        f"; the budget stopped the search after {m['steps_run']} of {steps} steps on "
        f"{_share(m['budget_cut_fraction'])} of the points: no failure found in the steps run is not a pass"
    )


def _checked(ctx: AuditContext) -> dict[str, Any]:
    o = {k: ctx.option(k) for k in Attack.options}
    _check_values(o)
    return o


def _check_values(o: Mapping[str, Any]) -> None:
    """Refuse impossible attack settings (ConfigError), with the config, before any audit runs."""
    if o["objective"] not in OBJECTIVES:
        raise ConfigError(f"attack.objective is {o['objective']!r}; expected one of {', '.join(OBJECTIVES)}")
    for key in ("samples", "steps", "restarts"):
        if int(o[key]) < 1:
            raise ConfigError(f"attack.{key} is {o[key]}; expected at least 1")
    if o["epsilon"] is not None and not float(o["epsilon"]) > 0:
        raise ConfigError(f"attack.epsilon is {o['epsilon']}; expected a positive radius (or null)")
    if not float(o["step_size"]) > 0:
        raise ConfigError(f"attack.step_size is {o['step_size']}; expected a positive share of epsilon")


def _gradient_free(ctx: AuditContext, x: Tensor) -> str:
    """A note when autograd cannot see through the forward map or the inverse (an inverse under
    ``torch.no_grad()``): every step of the search is then a random sign step, so the attack is
    a gradient-free search no stronger than the random search beside it."""
    forward = lambda t: ctx.model.forward(t, grad=True)  # noqa: E731
    inverse = lambda t: ctx.model.inverse(t, grad=True)  # noqa: E731
    with torch.no_grad():
        z = ctx.model.forward(x)
    finite = torch.isfinite(z.reshape(len(z), -1)).all(1)
    for name, fn, at in (("forward map", forward, x), ("inverse", inverse, z[finite])):
        reason = autograd_blind_reason(fn, at) if len(at) else None
        if reason:
            return (
                f"; the search fell back to gradient-free (random sign) steps: the {name} has "
                f"no usable gradient ({reason}), so the attack is no stronger than random search"
            )
    return ""


def _share(value: object) -> str:
    """A share as :func:`~innaudit.core.metrics.percent` writes it (``nan`` when not a number)."""
    return percent(float(value)) if isinstance(value, (int, float)) else "nan"


def _message(m: dict[str, object], why: str, objective: str) -> str:
    rs = m["random_search"]
    assert isinstance(rs, dict)
    return (
        f"eps {m['epsilon']:.3g} ({why}), {objective}: attack non-finite {_share(m['nonfinite_fraction'])}, "
        f"above threshold {_share(m['fraction_above_threshold'])}; random search non-finite "
        f"{_share(rs['nonfinite_fraction'])}, above threshold {_share(rs['fraction_above_threshold'])}"
    )
