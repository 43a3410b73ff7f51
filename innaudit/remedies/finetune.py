"""The repair's fine-tune: a short run of Adam on the training data with the model's objective,
plus the chosen regularizers on every ``every``-th step.

Each step draws a minibatch (with replacement) from a ``torch.Generator`` seeded from the repair's
seed, dequantizes it with ``U(0, bin_width)`` noise when the data domain is quantized (as the
recipes train), and computes the task loss (:mod:`innaudit.remedies.objective`); on regularized
steps it adds the FD term (:mod:`innaudit.remedies.fd`) and, for a supervised INN, the NF term
(:mod:`innaudit.remedies.nf`). A step whose loss or gradient is non-finite is skipped (as a loss
scaler does) and counted. The module stays in eval mode (no ActNorm re-initialization, no
dropout) and the run is single-threaded with deterministic algorithms, so the same seed gives
bitwise the same weights; ``on_step(steps_done)`` (the monitor) is called before the first step
and after each one.

**Which weights it keeps.** Every ``check_every`` steps (and at the end) the objective is
measured on a validation split kept out of the minibatches (one fixed dequantization draw), and
the fine-tune returns the weights with the lowest value among the eligible checks. A fine-tune
that only recovers the likelihood after a bounded scale may keep step 0 (the remedy alone): a
model that overfit its training data loses held-out likelihood with every further step. With a
regularizer in the plan, step 0 is not eligible: the regularizer has to act.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from innaudit.core.domain import DataDomain
from innaudit.core.errors import UsageError
from innaudit.core.seeding import stable_seed
from innaudit.model.contract import InvertibleModel
from innaudit.remedies.fd import FDSettings, fd_term
from innaudit.remedies.nf import NFSettings, nf_term
from innaudit.remedies.objective import Objective, task_loss, validation_loss
from innaudit.train.common import single_threaded

__all__ = ["FineTuneResult", "FineTuneSettings", "Validation", "dequantize", "fine_tune"]


@dataclass(frozen=True)
class FineTuneSettings:
    """How long and how hard the fine-tune trains, and with which regularizers."""

    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 128
    every: int = 10
    fd: FDSettings | None = None
    nf: NFSettings | None = None

    def check(self) -> None:
        """UsageError for a setting that cannot train."""
        if self.steps < 0 or self.batch_size < 1 or self.every < 1:
            raise UsageError(
                f"fine-tune steps={self.steps}, batch size={self.batch_size}, every={self.every}; expected "
                "steps >= 0 and a batch size and an interval of at least 1"
            )
        if not (0 < self.lr < math.inf):
            raise UsageError(f"fine-tune learning rate {self.lr!r}; expected a positive number such as 1e-3")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report and the checkpoint's provenance."""
        return asdict(self)


@dataclass(frozen=True)
class Validation:
    """The validation split and when to measure it: every ``every`` steps, keeping the best
    check at step ``first`` or later."""

    x: Tensor
    labels: Tensor | None
    every: int
    first: int = 0


@dataclass(frozen=True)
class FineTuneResult:
    """What the fine-tune did."""

    steps_done: int
    skipped_nonfinite: int
    first_loss: float
    last_loss: float
    stopped: str = ""
    """Why it stopped before ``steps`` (the budget), empty when it ran them all."""
    losses: tuple[float, ...] = field(default=(), repr=False)
    kept_step: int | None = None
    """The step whose weights were kept (None: the last, no validation)."""
    validation: tuple[tuple[int, float], ...] = ()
    """``(steps done, validation objective)`` at every check."""
    regularized: int = 0
    """Steps that carried the regularizers (every ``every``-th, with FD or NF in the settings)."""
    skipped_regularized: int = 0
    """Of those, the ones skipped as non-finite: a regularizer that is non-finite on every one
    of its steps never acted."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (no wall times)."""
        return {
            "steps_done": self.steps_done,
            "skipped_nonfinite": self.skipped_nonfinite,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "stopped": self.stopped,
            "kept_step": self.kept_step,
            "validation": [list(v) for v in self.validation],
            "regularized": self.regularized,
            "skipped_regularized": self.skipped_regularized,
        }


def dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    """``x + U(0, bin_width)`` for quantized data (data at the lower edges of their bins)."""
    width = domain.bin_width
    if not width:
        return x
    return x + torch.rand(x.shape, generator=generator, dtype=x.dtype) * width


def _finite_grads(params: list[torch.nn.Parameter]) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)


def _loss(
    model: InvertibleModel,
    objective: Objective,
    x: Tensor,
    y: Tensor | None,
    settings: FineTuneSettings,
    regularize: bool,
    generator: torch.Generator,
) -> Tensor:
    step = task_loss(model, objective, x, y)
    loss = step.loss
    if regularize and settings.fd is not None:
        loss = loss + fd_term(model, x, step.z, settings.fd, generator)
    if regularize and settings.nf is not None and step.z is not None and step.log_det is not None:
        loss = loss + nf_term(step.z, step.log_det, settings.nf)
    return loss


