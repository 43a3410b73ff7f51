"""Recipes of the paper reproduction in miniature (Behrmann et al., AISTATS 2021).

Three objectives, one loop (:func:`train`):

- ``nll``: density model, ``-log p(x)`` under a standard-normal prior (2-D toys, digits);
- ``ce``: supervised INN classifier, cross-entropy of a linear head on the latents
  (``coupling-classifier``, the paper's Table C in miniature);
- ``mse``: the paper's 2-D regression task (5.3), ``||F(x) - (0, x2)||^2``, a non-invertible
  target that drives ``sigma_min`` to 0.

A regularizer (``none``, ``fd``, ``nf``; :mod:`innaudit.train.regularizers`) is added on every
``every``-th step as in the paper. The recipe name carries it (``...-fd``, ``...-nf``); ``innaudit
train NAME --regularizer fd`` is the same as ``innaudit train NAME-fd``. Density recipes take no
``nf`` variant: their objective already is the NF objective.

Determinism as in :mod:`innaudit.train.recipes`: ``torch.manual_seed(seed)``, local generators
for data order and noise, one thread, deterministic algorithms; no wall time in the provenance.
Residual flows are calibrated (exact spectral norms) before they are returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.data.builtin import regression_targets, toy_2d
from innaudit.train.common import Progress, Recipe, TrainedModel, bits_per_dim, init_actnorm, single_threaded
from innaudit.train.hooks import after_step
from innaudit.train.memory_saving import memory_saving_backward
from innaudit.train.regularizers import FD_COEFF, NF_COEFF, fd_regularizer, gaussian_nll, nf_regularizer

if TYPE_CHECKING:
    from innaudit.zoo.flow import Invertible

__all__ = ["PAPER_RECIPES", "Setup", "train"]

TOY_DOMAIN_RANGE = (-4.0, 4.0)


@dataclass(frozen=True)
class Setup:
    """One training run: model, data, objective, regularizer and optimizer settings."""

    architecture: str
    config: dict[str, Any]
    data: str  # "digits" or a 2-D toy name (toy_2d)
    objective: str  # "nll", "ce" or "mse"
    steps: int
    batch_size: int
    lr: float
    regularizer: str = "none"  # "none", "fd" or "nf"
    every: int = 10
    fd_coeff: float = FD_COEFF
    nf_coeff: float = NF_COEFF
    actnorm_init: bool = True
    memory_saving: bool = False  # gradients through activations rebuilt by the inverse
    extra: dict[str, Any] = field(default_factory=dict)


class _Calibrated(Protocol):
    def calibrate(self) -> None: ...


class _Shared(TypedDict):
    """Settings shared by a family of recipes, spread into :class:`Setup`."""

    data: str
    objective: str
    batch_size: int
    lr: float


@dataclass
class _Data:
    domain: DataDomain
    sample: Callable[[torch.Generator], tuple[Tensor, Tensor | None]]
    train: tuple[Tensor, Tensor | None]
    test: tuple[Tensor, Tensor | None]
    dequantize: bool


def _digits_data(batch: int) -> _Data:
    from innaudit.data.digits import DIGITS_DOMAIN, load_digits

    x, y = (torch.from_numpy(a) for a in load_digits("train"))
    xt, yt = (torch.from_numpy(a) for a in load_digits("test"))

    def sample(gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
        index = torch.randint(len(x), (batch,), generator=gen)
        return _dequantize(x[index], DIGITS_DOMAIN, gen), y[index]

    return _Data(DIGITS_DOMAIN, sample, (x, y), (xt, yt), True)


def _toy_data(name: str, batch: int, seed: int) -> _Data:
    domain = DataDomain(shape=(2,), low=TOY_DOMAIN_RANGE[0], high=TOY_DOMAIN_RANGE[1], name=name)
    fixed = toy_2d(name, 4000, torch.Generator().manual_seed(seed + 11))
    test = toy_2d(name, 4000, torch.Generator().manual_seed(seed + 12))

    def sample(gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
        return toy_2d(name, batch, gen), None

    return _Data(domain, sample, (fixed, None), (test, None), False)


def _dequantize(x: Tensor, domain: DataDomain, gen: torch.Generator) -> Tensor:
    return x + torch.rand(x.shape, generator=gen, dtype=x.dtype) * (domain.bin_width or 0.0)


def _task_loss(
    model: nn.Module,
    setup: Setup,
    x: Tensor,
    y: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, z, log_det)`` of the objective on one batch."""
    z, log_det = model(x)
    if setup.objective == "nll":
        return gaussian_nll(z, log_det).mean(), z, log_det
    if setup.objective == "ce":
        return F.cross_entropy(cast(nn.Module, model.head)(z.flatten(1)), cast(Tensor, y)), z, log_det  # labelled data
    return F.mse_loss(z, regression_targets(x), reduction="sum") / len(x), z, log_det


