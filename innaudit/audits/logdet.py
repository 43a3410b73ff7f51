"""The ``logdet`` audit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innaudit.audits.base import Audit, AuditContext, Measurement, register
from innaudit.audits.common import late_rows, map_batches, sample_counts, set_progress, shared_view
from innaudit.audits.cost import AuditCost, Cost
from innaudit.config.settings import Threshold
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.stats import significant, summarize
from innaudit.linalg import choose_method, jacobian, log_abs_det
from innaudit.linalg.slq import log_abs_det_slq
from innaudit.model.contract import InvertibleModel, LogDetKind, host

__all__ = ["LogDet", "numerical_log_det"]


def numerical_log_det(
    model: InvertibleModel,
    x: Tensor,
    method: str,
    probes: int,
    steps: int,
    generator: torch.Generator,
    stop: Callable[[], bool] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``log|det J_F(x)|`` per sample from the Jacobian, its standard error and its estimated
    quadrature bias (both 0 when exact), and where the reference itself failed (a finite Jacobian whose ``slogdet`` and SVD both gave no
    finite answer: innaudit's failure, not the model's).

    ``exact``: ``slogdet`` in float64 of the full Jacobian computed in the model's dtype, one
    matrix at a time, the SVD's ``sum log sigma_i`` where LU fails
    (:func:`innaudit.linalg.log_abs_det`); ``matrix-free``: stochastic Lanczos quadrature with
    ``probes`` probes of ``steps`` steps, the probes of a batch advancing together
    (:func:`innaudit.linalg.slq.log_abs_det_slq`), whose failures cannot be told from the model's;
    ``log|det J|`` then lies in ``[value - bias - 3 stderr, value + 3 stderr]``.
    """
    forward = lambda t: model.forward(t, grad=True)  # noqa: E731
    if method == "exact":
        jac = jacobian(forward, x)
        value = log_abs_det(jac)
        failed = torch.isfinite(jac.flatten(1)).all(1).cpu() & torch.isnan(value).cpu()
        return value, torch.zeros_like(value), torch.zeros_like(value), failed
    estimate = log_abs_det_slq(forward, x, probes=probes, steps=steps, generator=generator, stop=stop)
    return estimate.values, estimate.stderr, estimate.bias, torch.zeros(len(x), dtype=torch.bool)


