"""Files the repair tests work on: tiny native checkpoints with known failures, and their data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from innaudit.loading.native import save_checkpoint

from . import models


def _native(path: Path, module: object, config: dict[str, object]) -> Path:
    return save_checkpoint(path, module, "coupling-vector", config, models.DOMAIN, {"recipe": "test"})  # type: ignore[arg-type]


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    """400 training points in ``[0, 0.1]^2``."""
    path = tmp_path / "train.npy"
    np.save(path, models.train_data(400))
    return path


@pytest.fixture
def overflow_ckpt(tmp_path: Path) -> Path:
    """:func:`models.overflow_flow` as a native checkpoint."""
    return _native(tmp_path / "overflow.pt", models.overflow_flow(), models.overflow_config())


@pytest.fixture
def precision_ckpt(tmp_path: Path) -> Path:
    """:func:`models.precision_flow` (ActNorm log-scale -90) as a native checkpoint."""
    return _native(tmp_path / "precision.pt", models.precision_flow(), models.precision_config())


@pytest.fixture
def healthy_ckpt(tmp_path: Path) -> Path:
    """The additive flow with an identity ActNorm: invertible everywhere."""
    return _native(tmp_path / "healthy.pt", models.precision_flow(0.0), models.precision_config())


@pytest.fixture
def ill_ckpt(tmp_path: Path) -> Path:
    """:func:`models.ill_conditioned_flow` (condition number 1e7) as a native checkpoint."""
    return _native(tmp_path / "ill.pt", models.ill_conditioned_flow(), models.ill_conditioned_config())


@pytest.fixture
def hinge_ckpt(tmp_path: Path) -> Path:
    """:func:`models.hinge_overflow_flow` (optimal on the training data) as a native checkpoint."""
    return _native(tmp_path / "hinge.pt", models.hinge_overflow_flow(), models.overflow_config())
