"""The apple/ml-tarflow calling convention (TarFlow; STARFlow's image models follow it too).

A model in this convention (``transformer_flow.Model``) has:

- ``forward(x, y=None) -> (z, outputs, logdets)``: ``x`` an image ``(B, C, H, W)``, ``z`` the
  patch sequence ``(B, T, D)`` (``patchify`` is ``F.unfold``), ``outputs`` every block's
  output, ``logdets`` the sum over blocks of each block's log-det **averaged** over the ``T D``
  dimensions (``-xa.mean(dim=[1, 2])``);
- ``reverse(z, y=None, guidance=0, ...)``, which first multiplies ``z`` by ``var.sqrt()``: it
  maps standard normal noise to an image, so the inverse of ``forward`` is
  ``reverse(z / var.sqrt())``; ``var`` is a ``(T, D)`` buffer (ones in the NVP mode, a learned
  prior variance in the VP mode);
- ``blocks``: its ``MetaBlock`` s, each with ``forward(x) -> (z, mean log-det)``,
  ``reverse(z)`` (the KV-cached token-by-token pass), ``permutation`` (identity or flip) and
  ``proj_out`` (the head whose output, shifted by one token, is ``(xa, xb)``).

The adapter multiplies the log-det by ``T D`` (back to a sum), calls ``reverse(z / var.sqrt())``
with ``guidance=0`` (guided sampling changes ``xa``/``xb`` and is not the inverse of
``forward``), draws prior samples as ``sqrt(var) * eps``, and says all of that in the report.
Blocks: the patchify step, then one block per ``MetaBlock`` with the token structure of
:class:`~innaudit.model.autoregressive.AutoregressiveBlock` (its order read by applying the
block's ``permutation`` to the positions; ``(xa, xb)`` read from ``proj_out`` by a forward hook
during the masked pass). The data domain, unless the module declares one: ``(C, img_size,
img_size)`` in ``[-1, 1]`` with 256 levels (8-bit images normalized as its ``train.py`` does;
``--range`` overrides it). Recognized by its methods and attributes, without importing anything.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "declared_domain", "matches"]

LIBRARY = "ml-tarflow convention"

_KINDS: dict[str, Any] = {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def _takes(method: Any, name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def matches(obj: Any) -> bool:
    """An ``nn.Module`` with ``reverse(z, ..., guidance=...)``, ``patchify`` / ``unpatchify``,
    a ``var`` tensor and ``blocks``, and no ``inverse``."""
    return (
        isinstance(obj, nn.Module)
        and callable(getattr(obj, "reverse", None))
        and not callable(getattr(obj, "inverse", None))
        and _takes(obj.reverse, "guidance")
        and callable(getattr(obj, "patchify", None))
        and callable(getattr(obj, "unpatchify", None))
        and isinstance(getattr(obj, "var", None), Tensor)
        and isinstance(getattr(obj, "blocks", None), nn.ModuleList)
    )


def _dims(module: Any) -> tuple[int, int]:
    """``(T, D)``: tokens and values per token, from the ``var`` buffer's shape."""
    var = module.var
    if var.dim() != 2:
        raise LoadError(f"{type(module).__name__}.var has shape {tuple(var.shape)}; expected (tokens, channels)")
    return int(var.shape[0]), int(var.shape[1])


