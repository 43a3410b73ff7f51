"""nflows specifics: the blocks are the composite's transforms, in order.

The round trip, the failing unstable model and weights files: ``test_adapters.py``.
"""

from __future__ import annotations

from pathlib import Path

from tests.adapters.helpers import CASES, assert_blocks_compose, load, write_inputs

CASES["nflows"].require()


def test_blocks_are_the_composite_transforms(tmp_path: Path) -> None:
    x = write_inputs(tmp_path)[1]
    model = load("nflows", "build_unstable")
    blocks = model.blocks()
    assert [type(b.module).__name__ for b in blocks] == ["AffineCouplingTransform", "ReversePermutation"] * 2
    assert_blocks_compose(model, x)
    assert float((blocks[1].inverse(blocks[1].forward(x)) - x).abs().max()) == 0.0
