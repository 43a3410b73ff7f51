"""The gradient audit: known answers for memory-saving gradients (tiny models, seconds)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import innaudit
from innaudit.audits import REGISTRY
from innaudit.audits.gradient_compare import culprit
from innaudit.core.domain import DataDomain
from innaudit.core.metrics import covers
from innaudit.core.results import Status, leaves
from innaudit.data import Role, resolve_dataset
from tests.audits import gradient_models as gm
from tests.helpers import invoke_cli

MODELS = Path(__file__).with_name("gradient_models.py")
DOMAIN = DataDomain(shape=(6,), low=-1.0, high=1.0)


def _result(model: nn.Module, **options: object):
    cfg = {
        "audits": ["gradient"],
        "samples": 256,
        "ood": ["gaussian"],
        "gradient": {"batches": 4, "batch": 64, **options},
    }
    report = innaudit.audit(_adapted(model), data="uniform", config=cfg)
    audit = report.audits[0]
    assert audit.error is None, audit.error
    return audit.results[0]


def _adapted(model: nn.Module):
    from innaudit.loading.adapt import adapt_module

    return adapt_module(model, DOMAIN, {"test": "gradient"})


def _hand_rel_error(model: gm.Chain, x: torch.Tensor) -> float:
    """The memory-saving algorithm written out once more, in float64 with ``.backward()``."""
    model = copy.deepcopy(model).double().eval()
    x = x.double()
    params = list(model.parameters())
    z, ld = model(x)
    (0.5 * z.pow(2).sum(1) - ld).mean().backward()
    true = torch.cat([p.grad.reshape(-1) for p in params])
    model.zero_grad()
    with torch.no_grad():
        z, ld = model(x)
    z, ld = z.requires_grad_(), ld.requires_grad_()
    (0.5 * z.pow(2).sum(1) - ld).mean().backward()
    g_y, g_ld, y = z.grad, ld.grad, z.detach()
    for block in reversed(model.blocks):
        with torch.no_grad():
            h = block.inverse(y)
        h.requires_grad_()
        out, d = block(h)
        torch.autograd.backward([out, d], [g_y, g_ld])
        g_y, y = h.grad, h.detach()
    mem = torch.cat([p.grad.reshape(-1) for p in params])
    return float((mem - true).norm() / true.norm())


def test_exact_additive_model_passes_from_the_cli(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = invoke_cli(
        "run",
        f"{MODELS}:additive",
        "--data",
        "uniform",
        "--ood",
        "gaussian",
        "--audit",
        "gradient",
        "--samples",
        "128",
        "--gradient-loss",
        "nll",
        "-o",
        "json",
        "-o",
        f"html={html}",
    )
    assert out.code == 0, out.stderr
    page = html.read_text()
    assert "<svg" in page and "reconstruction_error" in page and "gradient_error" in page  # per-block plot
    result = json.loads(out.stdout)["audits"][0]["results"][0]
    assert result["metrics"]["loss"] == "nll"
    assert result["metrics"]["rel_error_l2"]["max"] <= 1e-4
    assert result["metrics"]["culprit"] == ""
    assert result["metrics"]["nonfinite_fraction"] == 0.0


def test_inverse_off_by_a_known_factor_matches_the_hand_computation() -> None:
    model = gm.off_by_factor()
    result = _result(model)
    ds = resolve_dataset("uniform", Role.IN_DISTRIBUTION, DOMAIN, 256, 0)
    hand = [_hand_rel_error(model, ds.make(s, s + 64)) for s in range(0, 256, 64)]
    m = result.metrics
    assert m["loss"] == "nll"
    assert m["rel_error_l2"]["median"] == pytest.approx(float(np.median(hand)), rel=0.3)
    assert m["rel_error_l2"]["max"] == pytest.approx(max(hand), rel=0.3)
    assert m["rel_error_l2"]["max"] > 1e-2
    assert result.status is Status.FAIL
    assert m["culprit_index"] == 2 and m["culprit"].startswith("2:")
    assert "block 2:" in result.message
    # blocks above the broken one are reconstructed to rounding, the broken one is not
    recon = result.series["blocks"]["reconstruction_error"]
    assert max(recon[3:]) < 1e-5 < recon[2]


def test_chain_of_scalings_has_the_closed_form_error() -> None:
    """``y = a * x`` K times, block m's inverse times c, projection loss: block k <= m sees c-times
    its input, so g'_k = c g_k there and rel = |c - 1| sqrt((m + 1) / K) when all a are equal."""
    a = torch.tensor([1.5, 0.8, 1.2, 0.9, 1.1, 0.7])
    k, m, c = 5, 1, 1.1
    chain = gm.Chain([gm.Diagonal(a, c if i == m else 1.0) for i in range(k)])
    metrics = _result(chain, loss="projection").metrics
    assert metrics["loss"] == "projection"
    assert metrics["rel_error_l2"]["max"] == pytest.approx(abs(c - 1) * math.sqrt((m + 1) / k), rel=1e-4)
    assert metrics["culprit_index"] == m


