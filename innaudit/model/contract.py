"""``InvertibleModel``: the single contract between audits and whatever built the model.

Audits call only ``forward``, ``inverse``, ``log_det`` and ``blocks``. The wrapper guarantees
what the audits rely on, whichever library built the model:

- the module is in ``eval()`` mode during every call and the caller's mode is restored after;
- inputs are cloned, so a model that writes into its input, or a cache keyed on the input
  object, cannot make a round trip look exact;
- calls run without autograd unless the caller is inside ``torch.enable_grad()`` and asks for it
  (``grad=True``), as the attack and Jacobian audits do;
- a model whose ``forward`` returns ``(z, log_det)`` is normalized to ``z`` for ``forward``;
- every value leaving the model outside autograd (``z``, ``x``, the log-det, a block's
  ``scales``) is detached here, once, so a parameter view or a tensor built under
  ``torch.enable_grad()`` inside the model never reaches an audit's numpy summary; :func:`host`
  then moves a detached value to the host as float64 numpy;
- the log-det is checked once, on the first call that returns one: one number per sample
  (``(B,)``, ``(B, 1)``) or one for the batch (a scalar); any other shape is refused with a
  :class:`LogDetShapeError` naming the shape given and the one expected, raised only where a
  log-det is asked for, so the audits that do not need it (a round trip) still run;
- a latent that is a list/tuple/dict of tensors (a multi-scale flow's levels) is offered as one
  flat ``(B, D)`` tensor (:class:`~innaudit.model.latent.LatentStructure`), and ``inverse`` takes that
  flat view back; ``latent`` holds the structure. A single-tensor latent is passed as it is.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.model.latent import LatentStructure, split_output

__all__ = ["InverseKind", "InvertibleModel", "LogDetKind", "LogDetShapeError", "ModelInfo", "PriorFn", "host"]

Fn = Callable[[nn.Module, Tensor], Any]
"""A map given the module that holds the parameters, so a copy of the model (float64, another
device) reuses the same functions with its own module."""

PriorFn = Callable[[nn.Module, Tensor, float, torch.Generator], Any]
"""``(module, eps, temperature, generator) -> z``: the model's own prior draw from standard normal
noise ``eps`` of the flat latent's shape, at a temperature (per-level priors of a multi-scale
flow); ``z`` is structured like the model's latent, or flat."""


class InverseKind(str, Enum):
    """How the model computes its inverse."""

    ANALYTIC = "analytic"
    ITERATIVE = "iterative"


class LogDetKind(str, Enum):
    """What the model's log-determinant is."""

    EXACT = "exact"
    ESTIMATED = "estimated"
    NONE = "none"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata the audits need besides the two maps.

    Attributes:
        domain: shape and range of the inputs.
        inverse_kind: analytic, or iterative with ``inverse_tolerance`` / ``inverse_max_iter``.
        log_det_kind: exact, estimated, or none.
        source: where the model came from (file, factory, loader) as plain strings.
        architecture: the architecture name when known (zoo name or class name).
        inverse_tolerance: declared tolerance of an iterative inverse.
        inverse_max_iter: declared iteration cap of an iterative inverse.
    """

    domain: DataDomain
    inverse_kind: InverseKind = InverseKind.ANALYTIC
    log_det_kind: LogDetKind = LogDetKind.NONE
    source: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    inverse_tolerance: float | None = None
    inverse_max_iter: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the report's ``target`` block."""
        return {
            "architecture": self.architecture,
            "domain": self.domain.to_dict(),
            "inverse_kind": self.inverse_kind.value,
            "log_det_kind": self.log_det_kind.value,
            "inverse_tolerance": self.inverse_tolerance,
            "inverse_max_iter": self.inverse_max_iter,
            "source": dict(self.source),
        }


class LogDetShapeError(ValueError):
    """The model's log-det is not one number per sample: what was returned, what was expected."""


def host(t: Tensor) -> np.ndarray:
    """A model's value as float64 numpy on the host (detached first; the one way values leave
    the device for summaries)."""
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _detached(value: Any, grad: bool) -> Any:
    """``value`` (a tensor or a structure of tensors) detached unless the caller asked for grad."""
    if grad:
        return value
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, dict):
        return type(value)((k, _detached(v, grad)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v, grad) for v in value)
    return value


