"""pyro / torch.distributions specifics: directions swapped, caches broken, cache-only inverses.

The round trip, the failing unstable model and weights files: ``test_adapters.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.adapters.helpers import CASES

CASES["pyro"].require()

import pyro.distributions.transforms as T  # noqa: E402

from innaudit.core.errors import LoadError  # noqa: E402
from innaudit.loading.adapters import adapt_object  # noqa: E402
from tests.adapters.helpers import (  # noqa: E402
    DOMAIN,
    assert_blocks_compose,
    assert_matches,
    audit,
    factory,
    factory_module,
    hand_pyro,
    roundtrip_metrics,
    write_inputs,
)

LIB = "pyro"


def test_cache_left_on_is_not_a_perfect_round_trip(tmp_path: Path) -> None:
    data, x = write_inputs(tmp_path)
    t = factory_module(LIB).build()
    assert all(p._cache_size == 1 for p in t.parts)  # the factory leaves pyro's cache on
    with torch.no_grad():
        assert float((t(t.inv(x)) - x).abs().max()) == 0.0  # the trap: the cache hands x back
    _code, report, _ = audit(tmp_path, factory(LIB), data)
    metrics = roundtrip_metrics(report)
    assert metrics["error_l2"]["max"] > 0.0 and metrics["error_l2"]["median"] > 0.0
    assert report["target"]["model"].endswith("pyro_models.py:build")
    assert_matches(metrics, hand_pyro(factory_module(LIB).build(), x))


def test_adapter_switches_caches_off_even_without_clones() -> None:
    t = factory_module(LIB).build()
    model = adapt_object(t, DOMAIN, {}).model
    assert model.info.source["caches_switched_off"] == "2"
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model._forward(model.module, x)  # no clone on purpose
        back = model._inverse(model.module, z)
    assert back is not x and float((back - x).abs().max()) > 0.0


def test_blocks_and_log_det_follow_the_data_to_latent_direction() -> None:
    t = factory_module(LIB).build()
    model = adapt_object(t, DOMAIN, {}).model
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    assert_blocks_compose(model, x)
    ld = model.forward_and_log_det(x)[1]
    brute = torch.stack(
        [
            torch.linalg.slogdet(
                torch.autograd.functional.jacobian(lambda v: model.forward(v[None], grad=True)[0], xi)
            )[1]
            for xi in x[:4]
        ]
    )
    torch.testing.assert_close(ld[:4], brute, atol=1e-4, rtol=1e-4)


def test_plain_torch_transform_and_cache_only_inverses() -> None:
    affine = torch.distributions.AffineTransform(torch.tensor(1.0), torch.tensor(3.0), cache_size=1)
    model = adapt_object(affine, DOMAIN, {}).model
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model.forward(x), (x - 1.0) / 3.0)
    wide = model.copy_as(torch.float64)
    assert wide.forward(x.double()).dtype == torch.float64
    with pytest.raises(LoadError, match="no inverse except its cache"):
        adapt_object(T.Planar(4), DOMAIN, {})
