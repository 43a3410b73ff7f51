"""Per-sample extreme singular values of ``J_F`` and ``J_F^-1``, shared by the Jacobian audits.

``measure`` returns, for a batch ``x`` and a bijection given by its two maps, the four numbers
``sigma_max(J_F(x))``, ``sigma_min(J_F(x))``, ``sigma_max(J_F^-1(z))``, ``sigma_min(J_F^-1(z))``
with ``z = F(x)``, by the exact or the matrix-free method of :mod:`innaudit.linalg`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from innaudit.linalg import (
    Map,
    NotMeasuredError,
    autograd_blind_reason,
    choose_method,
    extreme_singular_values,
    jacobian_singular_values,
)

__all__ = ["Checks", "Spectrum", "measure"]


@dataclass
class Checks:
    """The autograd checks of a pair of maps (:func:`~innaudit.linalg.autograd_blind_reason`),
    made at the first batch :func:`measure` sees (the inverse's at the first with a finite
    ``z``) and kept for the later batches and sets of one audit: a map that carries no graph
    carries none anywhere, so the check's cost is paid once per audit, not once per set."""

    forward: str | None = None
    inverse: str | None = None
    forward_done: bool = False
    inverse_done: bool = False


@dataclass(frozen=True)
class Spectrum:
    """Per-sample extreme singular values (float64 numpy arrays, NaN where not finite).

    Attributes:
        method: ``"exact"`` or ``"matrix-free"``.
        forward_max, forward_min: of ``J_F(x)``.
        inverse_max, inverse_min: of ``J_F^-1(F(x))``.
        forward_iterations, inverse_iterations: JVP/VJP pairs per sample (matrix-free only).
        converged: per sample, whether both Lanczos runs met the tolerance (matrix-free only).
        note: what the numbers cannot say (a map autograd could not differentiate...).
        derived: ``"inverse"`` when the inverse has no gradient and its values are the
            reciprocals of ``J_F`` at ``F^-1(z)``; ``"forward"`` the other way round; ``""``
            when both maps were differentiated.
        stopped: per sample, whether a ``stop`` callback (a budget's deadline) ended either
            Lanczos run before it converged (matrix-free only; None when none was stopped): its
            ``sigma_max`` values are then lower bounds, so its condition number is one too.
    """

    method: str
    forward_max: np.ndarray
    forward_min: np.ndarray
    inverse_max: np.ndarray
    inverse_min: np.ndarray
    forward_iterations: np.ndarray | None = None
    inverse_iterations: np.ndarray | None = None
    converged: np.ndarray | None = None
    note: str = ""
    derived: str = ""
    stopped: np.ndarray | None = None

    @property
    def condition(self) -> np.ndarray:
        """``sigma_max / sigma_min`` of ``J_F`` per sample."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.forward_max / self.forward_min

    @property
    def cross_gap(self) -> np.ndarray:
        """``max(|log10(smin_F * smax_inv)|, |log10(smax_F * smin_inv)|)`` per sample: 0 for a
        numerically consistent pair of maps (``J_F^-1(F(x)) = J_F(x)^-1``); NaN when any of the
        four values is NaN (an unknown gap, which the audit counts as a mismatch)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.abs(np.log10(self.forward_min * self.inverse_max))
            b = np.abs(np.log10(self.forward_max * self.inverse_min))
        return np.maximum(a, b)