def _regularizer(model: nn.Module, setup: Setup, x: Tensor, z: Tensor, log_det: Tensor) -> Tensor:
    if setup.regularizer == "fd":
        return fd_regularizer(
            lambda t: model(t)[0],
            cast("Invertible", model).inverse,
            x,
            z=z,
            coeff=setup.fd_coeff,
            inverse_coeff=setup.fd_coeff,
        )
    return nf_regularizer(z, log_det, setup.nf_coeff)


def _memory_saving_step(model: nn.Module, setup: Setup, x: Tensor, y: Tensor | None) -> None:
    """Gradients of the objective by memory-saving backpropagation (activations rebuilt by the
    inverse, :func:`~innaudit.train.memory_saving.memory_saving_backward`), into ``.grad``."""

    def loss(z: Tensor, log_det: Tensor) -> Tensor:
        if setup.objective == "nll":
            return gaussian_nll(z, log_det).mean()
        if setup.objective == "ce":
            return F.cross_entropy(cast(nn.Module, model.head)(z.flatten(1)), cast(Tensor, y))
        return F.mse_loss(z, regression_targets(x), reduction="sum") / len(x)

    memory_saving_backward(list(cast(nn.ModuleList, model.blocks)), x, loss)


def _finite_grads(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def _fit(model: nn.Module, data: _Data, setup: Setup, seed: int, progress: Progress | None) -> int:
    """Train ``model`` in place; returns the number of memory-saving steps skipped because their
    gradient was non-finite (always 0 with true gradients)."""
    skipped = 0
    gen = torch.Generator().manual_seed(seed + 1)
    if setup.actnorm_init and hasattr(model, "blocks"):
        x0 = data.train[0][:512]
        init_actnorm(model, _dequantize(x0, data.domain, gen) if data.dequantize else x0)
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr)
    after_step(model, data.domain, 0)
    for step in range(setup.steps):
        x, y = data.sample(gen)
        regularize = setup.regularizer != "none" and step % setup.every == 0
        optimizer.zero_grad(set_to_none=True)
        if setup.memory_saving:
            _memory_saving_step(model, setup, x, y)
            if regularize:  # the regularizer by ordinary autograd, added to the same .grad
                z, log_det = model(x)
                _regularizer(model, setup, x, z, log_det).backward()
            if not _finite_grads(model):  # skip the update, as a loss scaler does
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
        else:
            loss, z, log_det = _task_loss(model, setup, x, y)
            if regularize:
                loss = loss + _regularizer(model, setup, x, z, log_det)
            loss.backward()
        optimizer.step()
        after_step(model, data.domain, step + 1)
        if progress is not None:
            progress(step + 1, setup.steps)
    return skipped


@torch.no_grad()
def _metrics(model: nn.Module, data: _Data, setup: Setup, seed: int) -> dict[str, float]:
    """Final figures for the provenance (fixed noise draws, so a rebuild hashes the same)."""
    out: dict[str, float] = {}
    for split, (x, y) in (("train", data.train), ("test", data.test)):
        if data.dequantize:
            x = _dequantize(x, data.domain, torch.Generator().manual_seed(seed + 2))
        z, log_det = model(x)
        if setup.objective == "nll":
            nll = gaussian_nll(z, log_det)
            if data.domain.levels:
                out[f"{split}_nll_bits_per_dim"] = bits_per_dim(nll, data.domain)
            else:
                out[f"{split}_nll_nats"] = float(nll.mean())
        elif setup.objective == "ce":
            out[f"{split}_accuracy"] = float((cast(nn.Module, model.head)(z.flatten(1)).argmax(1) == y).double().mean())
        else:
            out[f"{split}_mse"] = float(F.mse_loss(z, regression_targets(x)))
    return out


