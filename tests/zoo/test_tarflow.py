"""Known-answer tests of the TarFlow / STARFlow zoo family (``innaudit.zoo.tarflow``)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading import load_model, load_object
from innaudit.loading.native import save_checkpoint
from innaudit.model.autoregressive import is_autoregressive
from innaudit.model.iterative import solves_iteratively
from innaudit.zoo.tarflow import INV_SOFTPLUS_1, JacobiTarFlowBlock, TarFlow, TarFlowBlock, tarflow_config


def small(**overrides: Any) -> dict[str, Any]:
    """3x8x8 images in 2x2 patches: 16 tokens of 12 values, 2 blocks of one layer."""
    base = {"shape": [3, 8, 8], "patch": 2, "hidden": 16, "heads": 2, "blocks": 2, "layers": 1}
    return tarflow_config(**{**base, **overrides})


def randomized(model: TarFlow, std: float = 0.3, seed: int = 1) -> TarFlow:
    """``model`` with its zero-initialized heads drawn from N(0, std^2): a non-identity flow."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks[1:]:
            head = block.proj_out
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator) * std)
    return model


def images(n: int, seed: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def block_input(model: TarFlow, x: torch.Tensor) -> torch.Tensor:
    return model.blocks[0](x)[0]


def test_fresh_model_is_the_identity_on_patches() -> None:
    model = zoo.build("tarflow", small())
    x = images(4)
    with torch.no_grad():
        z, log_det = model(x)
    patches = torch.nn.functional.unfold(x, 2, stride=2).transpose(1, 2)
    assert z.shape == (4, 16, 12) and torch.equal(z, patches) and torch.equal(log_det, torch.zeros(4))
    assert torch.equal(model.inverse(z), x)


@pytest.mark.parametrize("scale,clip", [("exp", 0.0), ("softplus", 4.0), ("softplus", 0.0), ("exp", 2.0)])
def test_log_det_is_the_exact_sum_over_tokens(scale: str, clip: float) -> None:
    model = randomized(zoo.build("tarflow", small(scale=scale, soft_clip=clip))).double()
    x = images(1, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda u: model(u)[0].flatten(), x).reshape(192, 192)
    sign, expected = torch.linalg.slogdet(jac)
    assert sign == 1 and torch.allclose(model(x)[1], expected, rtol=1e-10)
    assert abs(float(expected)) > 1.0  # the heads are random: the determinant is not trivially 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_sequential_inverse_inverts_the_masked_forward(dtype: torch.dtype, tol: float) -> None:
    model = randomized(zoo.build("tarflow", small())).to(dtype).eval()
    x = images(8, dtype=dtype)
    with torch.no_grad():
        z, _ = model(x)
        assert (model.inverse(z) - x).abs().max() < tol
        for block in model.blocks[1:]:  # and the masked forward of the cached inverse gives z back
            h = torch.randn(8, 16, 12, generator=torch.Generator().manual_seed(3), dtype=dtype)
            assert (block(block.sequential_inverse(h))[0] - h).abs().max() < tol


def test_each_token_depends_only_on_the_tokens_before_it_in_block_order() -> None:
    model = randomized(zoo.build("tarflow", small())).double()
    h = block_input(model, images(1, dtype=torch.float64))
    for block in model.blocks[1:]:
        order = block.token_order()
        step = 5
        changed = h.clone()
        changed[0, order[step]] += 0.25
        with torch.no_grad():
            a, _ = block.affine_params(h)
            before, after = block(h)[0][:, order], block(changed)[0][:, order]
        assert torch.equal(before[:, :step], after[:, :step])  # earlier tokens: untouched
        # the token itself moves by exactly delta * exp(-a_t): its own (a, b) do not see it
        expected = 0.25 * torch.exp(-a[0, step])
        assert torch.allclose((after - before)[0, step], expected, rtol=1e-12)
        assert (after - before)[0, step + 1 :].abs().max() > 0  # later ones do see it


def test_block_orders_alternate_raster_and_reversed() -> None:
    model = zoo.build("tarflow", small(blocks=3))
    orders = [b.token_order().tolist() for b in model.blocks[1:]]
    assert orders == [list(range(16)), list(range(15, -1, -1)), list(range(16))]
    assert model.block_names == ["patchify 2x2", "AR block 0", "AR block 1", "AR block 2"]


def _constant_head(block: TarFlowBlock, u: float, b: float) -> None:
    with torch.no_grad():
        block.proj_out.weight.zero_()
        block.proj_out.bias.copy_(torch.tensor([u] * block.dim + [b] * block.dim))


@pytest.mark.parametrize(
    "scale,clip,u,expected",
    [
        ("exp", 0.0, 1.5, 1.5),
        ("exp", 4.0, 100.0, 4.0),  # soft clip: 4 tanh(100 / 4)
        ("softplus", 0.0, 0.0, 0.0),  # softplus(0 + log(e - 1)) = 1
        ("softplus", 4.0, 100.0, math.log(math.log1p(math.exp(4.0 + INV_SOFTPLUS_1)))),
        ("softplus", 4.0, -100.0, math.log(math.log1p(math.exp(-4.0 + INV_SOFTPLUS_1)))),
    ],
)
def test_affine_map_of_a_constant_head_is_known(scale: str, clip: float, u: float, expected: float) -> None:
    model = zoo.build("tarflow", small(scale=scale, soft_clip=clip, blocks=1)).double()
    block = model.blocks[1]
    _constant_head(block, u, 0.5)
    h = block_input(model, images(2, dtype=torch.float64))
    with torch.no_grad():
        a, b = block.affine_params(h)
        z, log_det = block(h)
    assert torch.equal(a[:, 0], torch.zeros_like(a[:, 0]))  # token 0 has nothing before it
    assert torch.allclose(a[:, 1:], torch.full_like(a[:, 1:], expected), rtol=1e-12)
    shift = 0.5 if clip == 0 else clip * math.tanh(0.5 / clip)
    assert torch.allclose(b[:, 1:], torch.full_like(b[:, 1:], shift), rtol=1e-12)
    assert torch.allclose(z[:, 1:], (h[:, 1:] - shift) * math.exp(-expected), rtol=1e-12)
    assert torch.equal(z[:, 0], h[:, 0])
    assert torch.allclose(log_det, torch.full((2,), -15 * 12 * expected, dtype=torch.float64), rtol=1e-12)


def test_starflow_guards_bound_the_inverse_scale() -> None:
    """soft clip 4 + softplus: the inverse multiplies by at most softplus(4 + 0.5413) ~ 4.55 and
    at least softplus(-4 + 0.5413) ~ 0.031, whatever the network says."""
    model = zoo.build("tarflow", small(scale="softplus", soft_clip=4.0, blocks=1)).double()
    block = model.blocks[1]
    h = block_input(model, images(4, dtype=torch.float64))
    for u in (-1e4, 1e4):
        _constant_head(block, u, 0.0)
        a, _ = block.affine_params(h)
        scale = torch.exp(a[:, 1:])
        low, high = (math.log1p(math.exp(s * 4.0 + INV_SOFTPLUS_1)) for s in (-1, 1))
        assert 0.0309 < low < 0.0311 and 4.55 < high < 4.56
        assert scale.min() >= low * (1 - 1e-12) and scale.max() <= high * (1 + 1e-12)


def test_jacobi_block_declares_the_iterative_inverse_and_the_sequential_one_does_not() -> None:
    sequential = zoo.build("tarflow", small())
    jacobi = zoo.build("tarflow", small(inverse="jacobi", jacobi_tol=1e-8, jacobi_max_iter=20))
    assert all(isinstance(b, TarFlowBlock) and not solves_iteratively(b) for b in sequential.blocks[1:])
    assert all(isinstance(b, JacobiTarFlowBlock) and solves_iteratively(b) for b in jacobi.blocks[1:])
    assert all(is_autoregressive(b) for b in [*sequential.blocks[1:], *jacobi.blocks[1:]])
    assert not is_autoregressive(sequential.blocks[0])
    assert (sequential.inverse_kind, sequential.inverse_tolerance) == ("analytic", None)
    assert (jacobi.inverse_kind, jacobi.inverse_tolerance, jacobi.inverse_max_iter) == ("iterative", 1e-8, 20)
    assert jacobi.load_state_dict(sequential.state_dict()) is not None  # the same weights fit both


def _jacobi_block(tol: float = 1e-3, cap: int = 32) -> tuple[JacobiTarFlowBlock, torch.Tensor, torch.Tensor]:
    model = randomized(zoo.build("tarflow", small(inverse="jacobi", jacobi_tol=tol, jacobi_max_iter=cap)), 0.5)
    model = model.double().eval()
    h = block_input(model, images(6, dtype=torch.float64))
    block = model.blocks[1]
    with torch.no_grad():
        return block, h, block(h)[0]


def test_jacobi_reaches_the_sequential_inverse_within_t_iterations() -> None:
    block, h, y = _jacobi_block()
    with torch.no_grad():
        x, solve = block.solve_inverse(y, tolerance=1e-20, max_iter=16)
    assert solve.converged.all() and solve.iterations.max() <= 16 and solve.method == "jacobi"
    assert (x - block.sequential_inverse(y)).abs().max() < 1e-12 and (x - h).abs().max() < 1e-12


def test_jacobi_capped_below_convergence_says_so_and_leaves_settings_alone() -> None:
    block, h, y = _jacobi_block(tol=1e-3, cap=32)
    with torch.no_grad():
        x, solve = block.solve_inverse(y, tolerance=1e-14, max_iter=3)
    assert not solve.converged.any()
    assert torch.equal(solve.iterations, torch.full((6,), 3))
    assert (solve.max_iter, solve.tolerance) == (3, 1e-14)
    assert (x - h).abs().max() > 1e-3  # three sweeps fix three tokens: the rest is still off
    assert (block.jacobi_tol, block.jacobi_max_iter) == (1e-3, 32)  # the override was for that call
    with torch.no_grad():
        _, again = block.solve_inverse(y)
    assert (again.max_iter, again.tolerance) == (32, 1e-3) and again.converged.all()


def test_jacobi_inverse_is_the_block_inverse() -> None:
    block, _, y = _jacobi_block(tol=1e-12, cap=40)
    with torch.no_grad():
        assert torch.equal(block.inverse(y), block.solve_inverse(y)[0])


def test_learned_prior_moves_var_and_scales_prior_draws() -> None:
    model = zoo.build("tarflow", small(prior="learned"))
    z = torch.full((4, 16, 12), 3.0)
    model.update_prior(z)
    assert torch.allclose(model.var, torch.full((16, 12), 1 + 0.1 * (9 - 1)))
    fixed = zoo.build("tarflow", small())
    fixed.update_prior(z)
    assert torch.equal(fixed.var, torch.ones(16, 12))
    adapted = load_object(model).model
    eps = torch.ones(2, 16, 12)  # the sampling audit draws eps in the latent's shape
    drawn = adapted.sample_prior(eps, 0.5, torch.Generator())
    assert torch.allclose(drawn, torch.full((2, 16, 12), 0.5 * math.sqrt(1.8)))


def test_native_checkpoint_rebuilds_the_same_flow(tmp_path) -> None:
    config = small(scale="exp", inverse="jacobi", jacobi_tol=1e-9, jacobi_max_iter=40)
    model = randomized(zoo.build("tarflow", config)).eval()
    domain = DataDomain(shape=(3, 8, 8), low=0.0, high=1.0, levels=256)
    path = save_checkpoint(tmp_path / "tf.pt", model, "tarflow", config, domain)
    loaded = load_model(str(path)).model
    x = images(3)
    with torch.no_grad():
        assert torch.equal(loaded.forward(x), model(x)[0])
    assert loaded.info.inverse_kind.value == "iterative" and loaded.info.inverse_tolerance == 1e-9
    names = [b.info.architecture for b in loaded.blocks()]
    assert names == ["patchify 2x2", "AR block 0", "AR block 1"]


@pytest.mark.parametrize(
    "bad,words",
    [
        ({"patch": 3}, "divisible by patch=3"),
        ({"scale": "sigmoid"}, "scale 'sigmoid' is unknown"),
        ({"inverse": "newton"}, "inverse 'newton' is unknown"),
        ({"soft_clip": -1.0}, "soft_clip"),
        ({"jacobi_tol": 0.0}, "jacobi_tol"),
        ({"heads": 3}, "not divisible by heads=3"),
        ({"layers": 10**6}, "outside the accepted range"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(bad: dict[str, Any], words: str) -> None:
    with pytest.raises(LoadError, match=words.replace("(", r"\(")):
        zoo.build("tarflow", small(**bad))