def _reference(
    ctx: AuditContext,
    x: Tensor,
    needed: np.ndarray,
    method: str,
    generator: torch.Generator,
    stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`numerical_log_det` of the samples ``needed`` (those whose own log-det is finite: a
    non-finite one fails whatever the reference says), NaN for the others, which cost nothing."""
    value, err, bias = np.full(len(x), math.nan), np.full(len(x), math.nan), np.full(len(x), math.nan)
    failed = np.zeros(len(x), dtype=bool)
    if needed.any():
        rows = torch.from_numpy(needed).to(x.device)
        v, e, b, f = numerical_log_det(
            ctx.model, x[rows], method, ctx.option("probes"), ctx.option("steps"), generator, stop
        )
        value[needed], err[needed], bias[needed], failed[needed] = host(v), host(e), host(b), f.numpy()
    return value, err, bias, failed


BOUND_STDERRS = 3.0
"""Standard errors of the probe mean added to the estimate's upper bound (see :func:`_unexplained`)."""


def _unexplained(model_ld: np.ndarray, ref: np.ndarray, stderr: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """The part of the model's log-det that an estimated reference proves wrong, per sample.

    Stochastic Lanczos quadrature never under-estimates ``log|det J|`` beyond its probe noise:
    each probe's Gauss quadrature of ``v^T log(J^T J) v`` is at least the quadratic form, since
    the error of an ``m``-node Gauss rule is ``f^(2m)(xi) / (2m)! * int pi_m^2`` and every even
    derivative of ``log`` is negative (Golub and Meurant, "Matrices, Moments and Quadrature with
    Applications", 2010, ch. 6); the Hutchinson mean of the forms is unbiased (standard error
    ``s``). So ``log|det J| <= ref + 3 s`` holds with high probability, while the bias below it
    grows with the condition number and is not bounded by anything the estimate measures. A
    model's log-det above ``ref + 3 s`` is wrong by at least the excess; one below ``ref`` may
    be exact (it is reported as ``raw_error``, not gated by ``error``).
    """
    with np.errstate(invalid="ignore"):
        excess = np.maximum(0.0, model_ld - ref - BOUND_STDERRS * np.nan_to_num(stderr, nan=0.0))
    return np.where(bad, np.inf, excess)


@register
class LogDet(Audit):
    r"""The model's log-determinant against ``log|det J_F(x)|`` computed from its Jacobian.

    Property: a normalizing flow's likelihood is ``log p(x) = log p_Z(F(x)) + log|det J_F(x)|``;
    the log-det the model reports by summing its blocks' terms must equal the log-determinant of
    the map it actually computes. When the inverse explodes, "the change-of-variables formula
    does not apply" (Behrmann et al., AISTATS 2021, failure (i)); the paper's Glow analysis
    compared ``slogdet`` of the full Jacobian with the analytic log-det, per sample.

    Per sample: ``err = |ld_model(x) - log|det J_F(x)||`` in nats and ``rel = err /
    max(1, |log|det J_F(x)||)``. The reference value is exact (``slogdet`` in float64 of the
    Jacobian built with torch.func) where the cost model (``innaudit.run.plan``) finds it within 4x
    of the estimate's cost under ``method: auto``, and otherwise a
    stochastic Lanczos quadrature estimate ``1/2 tr log(J^T J)`` with ``probes`` Rademacher
    probes of ``steps`` Lanczos steps each, the probes of a batch advancing together (a step is
    one forward pass of the batch and, batched over the probes, a tangent pass and a backward
    pass through the graph kept from one forward pass; the Lanczos matrix comes from the
    Golub-Kahan bidiagonalization of ``J``, which keeps the small singular values of a float32
    map); then ``reference_stderr`` gives its standard error over the probes, ``reference_bias``
    its estimated quadrature bias (from the rules of ``k``, ``k/2`` and ``k/4`` nodes, so that
    ``log|det J|`` lies in ``[ref - bias - 3 stderr, ref + 3 stderr]``), ``reference_probes`` and
    ``reference_steps`` what ran, and ``reference`` is ``"estimated"``. That estimate is an upper bound on ``log|det J|`` up to
    probe noise and can lie far above it where ``J`` is ill-conditioned, so against it ``error``
    is the part of the model's log-det above ``ref + 3 * stderr`` (what the estimate proves wrong)
    and ``raw_error`` / ``raw_rel_error`` the plain gap, which warns above 0.1 and never fails.

    Metrics per set: ``n``, ``model_log_det_kind`` (exact / estimated, from the model's
    metadata), ``reference``, ``nonfinite_fraction`` (model or reference log-det non-finite),
    ``error`` and ``rel_error`` (``median``, ``p99``, ``max``, ``mean`` over finite samples).
    When the model's own log-det is an estimate (e.g. a residual flow's power series), the
    same numbers are reported as ``estimate_error`` / ``estimate_rel_error`` and not gated by
    default: an estimate is expected to differ. ``series.values`` keeps per-sample values.

    The reference is computed only for samples whose own log-det is finite: a non-finite
    model log-det fails whatever the reference says, so its ``log_abs_det_j`` is NaN and costs
    no Jacobian.

    A reference that fails (a finite Jacobian whose LU and SVD both give no finite log-det: a
    LAPACK failure) is innaudit's error on that sample, never the model's: the sample is left
    out of ``error`` and ``nonfinite_fraction`` and counted in ``reference_failed_fraction``,
    which warns above 0 (those samples are not judged).

    Under ``--budget``, the quadrature's Lanczos steps stop at the deadline (a stopped Gauss
    rule is still an upper bound up to probe noise, so what it proves wrong stays wrong) and a
    set begun after the deadline gets the reference of one sample (the model's own log-det of
    every sample of the batch is still checked for non-finite values); ``budget_cut_fraction``
    (present only then) counts the samples whose reference was stopped short or not computed
    (those are not judged), and above 0 it warns.

    Reading a failure: a large error on finite samples means the likelihood the model reports
    is not the one of the map it computes (a bookkeeping bug, or float32 breakdown of an
    ill-conditioned map); non-finite log-dets mean the likelihood is unusable there. Gate
    defaults: non-finite fails; ``rel_error.max`` above 1e-3 warns and above 1e-1 fails.

    References:
        Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding
        Inverses in Invertible Neural Networks", AISTATS 2021 (PMLR 130),
        https://arxiv.org/abs/2006.09347
    """

    id = "logdet"
    title = "Model log-det against log|det J| of the computed map"
    thresholds = {
        "nonfinite_fraction": Threshold(warn=None, fail=0.0),
        "rel_error.max": Threshold(warn=1e-3, fail=1e-1),
        "reference_failed_fraction": Threshold(warn=0.0, fail=None),
        "raw_rel_error.max": Threshold(warn=1e-1, fail=None),
        "budget_cut_fraction": Threshold(warn=0.0, fail=None),
    }
    options = {"samples": 32, "method": "auto", "probes": 8, "steps": 32}
    metrics = (
        neither("n", doc="samples"),
        neither("model_log_det_kind", doc="what the model's log-det is (exact, estimated)"),
        neither("reference", doc="how the reference was computed (exact, estimated)"),
        rate("nonfinite_fraction", "samples with a non-finite log-det"),
        worse("error", "nats", "|model log-det - reference|"),
        worse("rel_error", doc="error / |reference|"),
        worse("estimate_error", "nats", "error of an estimated log-det (not gated)"),
        worse("estimate_rel_error"),
        rate("reference_failed_fraction", "samples whose reference log|det J| innaudit could not compute"),
        worse("raw_error", "nats", "|model log-det - estimated reference| (matrix-free reference only)"),
        worse("raw_rel_error", doc="raw_error / |estimated reference|"),
        neither("reference_stderr", "nats", "standard error of the estimated reference over its probes"),
        neither(
            "reference_bias",
            "nats",
            "estimated quadrature bias of the estimated reference: log|det J| lies in "
            "[ref - bias - 3 stderr, ref + 3 stderr]",
        ),
        neither("reference_probes", doc="Rademacher probes per sample of the estimated reference"),
        neither("reference_steps", doc="Lanczos steps per probe of the estimated reference"),
        rate("budget_cut_fraction", "samples whose reference the budget stopped short or left uncomputed"),
    )

    shrinkable = {"probes": 2, "steps": 16}

    @classmethod
    def costs(cls, dim: int, options: Mapping[str, Any]) -> Mapping[str, AuditCost]:
        """Exact: ``d`` VJPs and a ``slogdet``; matrix-free: the forward pass, a VJP's forward
        pass (its graph kept), per bidiagonalization step one forward pass and ``probes``
        tangent passes, ``probes`` backward passes on every step but the last, and the
        reorthogonalization of both Krylov bases in float64 (about ``8 steps^2 d`` flops per
        probe, counted as dense work) (:func:`innaudit.linalg.slq.log_abs_det_slq`)."""
        steps = min(int(options["steps"]), max(1, dim))
        probes = int(options["probes"])
        k = probes * steps
        reorthogonalize = probes * 8.0 * steps**2 / max(1, dim) ** 2
        return {
            "exact": AuditCost(Cost(forward=1, vmap_vjp=dim, dense=float(dim) ** 3 / 4)),
            "matrix-free": AuditCost(
                Cost(forward=2 + steps, tangent=k, backward=probes * (steps - 1), dense=reorthogonalize)
            ),
        }

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Skipped when the model reports no log-determinant."""
        if not ctx.datasets:
            return "no data sets"
        probe = ctx.datasets[0].first(1).to(device=ctx.device, dtype=ctx.model.dtype)
        if ctx.model.info.log_det_kind is LogDetKind.NONE and ctx.model.log_det(probe) is None:
            return "the model reports no log-determinant"
        return None

    def run(self, ctx: AuditContext) -> Iterator[Measurement]:
        """One measurement per data set; the sets' batches are the work units of a sharded run."""
        method = choose_method(ctx.option("method"), ctx.model.info.domain.numel)
        estimated_model = ctx.model.info.log_det_kind is LogDetKind.ESTIMATED
        totals = sample_counts(ctx)

        def work(unit: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
            index, start, stop = unit
            ds = ctx.datasets[index]
            x = ds.make(start, stop).to(device=ctx.device, dtype=ctx.model.dtype)
            with torch.no_grad():
                _, ld = shared_view(ctx, ctx.model, index, start, stop).forward_and_log_det(x)  # roundtrip's pass
            model_ld = np.full(len(x), math.nan) if ld is None else host(ld).reshape(-1)
            # salted by the batch's number in its set, as a single pass numbers them
            gen = ctx.generator(ds.name, start // max(1, ctx.batch_size))
            # a set begun after the deadline: the reference of one sample (the model's log-det of all)
            rows, stopped = late_rows(ctx, unit), [False]

            def stop_now() -> bool:
                stopped[0] = stopped[0] or ctx.overdue()
                return stopped[0]

            needed = np.isfinite(model_ld)
            value, err, bias, failed = _reference(ctx, x, needed & (np.arange(len(x)) < rows), method, gen, stop_now)
            # the samples whose reference the budget stopped short (the batch's, conservatively) or left out
            cut = needed & ((np.arange(len(x)) >= rows) | stopped[0])
            return model_ld, value, err, bias, failed, cut

        for ds, mine in zip(
            ctx.datasets,
            map_batches(
                ctx, totals, work, progress=set_progress(ctx, [d.name for d in ctx.datasets], totals), paced=True
            ),
            strict=True,
        ):
            if not mine:
                continue
            model_ld, ref, stderr, bias, failed, cut = (np.concatenate(column) for column in zip(*mine, strict=True))
            yield self._measure(ds.name, model_ld, ref, (stderr, bias), failed, method, estimated_model, ctx, cut)

    @staticmethod
    def _measure(
        name: str,
        model_ld: np.ndarray,
        ref: np.ndarray,
        bar: tuple[np.ndarray, np.ndarray],
        failed: np.ndarray,
        method: str,
        estimated_model: bool,
        ctx: AuditContext,
        cut: np.ndarray | None = None,
    ) -> Measurement:
        stderr, bias = bar  # the estimate's probe standard error and quadrature bias
        cut = np.zeros(len(failed), dtype=bool) if cut is None else cut
        missing = cut & np.isnan(ref)  # no reference: not judged (a stopped one still bounds from above)
        judged = ~failed & ~missing
        bad = ~(np.isfinite(model_ld) & np.isfinite(ref)) & judged
        with np.errstate(invalid="ignore"):
            raw = np.where(bad, np.inf, np.abs(model_ld - ref))[judged]
            scale = np.maximum(1.0, np.abs(ref[judged]))
            err = raw if method == "exact" else _unexplained(model_ld, ref, stderr, bad)[judged]
            rel = err / scale
        prefix = "estimate_" if estimated_model else ""
        metrics: dict[str, object] = {
            "n": len(failed),
            "model_log_det_kind": ctx.model.info.log_det_kind.value,
            "reference": "exact" if method == "exact" else "estimated",
            "nonfinite_fraction": float(bad.sum() / max(1, len(failed))),
            "reference_failed_fraction": float(failed.mean()) if len(failed) else 0.0,
        }
        if judged.any():  # errors of the judged samples only; none judged leaves nothing to gate
            metrics[f"{prefix}error"] = summarize(err)
            metrics[f"{prefix}rel_error"] = summarize(rel)
        if method != "exact":
            metrics["reference_stderr"] = summarize(stderr)
            metrics["reference_bias"] = summarize(bias)
            metrics["reference_probes"] = int(ctx.option("probes"))
            metrics["reference_steps"] = min(int(ctx.option("steps")), ctx.model.info.domain.numel)
            if judged.any():
                metrics["raw_error"] = summarize(raw)
                metrics["raw_rel_error"] = summarize(raw / scale)
        worst = summarize(rel)["max"]
        message = (
            f"largest log-det error {summarize(err)['max']:.3g} nats "
            f"(relative {worst:.3g}) against the {metrics['reference']} log|det J|"
        )
        if method != "exact":
            message += (
                f" (stochastic Lanczos quadrature, {metrics['reference_probes']} probes x "
                f"{metrics['reference_steps']} steps; log|det J| within [ref - bias - 3 stderr, ref + 3 stderr], "
                f"bias up to {summarize(bias)['max']:.3g} nats, stderr up to {summarize(stderr)['max']:.3g})"
            )
        if method != "exact" and judged.any():
            message += (
                f" beyond the estimate's one-sided bound (raw gap {summarize(raw)['max']:.3g} nats, relative "
                f"{summarize(raw / scale)['max']:.3g}: the quadrature over-estimates where J is ill-conditioned; "
                "logdet: {method: exact} settles it)"
            )
        if cut.any():
            metrics["budget_cut_fraction"] = float(cut.mean())
            message += (
                f"; the budget stopped the reference of {int(cut.sum())} of {len(cut)} sample(s) short "
                f"({int(missing.sum())} not computed, not judged; the others from the Lanczos steps reached, "
                "a looser upper bound)"
            )
        if estimated_model:
            message += "; the model's log-det is itself an estimate"
        if bad.any():
            message += f"; {int(bad.sum())} sample(s) non-finite"
        if failed.any():
            message += (
                f"; the reference log|det J| failed on {int(failed.sum())} sample(s) with a finite "
                "Jacobian (LU and SVD in float64 both gave no finite value: innaudit's failure, "
                "not the model's); they are not judged"
            )
        values = {"model_log_det": significant(model_ld, 6), "log_abs_det_j": significant(ref, 6)}
        return Measurement(name, metrics, message, {"values": values})
