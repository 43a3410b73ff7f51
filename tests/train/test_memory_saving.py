"""Memory-saving backpropagation in the training loop (innaudit.train.memory_saving)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from innaudit import zoo
from innaudit.audits.gradient_compare import block_params, memory_saving_gradient, nll_loss, true_gradient
from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.train import run_recipe
from innaudit.train.memory_saving import memory_saving_backward
from tests.audits import gradient_models as gm


def _grads(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1).double() for p in module.parameters()]
    )


def _classifier(coupling: str) -> torch.nn.Module:
    return zoo.build(
        "coupling-classifier",
        {"shape": [1, 8, 8], "steps": 3, "hidden": 8, "coupling": coupling, "classes": 10, "seed": 3},
    )


def test_memory_saving_gradient_equals_autograd_on_a_well_conditioned_model() -> None:
    torch.manual_seed(0)
    model = _classifier("affine").double()
    x, y = torch.rand(16, 1, 8, 8, dtype=torch.float64), torch.randint(10, (16,))

    def loss(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:  # uses both outputs
        return F.cross_entropy(model.head(z.flatten(1)), y) + 1e-2 * (0.5 * z.pow(2).sum() - log_det.sum())

    z, ld = model(x)
    loss(z, ld).backward()
    true = _grads(model)
    model.zero_grad(set_to_none=True)
    value = memory_saving_backward(list(model.blocks), x, loss)
    with torch.no_grad():
        assert float(value) == pytest.approx(float(loss(*model(x))), rel=1e-12)
    assert float((_grads(model) - true).norm() / true.norm()) < 1e-10


def test_memory_saving_gradient_follows_a_wrong_inverse() -> None:
    """The backward walk really uses the inverse: an inverse off by a factor changes the gradient."""
    model = _classifier("additive")
    broken = copy.deepcopy(model)
    coupling = broken.blocks[-1]
    real_inverse = coupling.inverse
    coupling.inverse = lambda y: 1.5 * real_inverse(y)  # type: ignore[method-assign]
    x, y = torch.rand(8, 1, 8, 8), torch.randint(10, (8,))
    grads = []
    for m in (model, broken):
        memory_saving_backward(list(m.blocks), x, lambda z, ld, m=m: F.cross_entropy(m.head(z.flatten(1)), y))
        grads.append(_grads(m))
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) > 1e-2


def test_a_short_memory_saving_recipe_is_deterministic_and_records_it() -> None:
    first = run_recipe("digits-classifier-affine-ms", seed=0, steps=3)
    again = run_recipe("digits-classifier-affine-ms", seed=0, steps=3)
    prov = first.provenance
    assert prov["gradients"] == "memory-saving" and prov["skipped_nonfinite_steps"] == 0
    assert prov["lr"] == 1e-2 and prov["regularizer"] == "none" and prov["objective"] == "ce"
    for a, b in zip(first.module.state_dict().values(), again.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_training_and_the_gradient_audit_take_one_walk_on_a_wrong_inverse() -> None:
    """The training step and the audit share the backward walk: on couplings whose block 2
    inverse is 5 % off, both give the same (wrong) memory-saving gradient, far from the true one."""
    chain = gm.couplings(off=2, factor=1.05).eval()
    x = torch.rand(32, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blocks = adapt_module(chain, DataDomain(shape=(6,), low=-1.0, high=1.0), {"test": "walk"}).blocks()
    params, owned = block_params(blocks)
    assert {id(p) for p in params} == {id(p) for p in chain.parameters()}  # the same tensors
    _, audited = memory_saving_gradient(blocks, x, nll_loss, params, owned)
    _, true = true_gradient(blocks, x, nll_loss, params)
    chain.zero_grad(set_to_none=True)
    memory_saving_backward(list(chain.blocks), x, lambda z, ld: nll_loss(z, ld, x))
    trained = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    for a, t in zip(audited, trained, strict=True):
        torch.testing.assert_close(a, t, rtol=1e-6, atol=1e-9)
    mem, ref = torch.cat([g.reshape(-1) for g in trained]), torch.cat([g.reshape(-1) for g in true])
    assert float((mem - ref).norm() / ref.norm()) > 1e-2  # the wrong inverse is felt