def measure(
    forward: Map,
    inverse: Map,
    x: Tensor,
    *,
    method: str,
    tol: float,
    max_iter: int,
    generator: torch.Generator,
    stop: Callable[[], bool] | None = None,
    checks: Checks | None = None,
) -> Spectrum:
    """The four extreme singular values per sample of ``x`` (see the module docstring).

    Before any Jacobian, each map is checked to depend on its input through autograd
    (:func:`~innaudit.linalg.autograd_blind_reason`). When one map cannot be differentiated,
    its spectrum is the reciprocal of the other's (``J_F^-1(z) = J_F(F^-1(z))^-1``), taken at
    the point the blind map returns, with ``derived`` and ``note`` saying so (exact method);
    when neither can, or the matrix-free method would need the blind one,
    :class:`~innaudit.linalg.NotMeasuredError` says why. A Jacobian of zeros is never reported.
    ``stop`` (matrix-free): asked between Lanczos iterations; True ends them with the steps
    reached, and ``stopped`` says which samples. ``checks``: the autograd checks an earlier
    batch of the same maps made (:class:`Checks`, filled here; None checks this batch).
    """
    chosen = choose_method(method, int(x[0].numel()))
    with torch.no_grad():
        z = forward(x)
    finite = torch.isfinite(z.reshape(len(z), -1)).all(1)
    checks = Checks() if checks is None else checks
    if not checks.forward_done:
        checks.forward, checks.forward_done = autograd_blind_reason(forward, x), True
    if finite.any() and not checks.inverse_done:
        checks.inverse, checks.inverse_done = autograd_blind_reason(inverse, z[finite]), True
    f_blind = checks.forward
    i_blind = checks.inverse if finite.any() else None
    if f_blind and i_blind:
        raise NotMeasuredError(f"neither map can be differentiated: the forward map: {f_blind}; the inverse: {i_blind}")
    if (f_blind or i_blind) and chosen != "exact":
        raise NotMeasuredError(
            f"the {'forward map' if f_blind else 'inverse'}: {f_blind or i_blind}; "
            "the matrix-free method needs both maps' gradients; use method exact "
            "(dimension up to a few thousand) or give the map a gradient"
        )
    if f_blind or i_blind:
        return _derived(
            forward, inverse, x, z, finite, blind="forward" if f_blind else "inverse", reason=str(f_blind or i_blind)
        )
    if chosen == "exact":
        notes: list[str] = []
        fwd = _or_nan(
            lambda: jacobian_singular_values(forward, x), (len(x), int(x[0].numel())), "forward", notes, x.device
        )
        inv = torch.full_like(fwd, math.nan)
        if finite.any():
            inv[finite] = _or_nan(
                lambda: jacobian_singular_values(inverse, z[finite]),
                (int(finite.sum()), fwd.shape[1]),
                "inverse",
                notes,
                fwd.device,
            )
        return Spectrum(
            "exact", _np(fwd[:, 0]), _np(fwd[:, -1]), _np(inv[:, 0]), _np(inv[:, -1]), note="; ".join(notes)
        )
    f, i = extreme_singular_values(forward, inverse, x, tol=tol, max_iter=max_iter, generator=generator, stop=stop, z=z)
    fmax, imax = _np(f.values), _np(i.values)
    stopped = _stopped(f.stopped, i.stopped)
    with np.errstate(divide="ignore"):
        return Spectrum(
            "matrix-free",
            fmax,
            1.0 / imax,
            imax,
            1.0 / fmax,
            f.iterations.numpy(),
            i.iterations.numpy(),
            (f.converged & i.converged).numpy(),
            stopped=stopped,
        )


def _stopped(forward: Tensor | None, inverse: Tensor | None) -> np.ndarray | None:
    """Samples either Lanczos run was stopped on (None when neither stopped any)."""
    if forward is None and inverse is None:
        return None
    flags = [t.cpu().numpy() for t in (forward, inverse) if t is not None]
    return np.logical_or.reduce(flags)


def _derived(forward: Map, inverse: Map, x: Tensor, z: Tensor, finite: Tensor, *, blind: str, reason: str) -> Spectrum:
    """Exact spectra when one map is blind to autograd: the seen map's singular values at ``x``
    (or ``z``) and at the point the blind map gives, the blind map's as their reciprocals."""
    notes: list[str] = []
    n, dim = len(x), int(x[0].numel())
    nan = torch.full((n, dim), math.nan, dtype=torch.float64)
    seen, other = nan.clone(), nan.clone()
    if blind == "inverse":
        seen = _or_nan(lambda: jacobian_singular_values(forward, x), (n, dim), "forward", notes)
        if finite.any():
            with torch.no_grad():
                back = inverse(z[finite])
            other[finite] = _or_nan(
                lambda: jacobian_singular_values(forward, back), (int(finite.sum()), dim), "forward", notes
            )
        fwd, inv = seen, 1.0 / other.flip(1)
        how = (
            "the inverse has no gradient ({r}); its singular values are the reciprocals of "
            "J_F's at x' = F^-1(z) (J_F^-1(z) = J_F(x')^-1), and the cross-check compares J_F "
            "at x with J_F at x'"
        )
    else:
        if finite.any():
            seen[finite] = _or_nan(
                lambda: jacobian_singular_values(inverse, z[finite]), (int(finite.sum()), dim), "inverse", notes
            )
        fwd, inv = 1.0 / seen.flip(1), seen
        how = (
            "the forward map has no gradient ({r}); its singular values are the reciprocals of "
            "J_F^-1's at z = F(x), so the cross-check is void (it compares a spectrum with itself)"
        )
    notes.insert(0, how.format(r=reason))
    return Spectrum(
        "exact", _np(fwd[:, 0]), _np(fwd[:, -1]), _np(inv[:, 0]), _np(inv[:, -1]), note="; ".join(notes), derived=blind
    )


def _or_nan(
    compute: Callable[[], Tensor],
    shape: tuple[int, int],
    which: str,
    notes: list[str],
    device: torch.device | str = "cpu",
) -> Tensor:
    """``compute()``, or NaN with a note when autograd cannot differentiate the map at all
    (e.g. an in-place write into a tensor autograd needs): a finding about the model."""
    try:
        return compute()
    except RuntimeError as exc:
        notes.append(f"the {which} map is not differentiable by autograd ({str(exc).splitlines()[0][:120]})")
        return torch.full(shape, math.nan, dtype=torch.float64, device=device)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()
