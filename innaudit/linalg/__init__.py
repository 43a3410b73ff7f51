"""Jacobians and their extreme singular values, exact or matrix-free.

Everything here works on a *batched* map ``fn``: a function from a batch ``(B, *in_shape)`` to a
batch ``(B, *out_shape)`` that treats samples independently (``fn(x)[i]`` depends only on
``x[i]``), e.g. ``lambda t: model.forward(t, grad=True)``. The Jacobian of sample ``i`` is
``J_i = d fn(x)[i] / d x[i]`` flattened to ``(prod(out_shape), prod(in_shape))``.

Two methods (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 4):

- exact (:func:`jacobian`, :func:`jacobian_singular_values`): the full Jacobian of every sample
  with ``torch.func`` (``vmap`` over ``jacrev`` or ``jacfwd``), then an SVD in float64. Cost:
  ``min(in, out)`` VJPs/JVPs per sample, batched; memory ``B * in * out``. For dimensions up to a
  few thousand (:mod:`.exact`). The reference code built the same matrix one backward pass per row, per sample.
- matrix-free (:func:`top_singular_value`, :func:`extreme_singular_values`): Lanczos on
  ``J^T J`` through one JVP and one VJP per iteration, with full reorthogonalization, batched
  over samples. It finds ``sigma_max`` reliably; ``sigma_min`` of a bijection is found as
  ``1 / sigma_max`` of the inverse's Jacobian at ``z = F(x)`` (Lanczos on ``J^T J`` converges
  slowly, and in squared condition, at the small end). Convergence: a Ritz value ``theta`` of
  ``J^T J`` is accepted when its residual ``beta_k |e_k^T y|`` is at most ``tol * theta``; then
  ``J^T J`` has an eigenvalue within ``tol * theta`` of ``theta``, so ``sigma`` is within
  about ``tol / 2`` (relative). Iteration counts (JVP/VJP pairs) are returned per sample
  (:mod:`.lanczos`).

torch.func needs the map to be functional: :class:`~innaudit.model.contract.InvertibleModel` clones its
input, so it is. Where ``vmap`` cannot batch a module (in-place ops on captured tensors,
data-dependent Python control flow such as a fixed-point loop that tests convergence with
``.item()``), :func:`jacobian` falls back to a per-sample loop of ``torch.func.jacrev`` (and, if
that fails too, to ``torch.autograd.functional.jacobian``); the matrix-free JVP falls back to
``torch.autograd.functional.jvp`` (double-backward) where forward-mode AD is missing.
All computations run under ``torch.enable_grad()``: pass a map that asks the model for
autograd (``grad=True``); a map that disables grad inside itself gives zero Jacobians.
"""

from __future__ import annotations

from innaudit.linalg._common import Map
from innaudit.linalg.depends import NotMeasuredError, autograd_blind_reason
from innaudit.linalg.exact import dense_extremes, jacobian, jacobian_singular_values, log_abs_det
from innaudit.linalg.lanczos import SpectrumEstimate, extreme_singular_values, log_abs_det_estimate, top_singular_value

__all__ = [
    "EXACT_MAX_DIM",
    "Map",
    "NotMeasuredError",
    "SpectrumEstimate",
    "autograd_blind_reason",
    "choose_method",
    "dense_extremes",
    "extreme_singular_values",
    "jacobian",
    "jacobian_singular_values",
    "log_abs_det",
    "log_abs_det_estimate",
    "top_singular_value",
]

EXACT_MAX_DIM = 4096
"""Above this dimension ``method="auto"`` goes matrix-free (a 4096^2 float32 Jacobian is 64 MiB
per sample)."""


def choose_method(method: str, dim: int) -> str:
    """``"exact"`` or ``"matrix-free"`` for ``method`` in ``auto|exact|matrix-free``."""
    if method == "auto":
        return "exact" if dim <= EXACT_MAX_DIM else "matrix-free"
    if method in ("exact", "matrix-free"):
        return method
    raise ValueError(f"method {method!r} is unknown; expected auto, exact or matrix-free")
