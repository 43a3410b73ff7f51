"""Preflight findings are typed records counted by kind, never by their wording."""

from __future__ import annotations

from innaudit.audits.gradient import preflight
from innaudit.audits.preflight import PreflightFinding, PreflightKind, count, texts
from innaudit.loading.adapt import adapt_module
from tests.audits import gradient_models as gm
from tests.audits.test_gradient import DOMAIN


def _found(model: object) -> list[PreflightFinding]:
    adapted = adapt_module(model, DOMAIN, {"test": "preflight"})
    blocks = adapted.blocks()
    return preflight(adapted, blocks, [str(i) for i in range(len(blocks))])


def test_a_batchnorm_block_is_one_stateful_finding_naming_the_block() -> None:
    found = _found(gm.couplings(affine=False, batchnorm_at=2))
    assert [(f.kind, f.block) for f in found] == [(PreflightKind.STATEFUL_LAYERS, "2")]
    assert "BatchNorm1d" in found[0].text


def test_an_iterative_inverse_is_its_own_kind_and_counts_no_stateful_layer() -> None:
    model = gm.couplings(affine=False)
    model.inverse_kind, model.inverse_tolerance = "iterative", 1e-5  # type: ignore[assignment]
    found = _found(model)
    assert [f.kind for f in found] == [PreflightKind.ITERATIVE_INVERSE]
    assert count(found, PreflightKind.STATEFUL_LAYERS) == 0
    assert "1e-05" in found[0].text


def test_counting_reads_the_kind_not_the_words() -> None:
    """A sentence that happens to contain " holds " is not a stateful layer (the count once
    searched the messages for that word)."""
    found = [
        PreflightFinding(PreflightKind.COMPOSITION, "the chain holds a reshape: z differs"),
        PreflightFinding(PreflightKind.STATEFUL_LAYERS, "block 0 has Dropout", "0"),
    ]
    assert count(found, PreflightKind.STATEFUL_LAYERS) == 1
    assert texts(found) == ["the chain holds a reshape: z differs", "block 0 has Dropout"]