class _Keeper:
    """Measures the validation objective at the checks and holds the best eligible weights."""

    def __init__(self, model: InvertibleModel, objective: Objective, validation: Validation | None, seed: int) -> None:
        self.model, self.objective, self.validation = model, objective, validation
        self.best = math.inf
        self.step: int | None = None
        self.state: dict[str, Tensor] | None = None
        self.curve: list[tuple[int, float]] = []
        if validation is not None:
            generator = torch.Generator().manual_seed(stable_seed(seed, "repair", "validation"))
            self.x = dequantize(validation.x, model.info.domain, generator).to(model.dtype)

    def check(self, steps_done: int, last: bool = False) -> None:
        v = self.validation
        if v is None or (steps_done % v.every and not last) or any(s == steps_done for s, _ in self.curve):
            return
        value = validation_loss(self.model, self.objective, self.x, v.labels)
        self.curve.append((steps_done, value))
        if steps_done >= v.first and math.isfinite(value) and value < self.best:
            self.best, self.step = value, steps_done
            self.state = {k: t.detach().clone() for k, t in self.model.module.state_dict().items()}

    def restore(self) -> int | None:
        """Load the kept weights; the step they are from (None without validation)."""
        if self.state is not None:
            self.model.module.load_state_dict(self.state)
        return self.step


def fine_tune(
    model: InvertibleModel,
    objective: Objective,
    train: Tensor,
    labels: Tensor | None,
    settings: FineTuneSettings,
    seed: int,
    on_step: Callable[[int], Any] | None = None,
    deadline: float | None = None,
    validation: Validation | None = None,
) -> FineTuneResult:
    """Fine-tune ``model``'s parameters in place; see the module docstring.

    Args:
        model: the model to train (its module's parameters are updated).
        objective: the task loss (:func:`~innaudit.remedies.objective.objective_of`).
        train: the training samples, shaped like the model's input.
        labels: class labels of ``train`` for a supervised objective, else None.
        settings: steps, learning rate, batch size, regularizers.
        seed: seeds the minibatches, the dequantization noise and the FD directions.
        on_step: called with the number of steps done, before the first and after each step.
        deadline: a ``time.monotonic()`` value after which no new step starts.
        validation: the split that chooses which weights are kept (None: the last ones).
    """
    settings.check()
    if objective.kind is None:
        raise UsageError(f"cannot fine-tune: {objective.note}")
    if objective.supervised and labels is None:
        raise UsageError("cannot fine-tune a classifier without the labels of its training data; pass --labels FILE")
    generator = torch.Generator().manual_seed(stable_seed(seed, "repair", "fine-tune"))
    params = [p for p in model.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    keeper = _Keeper(model, objective, validation, seed)
    losses: list[float] = []
    skipped, stopped = 0, ""
    regularized, skipped_regularized = 0, 0
    carries = settings.fd is not None or settings.nf is not None
    was_training = model.module.training
    model.module.eval()
    try:
        with single_threaded():
            keeper.check(0)
            if on_step is not None:
                on_step(0)
            for step in range(settings.steps):
                if deadline is not None and time.monotonic() > deadline:
                    stopped = f"the budget ran out after {step} of {settings.steps} steps"
                    break
                dropped = _one_step(model, objective, train, labels, settings, step, generator, optimizer, losses)
                skipped += dropped
                if carries and step % settings.every == 0:
                    regularized += 1
                    skipped_regularized += dropped
                keeper.check(step + 1)
                if on_step is not None:
                    on_step(step + 1)
            keeper.check(len(losses), last=True)
            kept = keeper.restore()
    finally:
        model.module.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    first, last = (losses[0], losses[-1]) if losses else (math.nan, math.nan)
    return FineTuneResult(
        len(losses),
        skipped,
        first,
        last,
        stopped,
        tuple(losses),
        kept,
        tuple(keeper.curve),
        regularized,
        skipped_regularized,
    )


def _one_step(
    model: InvertibleModel,
    objective: Objective,
    train: Tensor,
    labels: Tensor | None,
    settings: FineTuneSettings,
    step: int,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    losses: list[float],
) -> int:
    """One minibatch update; returns 1 when it was skipped as non-finite, else 0."""
    index = torch.randint(len(train), (settings.batch_size,), generator=generator)
    x = dequantize(train[index], model.info.domain, generator)
    y = labels[index] if labels is not None else None
    optimizer.zero_grad(set_to_none=True)
    loss = _loss(model, objective, x, y, settings, step % settings.every == 0, generator)
    losses.append(float(loss.detach()))
    if math.isfinite(losses[-1]):
        loss.backward()
    if not math.isfinite(losses[-1]) or not _finite_grads([p for g in optimizer.param_groups for p in g["params"]]):
        optimizer.zero_grad(set_to_none=True)
        return 1
    optimizer.step()
    return 0
