"""Fixtures shared by the hardening tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hardening.tiny import save_tiny


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """A native checkpoint of :data:`tests.hardening.tiny.TINY` in the test's folder."""
    return save_tiny(tmp_path / "model.pt")
