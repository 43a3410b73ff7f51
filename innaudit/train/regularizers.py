"""Stabilizing regularizers for invertible networks, usable in any training loop.

Behrmann, Vicol, Wang, Grosse, Jacobsen, "Understanding and Mitigating Exploding Inverses in
Invertible Neural Networks", AISTATS 2021, sections 5-6 (https://arxiv.org/abs/2006.09347):

- :func:`fd_regularizer`, bi-directional finite differences (FD): penalizes how far a small
  step moves the output of ``F`` (forward term) and of ``F^-1`` (inverse term), a stochastic
  estimate of ``eps * (||J_F(x)||_F^2 + ||J_F^-1(z)||_F^2)`` around the data. It bounds both
  directions locally, so the smallest singular value of ``J_F`` is pushed up (the inverse term
  grows like ``1 / sigma_min^2``) and the largest one down.
- :func:`nf_regularizer`, the normalizing-flow objective with a small weight: ``coeff *
  NLL(x)`` under a standard-normal prior. Its ``-log|det J_F|`` term goes to ``+inf`` as any
  singular value goes to 0, so it keeps a supervised INN from collapsing a direction.

Usage in a training loop (``model(x) -> (z, log_det)``, ``model.inverse(z) -> x``)::

    from innaudit.train.regularizers import fd_regularizer, nf_regularizer
    z, log_det = model(x)
    loss = task_loss(z, y)
    if step % 10 == 0:           # the paper regularizes every 10th step
        loss = loss + fd_regularizer(lambda t: model(t)[0], model.inverse, x)
        # or: loss = loss + nf_regularizer(z, log_det, coeff=1e-5)
    loss.backward()

How to read a failure of a model trained without them: innaudit's ``roundtrip`` shows
non-finite or large reconstructions, and the Jacobian audits a tiny smallest singular value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FD_COEFF",
    "FD_EPS",
    "NF_COEFF",
    "fd_directions",
    "fd_forward",
    "fd_inverse",
    "fd_regularizer",
    "gaussian_nll",
    "nf_regularizer",
]

FD_EPS = 0.1
"""Finite-difference step of the paper's code (hard-coded there)."""
FD_COEFF = 1e-4
"""The paper's ``--fd_coeff`` and ``--fd_inv_coeff`` (CIFAR-10 classifiers)."""
NF_COEFF = 1e-5
"""The paper's ``--nf_coeff`` for classifiers (1e-6 for the 2-D regression toy)."""

Map = Callable[[Tensor], Any]


def _tensor(out: Any) -> Tensor:
    """``z`` from a map returning ``z`` or ``(z, log_det)``."""
    return out[0] if isinstance(out, (tuple, list)) else out


def fd_directions(like: Tensor, normalize: str = "column", generator: torch.Generator | None = None) -> Tensor:
    """Random directions shaped like ``like`` (batch first), Gaussian then normalized.

    Args:
        like: a batch ``(B, ...)`` giving shape, dtype and device.
        normalize: ``"column"`` reproduces the paper's code: the ``(B, D)`` matrix of directions
            is divided by the norm of each *column* (each feature across the batch, ``dim=0``),
            so a sample's direction has squared norm about ``D / B``, not 1 (a quirk of the paper's
            code: the comment there says "unit vector"). ``"sample"`` makes every sample's
            direction a unit vector.
        generator: optional ``torch.Generator`` for reproducible draws.
    """
    flat = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device).flatten(1)
    if normalize == "column":
        flat = flat / flat.norm(dim=0, keepdim=True).clamp_min(1e-12)
    elif normalize == "sample":
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        raise ValueError(f"normalize {normalize!r} is unknown; expected column or sample")
    return flat.view(like.shape)


