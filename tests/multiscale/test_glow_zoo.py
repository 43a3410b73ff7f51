"""The zoo's multi-scale Glow and the patches data set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import innaudit
from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.loading import load_model
from innaudit.loading.adapt import adapt_module
from innaudit.loading.native import save_checkpoint
from innaudit.zoo.glow import Split

SMALL = {"shape": [3, 8, 8], "levels": 2, "steps": 1, "hidden": 8, "seed": 0}


def _glow(**overrides: object) -> torch.nn.Module:
    model = zoo.build("glow", {**SMALL, **overrides})
    with torch.no_grad():  # as after training: the zero-initialized convs move
        for name, p in model.named_parameters():
            if "out" in name or "prior" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


@pytest.mark.parametrize("coupling,prior", [("affine", "learned"), ("additive", "fixed")])
def test_glow_is_a_bijection_onto_a_list_of_levels(coupling: str, prior: str) -> None:
    model = _glow(coupling=coupling, split_prior=prior)
    x = torch.rand(5, 3, 8, 8)
    z, log_det = model(x)
    assert [tuple(t.shape[1:]) for t in z] == [(6, 4, 4), (24, 2, 2)]
    torch.testing.assert_close(model.inverse(z), x, atol=1e-5, rtol=0)
    flat = lambda t: torch.cat([level.flatten() for level in model(t.reshape(1, 3, 8, 8))[0]])  # noqa: E731
    jacobian = torch.autograd.functional.jacobian(flat, x[0].reshape(-1).double().float())
    assert float(log_det[0]) == pytest.approx(float(torch.linalg.slogdet(jacobian)[1]), abs=1e-3)


def test_glow_blocks_are_named_by_level_and_chain_to_the_latent(tmp_path: Path) -> None:
    module = _glow()
    model = adapt_module(module, DataDomain(shape=(3, 8, 8)), {"test": "glow"})
    names = [b.info.architecture for b in model.blocks()]
    assert names[:5] == [
        "level 0 / block 0: Squeeze2d",
        "level 0 / block 1: ActNorm",
        "level 0 / block 2: InvertibleConv1x1",
        "level 0 / block 3: Coupling",
        "level 0 / block 4: Split",
    ]
    assert names[-1] == "level 1 / block 3: Coupling"
    x = torch.rand(3, 3, 8, 8)
    whole = model.forward(x)
    h = x
    for block in model.blocks():
        h = block.carry(block.forward(h))
    torch.testing.assert_close(h, model.latent.unflatten(whole)[1])
    assert isinstance(module.blocks[4], Split)


def test_a_glow_checkpoint_audits_with_per_level_results(tmp_path: Path) -> None:
    path = tmp_path / "glow.pt"
    save_checkpoint(path, _glow(), "glow", SMALL, DataDomain(shape=(3, 8, 8), levels=256), {"recipe": "test"})
    assert load_model(str(path)).model.info.architecture == "glow"
    cfg = {
        "audits": ["roundtrip", "sampling", "layers"],
        "samples": 8,
        "ood": ["gaussian"],
        "layers": {"samples": 8, "worst": 1},
    }
    report = innaudit.audit(str(path), data="uniform", config=cfg)
    assert not report.errors
    roundtrip = next(a for a in report.audits if a.id == "roundtrip").results[0].metrics
    assert roundtrip["levels"]["0"]["nonfinite_fraction"] == 0.0 and roundtrip["levels"]["1"]["norm"]["max"] > 0
    layers = next(a for a in report.audits if a.id == "layers").results[0]
    assert layers.series["blocks"]["name"][4] == "4:level 0 / block 4: Split"


def test_patches_splits_are_8_bit_colour_crops() -> None:
    pytest.importorskip("skimage")
    from innaudit.data.patches import load_patches

    sizes = {split: load_patches(split).shape for split in ("train", "test", "ood")}
    assert sizes["train"][1:] == (3, 32, 32) and (sizes["train"][0], sizes["test"][0]) == (686, 172)
    test = load_patches("test")
    assert (test * 256 == (test * 256).round()).all() and test.min() >= 0 and test.max() < 1
    with pytest.raises(DataError, match="patches:train, patches:test or patches:ood"):
        load_patches("val")


def test_patches_without_scikit_image_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from innaudit.data import patches

    patches._split.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)
    try:
        with pytest.raises(DataError, match=r"pip install 'innaudit\[images\]'"):
            patches.load_patches("test")
    finally:
        patches._split.cache_clear()


@pytest.mark.slow
def test_a_short_patches_glow_run_is_bitwise_deterministic() -> None:
    pytest.importorskip("skimage")
    from innaudit.train import run_recipe

    first, second = (run_recipe("patches-glow", seed=3, steps=2) for _ in range(2))
    for (name, a), b in zip(first.module.state_dict().items(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert first.provenance["test_nll_bits_per_dim"] == second.provenance["test_nll_bits_per_dim"]
