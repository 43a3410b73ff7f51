"""The ``convergence`` audit and the iterative-inverse seam: known answers, library solvers
that reproduce their libraries bit for bit, and a non-converged solve that is never a pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import innaudit
from innaudit.core.results import Status
from innaudit.loading.adapters.solvers import FreiaIResNetSolver, NormflowsResidualSolver, ZukoBisectionSolver
from innaudit.model.iterative import Solve, solved_direction, solver_for
from tests.adapters import iterative_models as im

GEN = torch.Generator
MODELS = "tests/adapters/iterative_models.py"


def _run(model, x: torch.Tensor, **config):
    cfg = {"convergence": {"samples": len(x), "sweep_samples": len(x), **config}}
    report = innaudit.audit(model, data=x, ood=[], audits=["convergence"], config=cfg)
    (audit,) = report.audits
    return audit


def _half_on_the_axis(n: int = 16) -> torch.Tensor:
    x = 2 * torch.rand(n, 2, generator=GEN().manual_seed(0)) - 1
    x[: n // 2, 0] = 0.0  # x_1 = 0: the diverging direction is not excited
    return x


def test_a_diverging_fixed_point_is_a_failure_exactly_on_the_samples_where_it_diverges() -> None:
    x = _half_on_the_axis()
    audit = _run(im.linear_residual(), x)
    (result,) = audit.results
    assert audit.status is Status.FAIL and result.metrics["nonconverged_fraction"] == 0.5
    (block,) = result.series["blocks"]
    # z = (2.5 x1, 1.5 x2); the iteration error grows by 1.5 per step along axis 1 unless x1 = 0
    assert block["converged"] == [bool(v == 0) for v in x[:, 0]]
    assert block["cap_hits"] == 8 and result.metrics["cap_hit_fraction"] == 0.5
    # the library returned finite numbers (1.5^200 fits in float32): a finite output is no pass
    assert all(math.isfinite(r) for r in block["residual"]) and max(block["residual"]) > 1
    assert "8 of 16 samples did not converge" in result.message


def test_a_contraction_converges_and_the_sweep_says_whose_error_it_is() -> None:
    x = _half_on_the_axis()
    audit = _run(im.stable_linear_residual(), x)
    (result,) = audit.results
    assert audit.status is Status.PASS and result.metrics["nonconverged_fraction"] == 0.0
    assert result.metrics["residual"]["max"] < 1e-5 and result.metrics["iterations"]["max"] < 200
    # a loose tolerance: the error is the solver's, and 100x tighter removes it
    loose = im.stable_linear_residual()
    loose.blocks[0].inverse_tolerance = 1e-3
    (result,) = _run(loose, x).results
    (row,) = result.series["sweep"]
    errors = [r["error_max"] for r in row["rows"]]
    assert row["verdict"] == "solver" and result.metrics["solver_limited_blocks"] == 1
    assert errors[0] > 1e-4 and errors[-1] < errors[0] / 30
    assert [r["tolerance"] for r in row["rows"]] == [1e-3, 1e-4, 1e-5]


def test_the_zoo_block_declares_its_solver_through_the_seam() -> None:
    block = im.stable_linear_residual().blocks[0]
    assert solver_for(block) is block and solved_direction(block) == "inverse"
    z = torch.randn(5, 2, generator=GEN().manual_seed(1))
    x, solve = block.solve_inverse(z)
    assert torch.equal(x, block.inverse(z)) and isinstance(solve, Solve)
    assert solve.converged.all() and solve.max_iter == 200 and solve.method == "fixed-point"
    _, capped = block.solve_inverse(z, tolerance=0.0, max_iter=3)
    assert not capped.converged.any() and capped.iterations.tolist() == [3] * 5
    assert block.inverse_tolerance == 1e-6 and block.inverse_max_iter == 200  # overrides leave no trace


def test_normflows_residual_solver_is_the_library_inverse_and_reports_its_iterations() -> None:
    flow = im.normflows_residual()
    layer = flow.flows[0]
    solver = solver_for(layer)
    assert isinstance(solver, NormflowsResidualSolver)
    y = 3 * torch.randn(64, 2, generator=GEN().manual_seed(2))
    with torch.no_grad():
        ref = layer.iresblock.inverse(y)
    x, solve = solver.solve_inverse(y)
    assert torch.equal(x, ref) and solve.converged.all() and solve.max_iter == 1001
    _, tight = solver.solve_inverse(y, tolerance=1e-9)
    assert float(tight.iterations.float().mean()) > float(solve.iterations.float().mean())


def test_freia_solver_is_the_library_inverse_and_judges_the_fixed_count() -> None:
    block = im.freia_iresnet().module_list[0]
    solver = solver_for(block)
    assert isinstance(solver, FreiaIResNetSolver)
    y = torch.randn(32, 4, generator=GEN().manual_seed(3))
    with torch.no_grad():
        ref = block([y], rev=True, jac=False)[0][0]
    x, solve = solver.solve_inverse(y)
    assert torch.equal(x, ref) and solve.max_iter == 50
    block.fixed_point_iterations = 2
    _, few = solver.solve_inverse(y)
    assert not few.converged.any()  # FrEIA returns these two iterations without a word


def test_zuko_bisection_solver_is_the_library_inverse_and_knows_its_bracket() -> None:
    flow = im.zuko_naf()
    first = flow.transform.transforms[0]
    solver = solver_for(first)
    assert isinstance(solver, ZukoBisectionSolver)
    z = torch.randn(16, 3, generator=GEN().manual_seed(4))
    with torch.no_grad():
        x_in = z.clone()
        x_in[:4, 1] = 30.0  # outside the bisection's [-10, 10]
        z = first(None)(x_in)
        ref = first(None).inv(z)
    x, solve = solver.solve_inverse(z)
    assert torch.equal(x, ref)
    assert solve.converged.tolist() == [False] * 4 + [True] * 12
    assert torch.isfinite(x).all() and float(x[:4, 1].max()) <= 10.0  # zuko clamps, silently
    assert solve.tolerance == 1e-6 and int(solve.iterations[0]) == 3 * math.ceil(math.log2(20 / 1e-6))


@pytest.mark.parametrize(
    "factory,blocks,shape",
    [("normflows_residual", 3, (2,)), ("freia_iresnet", 2, (4,)), ("zuko_naf", 2, (3,))],
)
def test_library_models_from_factories_are_measured_block_by_block(factory: str, blocks: int, shape: tuple) -> None:
    x = torch.rand(12, *shape, generator=GEN().manual_seed(5)) * 2 - 1
    audit = _run(f"{MODELS}:{factory}", x, sweep=[10])
    (result,) = audit.results
    assert result.metrics["blocks"] == blocks and result.metrics["unmeasured_blocks"] == 0
    assert audit.status in (Status.PASS, Status.WARN), result.message
    assert result.metrics["nonconverged_fraction"] == 0.0
    assert all(len(b["iterations"]) == 12 for b in result.series["blocks"])
    assert result.metrics["residual"]["max"] < 1e-2


def test_zuko_inputs_outside_the_bracket_fail_the_audit() -> None:
    x = torch.rand(12, 3, generator=GEN().manual_seed(6)) * 2 - 1
    x[:3, 0] = 25.0
    audit = _run(f"{MODELS}:zuko_naf", x, sweep_samples=0)
    (result,) = audit.results
    first = result.series["blocks"][0]
    assert audit.status is Status.FAIL
    assert first["converged"] == [False] * 3 + [True] * 9 and first["method"] == "bisection (zuko)"


def test_freia_fixed_iterations_that_did_not_converge_are_a_failure() -> None:
    x = torch.rand(12, 4, generator=GEN().manual_seed(7)) * 4 - 2
    model = im.freia_iresnet()
    for block in model.module_list:
        block.fixed_point_iterations = 2
    audit = _run(model, x, sweep_samples=0)
    (result,) = audit.results
    assert audit.status is Status.FAIL and result.metrics["nonconverged_fraction"] == 1.0


def test_a_forward_that_iterates_is_measured_with_the_inverse() -> None:
    flow = im.normflows_residual()
    for layer in flow.flows:
        layer.reverse = False
    assert solved_direction(solver_for(flow.flows[0])) == "forward"
    x = torch.rand(8, 2, generator=GEN().manual_seed(8))
    (result,) = _run(flow, x, sweep_samples=0).results
    assert result.metrics["nonconverged_fraction"] == 0.0 and result.metrics["residual"]["max"] < 1e-2
    assert math.isnan(result.metrics["error"]["max"])  # no exact reference for a solved forward


class _Sqrt(nn.Module):
    """``y = x + 0.5 tanh(x)``, inverted by Newton's method: a user block with the hook. With
    ``lie`` it returns its start, claiming convergence its output contradicts."""

    def __init__(self, lie: bool = False) -> None:
        super().__init__()
        self.lie = lie

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * torch.tanh(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.solve_inverse(z)[0]

    def solve_inverse(self, z, *, tolerance=None, max_iter=None):
        tol, cap = tolerance or 1e-6, max_iter or (0 if self.lie else 50)
        x = z.clone()
        steps = torch.full((len(z),), cap)
        done = torch.zeros(len(z), dtype=torch.bool)
        for k in range(1, cap + 1):
            step = (x + 0.5 * torch.tanh(x) - z) / (1 + 0.5 / torch.cosh(x) ** 2)
            x = x - step
            met = step.abs().flatten(1).amax(1) <= tol
            steps = torch.where(met & ~done, k, steps)
            done |= met
        return x, Solve(steps, done | self.lie, cap, tol, "newton")


class _Chain(nn.Module):
    def __init__(self, lie: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Sqrt(), _Sqrt(lie)])
        self.input_shape = (3,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z)
        return z


def test_a_user_block_declares_its_solver_and_a_false_claim_is_caught() -> None:
    x = 6 * torch.rand(10, 3, generator=GEN().manual_seed(9)) - 3
    honest = _run(_Chain(lie=False), x, sweep_samples=0)
    assert honest.status is Status.PASS and honest.results[0].metrics["blocks"] == 2
    liar = _run(_Chain(lie=True), x, sweep_samples=0)
    (result,) = liar.results
    second = result.series["blocks"][1]
    assert liar.status is Status.FAIL and second["method"] == "newton"
    assert not any(second["converged"]) and second["residual_max"] > 1e-2


def test_a_model_without_iterative_blocks_is_skipped_with_the_reason() -> None:
    report = innaudit.audit("checkpoints/checkerboard-additive.pt", audits=["convergence"], samples=4, ood=[])
    assert report.audits[0].status is Status.SKIP and "no block inverts iteratively" in report.audits[0].message


def test_bad_sweep_options_are_refused() -> None:
    with pytest.raises(innaudit.ConfigError, match="sweep"):
        innaudit.audit(im.stable_linear_residual(), data=torch.zeros(2, 2), config={"convergence": {"sweep": [0.5]}})


def test_the_shipped_residual_flow_converges_everywhere() -> None:
    report = innaudit.audit(
        "checkpoints/checkerboard-residual.pt",
        audits=["convergence"],
        samples=16,
        config={"convergence": {"sweep": [10]}},
    )
    (audit,) = report.audits
    assert audit.status is Status.PASS
    for result in audit.results:
        assert result.metrics["blocks"] == 8 and result.metrics["nonconverged_fraction"] == 0.0
        assert np.isfinite(result.metrics["sweep"]["x10"]["error_max"])