def fd_forward(
    forward: Map,
    x: Tensor,
    *,
    eps: float = FD_EPS,
    coeff: float = FD_COEFF,
    normalize: str = "column",
    generator: torch.Generator | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """Forward FD term ``coeff * ||F(x) - F(x + eps d)||_F^2 / eps``.

    The squared Frobenius norm is summed over the whole batch and divided by ``eps`` (not
    ``eps^2``), as in the paper's code; to first order it equals ``coeff * eps * sum_i
    ||J_F(x_i) d_i||^2``. Pass ``z = F(x)`` when it is already computed (saves a forward).
    """
    z = _tensor(forward(x)) if z is None else z
    d = fd_directions(x, normalize, generator)
    moved = _tensor(forward(x + eps * d))
    return coeff * (z - moved).pow(2).sum() / eps


def fd_inverse(
    inverse: Map,
    x: Tensor,
    z: Tensor,
    *,
    eps: float = FD_EPS,
    coeff: float = FD_COEFF,
    normalize: str = "column",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inverse FD term ``coeff * ||x - F^-1(z + eps d')||_F^2 / eps`` with ``z = F(x)``.

    The reference is the clean input ``x`` (equal to ``F^-1(z)`` in exact arithmetic). To first
    order it is ``coeff * eps * sum_i ||J_F^-1(z_i) d'_i||^2``, which grows like
    ``1 / sigma_min(J_F)^2``. Unlike the paper's code, where ``F^-1(z + eps d')`` is computed
    without autograd and the gradient only reaches the parameters through the memory-saving
    backward pass, here autograd differentiates through ``F^-1`` and through ``z``, which gives
    the same gradient in exact arithmetic and works in an ordinary training loop.
    """
    d = fd_directions(z, normalize, generator)
    back = _tensor(inverse(z + eps * d))
    return coeff * (x - back).pow(2).sum() / eps


def fd_regularizer(
    forward: Map,
    inverse: Map,
    x: Tensor,
    *,
    eps: float = FD_EPS,
    coeff: float = FD_COEFF,
    inverse_coeff: float = FD_COEFF,
    normalize: str = "column",
    generator: torch.Generator | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """Bi-directional finite differences, ``fd_forward + fd_inverse`` (Behrmann et al., AISTATS 2021, Section 5).

    ``R = c * ||F(x) - F(x + eps d)||^2 / eps + c' * ||x - F^-1(F(x) + eps d')||^2 / eps`` with
    random directions ``d, d'`` (see :func:`fd_directions`), ``eps = 0.1``, ``c = c' = 1e-4``
    and, in the paper, applied on every 10th training step. Reference: Behrmann et al.,
    AISTATS 2021, section 6 ("bi-directional finite differences regularization").

    Args:
        forward: ``x -> z`` (or ``(z, log_det)``), differentiable.
        inverse: ``z -> x``, differentiable.
        x: the batch.
        eps, coeff, inverse_coeff: step and the two coefficients.
        normalize: ``"column"`` (the paper's code) or ``"sample"``.
        generator: optional generator for the directions.
        z: ``F(x)`` if already computed.
    """
    z = _tensor(forward(x)) if z is None else z
    return fd_forward(forward, x, eps=eps, coeff=coeff, normalize=normalize, generator=generator, z=z) + fd_inverse(
        inverse, x, z, eps=eps, coeff=inverse_coeff, normalize=normalize, generator=generator
    )


def gaussian_nll(z: Tensor, log_det: Tensor) -> Tensor:
    """Per-sample ``-log p(x) = 0.5 ||z||^2 + D/2 log(2 pi) - log|det J_F(x)|`` in nats."""
    flat = z.flatten(1)
    return 0.5 * flat.pow(2).sum(1) + 0.5 * flat.shape[1] * math.log(2 * math.pi) - log_det


def nf_regularizer(z: Tensor, log_det: Tensor, coeff: float = NF_COEFF) -> Tensor:
    """The NF objective as a small-weight regularizer: ``coeff * mean_i NLL(x_i)`` (nats).

    ``NLL(x) = 0.5 ||F(x)||^2 + D/2 log(2 pi) - log|det J_F(x)|`` (standard-normal prior). The
    paper adds it to the cross-entropy of its CIFAR-10 INN classifiers with ``coeff = 1e-5``
    (1e-6 for the 2-D regression toy); the ``-log|det|`` term is ``-sum log sigma_i``, which
    grows without bound as ``sigma_min -> 0``. Reference: Behrmann et al., AISTATS 2021,
    section 6 ("normalizing flow loss as regularizer"). The constant
    ``-D log 256`` of the paper's code is left out (it has no gradient).
    """
    return coeff * gaussian_nll(z, log_det).mean()
