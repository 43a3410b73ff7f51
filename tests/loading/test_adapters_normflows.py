"""normflows specifics: its forward is latent -> data, so innaudit's forward is its inverse.

The round trip, the failing unstable model and weights files: ``test_adapters.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.adapters.helpers import CASES, factory_module, load, write_inputs

CASES["normflows"].require()

LIB = "normflows"


def test_direction_is_data_to_latent_with_normflows_log_det(tmp_path: Path) -> None:
    x = write_inputs(tmp_path)[1]
    nf_model = factory_module(LIB).build().eval()
    model = load(LIB)
    z, ld = model.forward_and_log_det(x)
    with torch.no_grad():
        z_ref, ld_ref = nf_model.inverse_and_log_det(x)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(ld, ld_ref)
    assert len(model.blocks()) == 4
    assert type(model.blocks()[0].module).__name__ == "Permute"  # the last layer comes first