def _per_element_log_det(out: Any, x: Tensor) -> bool:
    """``(z, t)`` where ``z`` has the input's size per sample and ``t`` is a batch-first tensor of
    two or more dimensions: a log-det of the wrong shape, not a two-level latent (the levels of
    a bijection's latent add up to the input's size, ``z`` alone already does)."""
    return (
        isinstance(out, (tuple, list))
        and len(out) == 2
        and all(isinstance(t, Tensor) for t in out)
        and out[1].dim() >= 2
        and len(out[0]) == len(x) == len(out[1])
        and out[0][0].numel() == x[0].numel()
    )


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _log_det_problem(ld: Any, batch: int) -> str | None:
    """Why ``ld`` is not a log-det of a batch of ``batch`` samples (None when it is one)."""
    if ld is None or isinstance(ld, (int, float)):
        return None
    if isinstance(ld, Tensor) and (ld.numel() == 1 or (ld.numel() == batch and ld.dim() <= 2 and len(ld) == batch)):
        return None
    given = _shape(ld) if isinstance(ld, Tensor) else type(ld).__name__
    return (
        f"the model's log-det has shape {given} for a batch of {batch}; expected ({batch},) "
        "(one log|det J_F(x)| per sample) or a scalar; sum a per-element log-det over every "
        "dimension but the batch"
    )