def train(
    name: str, setup: Setup, seed: int, progress: Progress | None = None, steps: int | None = None
) -> TrainedModel:
    """Run ``setup`` with ``seed``; ``steps`` overrides the number of steps (quick tests)."""
    from innaudit import zoo

    if steps is not None:
        setup = dataclasses.replace(setup, steps=int(steps))
    with single_threaded():
        torch.manual_seed(seed)
        data = (
            _digits_data(setup.batch_size) if setup.data == "digits" else _toy_data(setup.data, setup.batch_size, seed)
        )
        config = {**setup.config, "seed": int(seed)}
        model = zoo.build(setup.architecture, config)
        model.train()
        skipped = _fit(model, data, setup, seed, progress)
        if hasattr(model, "calibrate"):
            cast(_Calibrated, model).calibrate()
        model.eval()
        provenance: dict[str, Any] = {
            "recipe": name,
            "seed": int(seed),
            "steps": setup.steps,
            "batch_size": setup.batch_size,
            "lr": setup.lr,
            "optimizer": "adam",
            "objective": setup.objective,
            "regularizer": setup.regularizer,
            "regularize_every": setup.every,
            **(
                {"fd_coeff": setup.fd_coeff, "fd_inv_coeff": setup.fd_coeff, "fd_eps": 0.1}
                if setup.regularizer == "fd"
                else {}
            ),
            **({"nf_coeff": setup.nf_coeff} if setup.regularizer == "nf" else {}),
            **({"gradients": "memory-saving", "skipped_nonfinite_steps": skipped} if setup.memory_saving else {}),
            **_metrics(model, data, setup, seed),
            "torch": str(torch.__version__),
        }
    return TrainedModel(model, setup.architecture, config, data.domain, provenance)


def _recipe(name: str, description: str, setup: Setup) -> Recipe:
    def function(seed: int, progress: Progress | None = None, steps: int | None = None) -> TrainedModel:
        return train(name, setup, seed, progress, steps)

    return Recipe(name, description, function)


TOY_COUPLING = {"shape": [2], "steps": 8, "hidden": 64, "permutation": "reverse", "actnorm": True}
TOY_RESIDUAL = {
    "shape": [2],
    "blocks": 8,
    "hidden": 64,
    "depth": 3,
    "coeff": 0.8,
    "power_iterations": 5,
    "tolerance": 1e-6,
    "max_iter": 1000,
    "log_det": "exact",
}
DIGITS_COUPLING = {"shape": [1, 8, 8], "steps": 8, "hidden": 64, "permutation": "conv1x1", "actnorm": True}
DIGITS_RESIDUAL = {
    "shape": [1, 8, 8],
    "blocks": 6,
    "hidden": 32,
    "coeff": 0.9,
    "power_iterations": 2,
    "tolerance": 1e-6,
    "max_iter": 1000,
    "log_det_terms": 4,
}
TOY_STEPS, DIGITS_STEPS, CLASSIFIER_STEPS = 2500, 2000, 1500
MEMORY_SAVING_STEPS, MEMORY_SAVING_LR = 500, 1e-2


_REGRESSION_SETUP = Setup(
    "coupling-vector",
    {
        "shape": [2],
        "steps": 24,
        "hidden": 10,
        "coupling": "affine",
        "scale": "sigmoid",
        "permutation": "reverse",
        "actnorm": True,
    },
    "regression2d",
    "mse",
    6000,
    500,
    1e-3,
    actnorm_init=False,
)