def test_batchnorm_inside_a_block_is_a_warning() -> None:
    result = _result(gm.couplings(affine=False, batchnorm_at=1))
    assert result.metrics["stateful_layers"] == 1
    assert "BatchNorm1d" in result.message and "block 1:" in result.message
    assert result.status is Status.WARN
    assert result.metrics["rel_error_l2"]["max"] <= 1e-4  # eval mode: the re-run itself is exact


def test_factory_loss_and_projection_are_used_when_asked() -> None:
    assert _result(gm.with_loss()).metrics["loss"] == "model"
    assert _result(gm.couplings(), loss="projection").metrics["loss"] == "projection"
    auto = _result(_NoLogDetChain())
    assert auto.metrics["loss"] == "projection" and "no per-block log-dets" in auto.message
    assert auto.metrics["rel_error_l2"]["max"] <= 1e-6


def test_every_metric_is_declared() -> None:
    declared = [m.path for m in REGISTRY["gradient"].metrics]
    metrics = _result(gm.off_by_factor()).metrics
    numeric = [p for p, v in leaves(metrics) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numeric and all(any(covers(d, p) for d in declared) for p in numeric)


def test_culprit_walks_back_from_the_output() -> None:
    assert culprit(np.array([1e-3, 1e-3, 1e-9, 1e-9]), 1e-5) == 1
    assert culprit(np.array([1e-9, math.inf, 1e-9]), 1e-5) == 1
    assert culprit(np.array([1e-9, 1e-9]), 1e-5) == -1


def test_iterative_inverse_is_named_with_its_tolerance() -> None:
    model = gm.couplings(affine=False)
    model.inverse_kind, model.inverse_tolerance = "iterative", 1e-5  # type: ignore[assignment]
    result = _result(model)
    assert "iterative inverse" in result.message and "1e-05" in result.message


class _MemcnnChain(nn.Module):
    """Blocks of ``memcnn.InvertibleModuleWrapper`` around memcnn couplings (no log-det)."""

    input_shape = (6,)
    data_range = (-1.0, 1.0)

    def __init__(self, memcnn, broken: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        fns = [memcnn.AdditiveCoupling(Fm=nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))) for _ in range(3)]
        if broken:  # block 1's inverse reconstructs 10 % too large
            inverse = fns[1].inverse
            fns[1].inverse = lambda y: 1.1 * inverse(y)  # type: ignore[method-assign]
        self.blocks = nn.ModuleList([memcnn.InvertibleModuleWrapper(f, keep_input=False) for f in fns])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z)
        return z


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:TypedStorage is deprecated:UserWarning")
@pytest.mark.parametrize("broken", [False, True])
def test_memcnn_wrappers_are_measured_disabled_and_by_their_own_reconstruction(broken: bool) -> None:
    memcnn = pytest.importorskip("memcnn")
    model = _MemcnnChain(memcnn, broken)
    result = _result(model)
    m = result.metrics
    assert m["loss"] == "projection"  # memcnn reports no log-det
    assert all(not b.disable for b in model.blocks)  # the wrappers are restored
    if broken:
        assert m["rel_error_l2"]["max"] > 1e-2 and m["library_rel_error"]["max"] > 1e-2
        assert m["culprit_index"] == 1 and result.status is Status.FAIL
    else:
        assert m["rel_error_l2"]["max"] < 1e-4 and m["library_rel_error"]["max"] < 1e-4
        assert result.status is Status.PASS


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.full((6,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.a

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.a


class _NoLogDetChain(nn.Module):
    """Two scalings that report no log-det."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Scale(), _Scale()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[1](self.blocks[0](x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks[0].inverse(self.blocks[1].inverse(z))


@pytest.mark.parametrize(
    "loss, expected",
    [("model", "gradient_loss"), ("nll", "use --gradient-loss projection")],
)
def test_a_loss_that_cannot_be_used_is_an_error_that_says_what_to_do(loss: str, expected: str) -> None:
    chain = _NoLogDetChain()
    cfg = {"audits": ["gradient"], "samples": 64, "ood": ["gaussian"], "gradient": {"loss": loss}}
    report = innaudit.audit(_adapted(chain), data="uniform", config=cfg)
    assert report.audits[0].status is Status.ERROR
    assert expected in (report.audits[0].error or "")
    assert report.exit_code == 2


def test_an_unknown_loss_is_refused_when_the_config_is_read() -> None:
    cfg = {"audits": ["gradient"], "gradient": {"loss": "bogus"}}
    with pytest.raises(innaudit.ConfigError, match=r"gradient\.loss is 'bogus'; expected one of: auto, model"):
        innaudit.audit(_adapted(_NoLogDetChain()), data="uniform", config=cfg)


def test_same_seed_same_numbers_and_the_model_is_left_as_it_was() -> None:
    model = gm.off_by_factor()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = _result(model, loss="projection"), _result(model, loss="projection")
    assert first.metrics == second.metrics
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training


@pytest.mark.parametrize("broken", [False, True])
def test_a_memcnn_style_wrapper_is_recognised_without_memcnn(broken: bool) -> None:
    model = gm.memcnn_like(broken)
    m = _result(model).metrics
    assert all(not b.disable for b in model.blocks)
    if broken:
        assert m["library_rel_error"]["max"] > 1e-2 and m["culprit_index"] == 1
    else:
        assert m["library_rel_error"]["max"] < 1e-5 and m["rel_error_l2"]["max"] < 1e-5


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "lib, package",
    [("freia", "FrEIA"), ("nflows", "nflows"), ("normflows", "normflows"), ("zuko", "zuko"), ("pyro", "pyro")],
)
def test_library_chains_are_walked_through_their_blocks(lib: str, package: str) -> None:
    pytest.importorskip(package)
    from tests.adapters.helpers import load

    model = load(lib)
    report = innaudit.audit(model, data="gaussian", config={"audits": ["gradient"], "samples": 64, "ood": ["uniform"]})
    result = report.audits[0].results[0]
    assert result.metrics["blocks"] >= 2 and result.metrics["parameters"] > 0
    assert result.metrics["rel_error_l2"]["max"] <= 1e-4 and result.metrics["nonfinite_fraction"] == 0.0


def test_the_cost_counts_the_passes_the_audit_makes() -> None:
    """Per sample the audit runs each block forward twice (the true pass, the walk's re-run with
    autograd: two VJPs to the parameters) and inverts it once (the walk); its own pass without
    autograd is the true pass's ``z``. Counted on the audit's batches of 16 (the planner's
    timings and the set's checks take 1, 2 or 32 rows)."""
    from innaudit.audits.gradient import PARAMETER_VJP, Gradient

    model = gm.couplings()
    rows = {"forward": 0, "inverse": 0}

    def count(kind: str, n: int) -> None:
        rows[kind] += n if n == 16 else 0

    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: count("forward", len(args[0])))
        real = block.inverse
        block.inverse = lambda y, real=real: count("inverse", len(y)) or real(y)  # type: ignore[method-assign]
    result = _result(model, batches=3, batch=16)
    samples, blocks = result.metrics["samples"], len(model.blocks)
    assert samples == 48
    assert rows == {"forward": 2 * samples * blocks, "inverse": samples * blocks}
    cost = Gradient.costs(6, Gradient.options)[""]
    assert cost.per_sample.inverse == 1 and cost.per_sample.forward == 0
    assert cost.per_sample.vjp == 2 * PARAMETER_VJP
    datasets = [
        resolve_dataset(s, r, DOMAIN, 1000, 0) for s, r in (("uniform", Role.IN_DISTRIBUTION), ("gaussian", Role.OOD))
    ]
    assert Gradient.capacities(datasets, {"batches": 3, "batch": 16}, 1000) == [48]  # OOD sets are not measured