def _first(out: Any) -> Tensor:
    """The tensor of an inverse's output: ``x`` itself, or the first element of ``(x, log_det)``."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Tensor):
        return out
    raise TypeError(f"the model returned {type(out).__name__}; expected a tensor or a (tensor, log_det) tuple")


class InvertibleModel:
    """A bijection ``F`` with ``forward`` (data to latent) and ``inverse`` (latent to data).

    Args:
        module: the ``nn.Module`` holding the parameters (its train/eval mode is managed here).
        forward_fn: ``(module, x) -> z`` or ``(z, log_det)``.
        inverse_fn: ``(module, z) -> x`` (or ``(x, ...)``).
        info: metadata, see :class:`ModelInfo`.
        log_det_fn: optional ``(module, x) -> log|det J_F(x)|`` per sample; by default the second
            element of ``forward_fn``'s output is used when there is one.
        blocks_fn: optional ``module -> sub-blocks`` as ``InvertibleModel`` objects.
        latent: the latent's structure when known in advance; otherwise it is read from the first
            ``forward`` call that returns a structured latent.
        prior_fn: optional prior sampler (:data:`PriorFn`) for per-level priors and temperatures.
    """

    def __init__(
        self,
        module: nn.Module,
        forward_fn: Fn,
        inverse_fn: Fn,
        info: ModelInfo,
        log_det_fn: Fn | None = None,
        blocks_fn: Callable[[nn.Module], Sequence[InvertibleModel]] | None = None,
        latent: LatentStructure | None = None,
        prior_fn: PriorFn | None = None,
    ) -> None:
        self.module = module
        self.info = info
        self._forward = forward_fn
        self._inverse = inverse_fn
        self._log_det = log_det_fn
        self._blocks = blocks_fn
        self._latent = latent
        self._prior = prior_fn
        self._log_det_error: str | None = None
        """Set on the first call that returns a log-det of the wrong shape (checked once)."""
        self._log_det_checked = False

    # -- state management --------------------------------------------------------------------
    @contextlib.contextmanager
    def _calling(self, grad: bool) -> Iterator[None]:
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                yield
        finally:
            self.module.train(was_training)

    @staticmethod
    def _prepare(x: Tensor, grad: bool) -> Tensor:
        # A clone, so the model can neither alter the caller's tensor nor hand it back as "z".
        return x.clone() if grad else x.detach().clone()

    # -- the contract --------------------------------------------------------------------------
    def _split(self, x: Tensor, grad: bool) -> tuple[Any, Any]:
        """The model's ``forward`` output as ``(z, log_det)``, detached unless ``grad``; a
        per-element log-det is set apart (not read as a latent level) and recorded."""
        out = self._forward(self.module, self._prepare(x, grad))
        z, ld = (out[0], out[1]) if _per_element_log_det(out, x) else split_output(out)
        self._check_log_det(ld, len(x))
        return _detached(z, grad), _detached(ld, grad)

    def _check_log_det(self, ld: Any, batch: int) -> None:
        if ld is None or self._log_det_checked:
            return
        self._log_det_checked = True
        self._log_det_error = _log_det_problem(ld, batch)

    def forward(self, x: Tensor, *, grad: bool = False) -> Tensor:
        """``z = F(x)`` for a batch ``x`` (batch first); a structured latent comes flat ``(B, D)``."""
        with self._calling(grad):
            return self._flat(self._split(x, grad)[0])

    def forward_and_log_det(self, x: Tensor, *, grad: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(F(x), log|det J_F(x)|)`` with the log-det of shape ``(B,)``; None when the model
        reports none.

        Raises:
            LogDetShapeError: the model's log-det is not one number per sample (or one scalar).
        """
        with self._calling(grad):
            z, ld = self._split(x, grad)
            z = self._flat(z)
            if self._log_det is not None:
                ld = _detached(self._log_det(self.module, self._prepare(x, grad)), grad)
                self._check_log_det(ld, len(x))
            if ld is None:
                return z, None
            if self._log_det_error is not None or _log_det_problem(ld, len(x)) is not None:
                raise LogDetShapeError(self._log_det_error or _log_det_problem(ld, len(x)))
            if isinstance(ld, Tensor):
                return z, ld.reshape(-1).expand(len(z)) if ld.numel() == 1 else ld.reshape(len(z))
            return z, torch.full((len(z),), float(ld), dtype=z.dtype, device=z.device)

    def inverse(self, z: Tensor, *, grad: bool = False) -> Tensor:
        """``x = F^-1(z)`` for a batch ``z`` (the flat view when the latent is structured)."""
        with self._calling(grad):
            return _detached(_first(self._inverse(self.module, self._structured(self._prepare(z, grad)))), grad)

    def scales(self, h: Tensor) -> Tensor | None:
        """The block's affine scales ``g(h)`` when its module exposes ``scales(h)`` (coupling
        blocks), detached and flat ``(B, -1)``; None when it exposes none."""
        scales = getattr(self.module, "scales", None)
        if not callable(scales):
            return None
        with self._calling(False):
            g = scales(self._prepare(h, False))
        return g.detach().reshape(len(h), -1) if isinstance(g, Tensor) else None

    @property
    def latent(self) -> LatentStructure | None:
        """The latent's structure once known (a structured latent seen or declared), else None."""
        return self._latent

    @property
    def has_prior(self) -> bool:
        """Whether the model brings its own prior sampler (per-level priors)."""
        return self._prior is not None

    def sample_prior(self, eps: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
        """A prior draw in the flat view from standard normal noise ``eps`` ``(B, D)``.

        With the model's own prior (per-level priors) that prior at ``temperature``; otherwise
        ``temperature * eps``, the standard normal prior.
        """
        if self._prior is None:
            return temperature * eps
        with self._calling(False):
            return self._flat(self._prior(self.module, eps, temperature, generator))

    def carry(self, z: Tensor) -> Tensor:
        """What the next block of a chain takes from this block's output ``z = forward(h)``:
        ``z`` itself, or leaf 0 of a splitting block's ``[kept, z_i]`` (a multi-scale flow
        factors ``z_i`` out there and carries ``kept`` on)."""
        latent = self._latent
        return z if latent is None or latent.single else latent.leaf(z, 0)

    def _flat(self, z: Any) -> Tensor:
        if isinstance(z, Tensor) and (
            self._latent is None or self._latent.single or (z.dim() == 2 and z.shape[1] == self._latent.dim)
        ):
            return z
        structure = LatentStructure.of(z)
        if self._latent is None:
            self._latent = structure
        elif structure != self._latent:
            raise ValueError(
                f"the model's latent changed structure: {structure.describe()} after {self._latent.describe()}"
            )
        return structure.flatten(z)

    def _structured(self, z: Tensor) -> Any:
        if self._latent is None or self._latent.single:
            return z
        return self._latent.unflatten(z)

    def log_det(self, x: Tensor) -> Tensor | None:
        """Per-sample ``log|det J_F(x)|`` as the model reports it, or None."""
        return self.forward_and_log_det(x)[1]

    def blocks(self) -> Sequence[InvertibleModel]:
        """The invertible sub-blocks in forward order; empty when the model is not composite."""
        return tuple(self._blocks(self.module)) if self._blocks is not None else ()

    # -- conveniences --------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's first floating parameter (float32 when it has none)."""
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def copy_as(self, dtype: torch.dtype) -> InvertibleModel:
        """An independent deep copy with parameters and buffers cast to ``dtype``.

        Used for the float64 reference run that separates ill-conditioning (float64 fails too)
        from lack of precision (float64 is fine).
        """
        return self._rebuild(copy.deepcopy(self.module).to(dtype=dtype), self.info)

    def _rebuild(self, module: nn.Module, info: ModelInfo) -> InvertibleModel:
        return InvertibleModel(
            module, self._forward, self._inverse, info, self._log_det, self._blocks, self._latent, self._prior
        )  # a fresh model: its log-det is checked again on its first call

    def with_info(self, **changes: Any) -> InvertibleModel:
        """A model sharing the module and the maps, with some :class:`ModelInfo` fields replaced."""
        return self._rebuild(self.module, replace(self.info, **changes))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> InvertibleModel:
        """Move the parameters (in place, like ``nn.Module.to``) and return ``self``."""
        self.module.to(device=device, dtype=dtype)
        return self
