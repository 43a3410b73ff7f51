"""The seam for autoregressive token blocks (TarFlow, STARFlow), read by the ``tokens`` audit.

A transformer autoregressive flow block maps a sequence ``h`` of ``T`` tokens of ``D`` values
``(B, T, D)`` to ``z`` token by token, in its own order: the token it handles at step ``t`` sits
at sequence position ``order[t]``, and its affine map ``z_t = (h_t - b_t) exp(-a_t)`` takes
``(a_t, b_t)`` from the tokens before it. Its forward pass computes every ``(a, b)`` at once with
a causal mask; its inverse computes them one token at a time from the tokens already inverted
(a KV cache), so errors made at step ``t`` feed every later step.

A block declares that structure by implementing :class:`AutoregressiveBlock`. The audits then
report errors per token in the block's own order (where they accumulate), the masked path's
log-scales ``a``, and the gap between the masked and the cached path.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["AutoregressiveBlock", "is_autoregressive"]


@runtime_checkable
class AutoregressiveBlock(Protocol):
    """A block over ``(B, T, D)`` token sequences with an autoregressive affine map.

    ``forward(h) -> (z, log_det)`` and ``inverse(z)`` as every block (``inverse`` may be the
    block's own iterative solver); besides:

    - ``token_order()``: ``(T,)`` integer tensor, the sequence position of the token handled at
      step ``t``;
    - ``affine_params(h)``: ``(a, b)``, each ``(B, T, D)`` in the block's order, as the masked
      forward pass computes them on input ``h``: the inverse sets ``x_t = z_t exp(a_t) + b_t``;
    - ``sequential_inverse(z)``: the token-by-token (cached) inverse, whatever ``inverse`` is.
    """

    def token_order(self) -> Tensor: ...

    def affine_params(self, h: Tensor) -> tuple[Tensor, Tensor]: ...

    def sequential_inverse(self, z: Tensor) -> Tensor: ...


def is_autoregressive(block: object) -> bool:
    """Whether ``block`` declares its token structure through :class:`AutoregressiveBlock`."""
    return isinstance(block, AutoregressiveBlock)
