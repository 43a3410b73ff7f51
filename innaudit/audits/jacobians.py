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

from ..linalg import choose_method, extreme_singular_values, jacobian_singular_values

__all__ = ["Spectrum", "measure", "min_median_max"]

Map = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Spectrum:
    """Per-sample extreme singular values (float64 numpy arrays, NaN where not finite).

    Attributes:
        method: ``"exact"`` or ``"matrix-free"``.
        forward_max, forward_min: of ``J_F(x)``.
        inverse_max, inverse_min: of ``J_F^-1(F(x))``.
        forward_iterations, inverse_iterations: JVP/VJP pairs per sample (matrix-free only).
        converged: per sample, whether both Lanczos runs met the tolerance (matrix-free only).
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

    @property
    def condition(self) -> np.ndarray:
        """``sigma_max / sigma_min`` of ``J_F`` per sample."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.forward_max / self.forward_min

    @property
    def cross_gap(self) -> np.ndarray:
        """``max(|log10(smin_F * smax_inv)|, |log10(smax_F * smin_inv)|)`` per sample: 0 for a
        numerically consistent pair of maps (``J_F^-1(F(x)) = J_F(x)^-1``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.abs(np.log10(self.forward_min * self.inverse_max))
            b = np.abs(np.log10(self.forward_max * self.inverse_min))
        return np.fmax(a, b)


def measure(forward: Map, inverse: Map, x: Tensor, *, method: str, tol: float, max_iter: int,
            generator: torch.Generator) -> Spectrum:
    """The four extreme singular values per sample of ``x`` (see the module docstring)."""
    chosen = choose_method(method, int(x[0].numel()))
    with torch.no_grad():
        z = forward(x)
    finite = torch.isfinite(z.reshape(len(z), -1)).all(1)
    if chosen == "exact":
        notes: list[str] = []
        fwd = _or_nan(lambda: jacobian_singular_values(forward, x), (len(x), int(x[0].numel())),
                      "forward", notes, x.device)
        inv = torch.full_like(fwd, math.nan)
        if finite.any():
            inv[finite] = _or_nan(lambda: jacobian_singular_values(inverse, z[finite]),
                                  (int(finite.sum()), fwd.shape[1]), "inverse", notes, fwd.device)
        return Spectrum("exact", _np(fwd[:, 0]), _np(fwd[:, -1]), _np(inv[:, 0]), _np(inv[:, -1]),
                        note="; ".join(notes))
    f, i = extreme_singular_values(forward, inverse, x, tol=tol, max_iter=max_iter,
                                   generator=generator)
    fmax, imax = _np(f.values), _np(i.values)
    with np.errstate(divide="ignore"):
        return Spectrum("matrix-free", fmax, 1.0 / imax, imax, 1.0 / fmax,
                        f.iterations.numpy(), i.iterations.numpy(),
                        (f.converged & i.converged).numpy())


def _or_nan(compute: Callable[[], Tensor], shape: tuple[int, int], which: str,
            notes: list[str], device: torch.device | str = "cpu") -> Tensor:
    """``compute()``, or NaN with a note when autograd cannot differentiate the map at all
    (e.g. an in-place write into a tensor autograd needs): a finding about the model."""
    try:
        return compute()
    except RuntimeError as exc:
        notes.append(f"the {which} map is not differentiable by autograd "
                     f"({str(exc).splitlines()[0][:120]})")
        return torch.full(shape, math.nan, dtype=torch.float64, device=device)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def min_median_max(values: np.ndarray) -> dict[str, float]:
    """``{min, median, max}`` over the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": float(finite.min()), "median": float(np.median(finite)),
            "max": float(finite.max())}