def declared_domain(obj: Any) -> DataDomain | None:
    """``(C, img_size, img_size)`` in ``[-1, 1]``, 256 levels, from ``img_size``, ``patch_size``
    and ``var``; None when those attributes are missing or do not fit together."""
    size, patch = getattr(obj, "img_size", None), getattr(obj, "patch_size", None)
    if not isinstance(size, int) or not isinstance(patch, int) or patch <= 0 or size % patch:
        return None
    tokens, dim = _dims(obj)
    if tokens != (size // patch) ** 2 or dim % (patch * patch):
        return None
    return DataDomain(shape=(dim // (patch * patch), size, size), low=-1.0, high=1.0, levels=256)


def _forward(module: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    z, _, logdets = module(x)
    tokens, dim = _dims(module)
    log_det = logdets * (tokens * dim)
    return z, log_det.expand(len(z)) if log_det.dim() == 0 else log_det


def _inverse(module: Any, z: Tensor) -> Tensor:
    return module.reverse(z / module.var.sqrt().to(z.dtype), guidance=0)


def _prior(module: Any, eps: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    tokens, dim = _dims(module)
    return temperature * eps.reshape(len(eps), tokens, dim) * module.var.sqrt().to(eps.dtype)


class PatchifyView(nn.Module):
    """The model's ``patchify`` / ``unpatchify`` as a block (log-det 0)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return cast(Any, self.model).patchify(x), x.new_zeros(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return cast(Any, self.model).unpatchify(z)


class MetaBlockView(nn.Module):
    """One ``MetaBlock`` with the zoo block contract and the token structure.

    ``forward`` multiplies the block's mean log-det by ``T D``; ``inverse`` is its ``reverse``
    (no guidance); ``affine_params`` reads ``proj_out``'s output during the masked pass and
    shifts it by one token as the block does (token 0 gets zeros), ``(xa, xb)`` (``xa = 0``
    when the block predicts a shift only).
    """

    log_det_kind = "exact"

    def __init__(self, block: nn.Module, tokens: int, dim: int) -> None:
        super().__init__()
        self.block = block
        self.tokens, self.dim = tokens, dim

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = self.block(h)
        log_det = log_det * (self.tokens * self.dim)
        return z, log_det.expand(len(z)) if log_det.dim() == 0 else log_det

    def inverse(self, z: Tensor) -> Tensor:
        return cast(Any, self.block).reverse(z.clone())

    def sequential_inverse(self, z: Tensor) -> Tensor:
        return self.inverse(z)

    def token_order(self) -> Tensor:
        positions = torch.arange(self.tokens, dtype=torch.float64).view(1, self.tokens, 1)
        return cast(Any, self.block).permutation(positions).view(-1).round().long()

    def affine_params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        seen: list[Tensor] = []
        hook = cast(Any, self.block).proj_out.register_forward_hook(lambda m, i, out: seen.append(out))
        try:
            self.block(h)
        finally:
            hook.remove()
        if len(seen) != 1:
            raise LoadError(
                f"{type(self.block).__name__}.proj_out ran {len(seen)} times in one forward pass; expected 1"
            )
        out = seen[0].float() if seen[0].dtype not in (torch.float32, torch.float64) else seen[0]
        out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
        if out.shape[-1] == 2 * self.dim:
            xa, xb = out.chunk(2, dim=-1)
            return xa, xb
        return torch.zeros_like(out), out


def _views(module: Any) -> list[nn.Module]:
    tokens, dim = _dims(module)
    views: list[nn.Module] = [PatchifyView(module)]
    for block in module.blocks:
        if not all(callable(getattr(block, n, None)) for n in ("reverse", "permutation")) or not isinstance(
            getattr(block, "proj_out", None), nn.Module
        ):
            return []
        views.append(MetaBlockView(block, tokens, dim))
    return views


def _blocks(domain: DataDomain):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        views = _views(module)
        names = ["patchify"] + [f"MetaBlock[{i}]" for i in range(len(views) - 1)]
        return [
            InvertibleModel(v, _call, _call_inverse, ModelInfo(domain=domain, architecture=name, **_KINDS))
            for v, name in zip(views, names, strict=True)
        ]

    return blocks


def _call(module: nn.Module, x: Tensor) -> Any:
    return module(x)


def _call_inverse(module: nn.Module, z: Tensor) -> Any:
    return cast(Any, module).inverse(z)


NOTE = (
    "ml-tarflow convention: the model's log-det (a mean over the {n} = {t} x {d} dimensions) is "
    "multiplied by {n} to a sum; the inverse is reverse(z / var.sqrt(), guidance=0), the exact "
    "inverse of forward (guided sampling changes the scales and is not audited); prior draws "
    "are sqrt(var) * eps"
)


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a model of the ml-tarflow convention (see the module docstring).

    Raises:
        LoadError: a condition was given (class labels are not audited: ``y=None`` uses the
            mean class embedding, as the convention does), or ``var`` is not ``(T, D)``.
    """
    if condition is not None:
        raise LoadError(
            f"--condition was given, but {type(obj).__name__} follows the ml-tarflow convention, "
            "whose class label innaudit does not pass (y=None: the mean class embedding); drop --condition"
        )
    tokens, dim = _dims(obj)
    info = ModelInfo(
        domain=domain, source={**source, "library": "ml-tarflow"}, architecture=type(obj).__name__, **_KINDS
    )
    blocks_fn = _blocks(domain) if _views(obj) else None
    model = InvertibleModel(obj, _forward, _inverse, info, blocks_fn=blocks_fn, prior_fn=_prior)
    return Adapted(model, (NOTE.format(n=tokens * dim, t=tokens, d=dim),))