def _all() -> list[Recipe]:
    toy: _Shared = {"data": "checkerboard", "objective": "nll", "batch_size": 256, "lr": 2e-3}
    recipes = [
        _recipe(
            "checkerboard-affine",
            "affine coupling flow (sigmoid scale) on the 2-D "
            "checkerboard; locally bi-Lipschitz only: its error grows off the data",
            Setup(
                "coupling-vector", {**TOY_COUPLING, "coupling": "affine", "scale": "sigmoid"}, steps=TOY_STEPS, **toy
            ),
        ),
        _recipe(
            "checkerboard-additive",
            "additive coupling flow on the 2-D checkerboard (globally bi-Lipschitz)",
            Setup("coupling-vector", {**TOY_COUPLING, "coupling": "additive"}, steps=TOY_STEPS, **toy),
        ),
        _recipe(
            "checkerboard-residual",
            "residual flow (i-ResNet, c = 0.8, exact 2x2 log-det) on "
            "the 2-D checkerboard; fixed-point inverse, finite everywhere",
            Setup("residual-vector", dict(TOY_RESIDUAL), steps=TOY_STEPS, **toy),
        ),
        _recipe(
            "digits-affine-fd",
            "the digits-affine density flow (exp scale) trained with the FD regularizer added every 10 steps",
            Setup(
                "coupling-image",
                {**DIGITS_COUPLING, "coupling": "affine", "scale": "exp"},
                "digits",
                "nll",
                DIGITS_STEPS,
                128,
                2e-3,
                regularizer="fd",
            ),
        ),
        _recipe(
            "digits-residual",
            "residual flow (i-ResNet, c = 0.9, power-series log-det) on the "
            "8x8 digits; its fixed-point inverse stays finite on every noise set",
            Setup("residual-image", dict(DIGITS_RESIDUAL), "digits", "nll", 800, 64, 2e-3, actnorm_init=False),
        ),
        _recipe(
            "regression2d-affine",
            "the paper's 2-D regression toy (5.3): a 24-step affine "
            "flow fitted to the non-invertible target (0, x2); sigma_min collapses",
            _REGRESSION_SETUP,
        ),
        _recipe(
            "regression2d-affine-nf",
            "the 2-D regression toy with the NF objective as "
            "regularizer (coeff 1e-6 on every step, as the paper's toy)",
            dataclasses.replace(_REGRESSION_SETUP, regularizer="nf", every=1, nf_coeff=1e-6),
        ),
    ]
    for coupling in ("additive", "affine"):
        for reg in ("none", "fd", "nf"):
            name = f"digits-classifier-{coupling}" + ("" if reg == "none" else f"-{reg}")
            cfg = {**DIGITS_COUPLING, "coupling": coupling, "scale": "sigmoid", "classes": 10}
            recipes.append(
                _recipe(
                    name,
                    f"INN classifier ({coupling} coupling, linear head on the 64 latents) on "
                    f"the digits, regularizer {reg} (the paper's Table C in miniature)",
                    Setup("coupling-classifier", cfg, "digits", "ce", CLASSIFIER_STEPS, 128, 1e-3, regularizer=reg),
                )
            )
    for coupling in ("additive", "affine"):
        cfg = {**DIGITS_COUPLING, "coupling": coupling, "scale": "sigmoid", "classes": 10}
        recipes.append(
            _recipe(
                f"digits-classifier-{coupling}-ms",
                f"INN classifier ({coupling} coupling, sigmoid "
                "scale) trained with memory-saving gradients (activations rebuilt by the inverse), "
                f"Adam lr {MEMORY_SAVING_LR:g}, {MEMORY_SAVING_STEPS} steps; steps with a non-finite "
                "gradient are skipped (the paper's section 5 setting in miniature)",
                Setup(
                    "coupling-classifier",
                    cfg,
                    "digits",
                    "ce",
                    MEMORY_SAVING_STEPS,
                    128,
                    MEMORY_SAVING_LR,
                    memory_saving=True,
                ),
            )
        )
    return recipes


PAPER_RECIPES: dict[str, Recipe] = {r.name: r for r in _all()}
