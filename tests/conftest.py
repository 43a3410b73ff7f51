"""Shared fixtures and the one-thread policy of the test processes. The helpers the fixtures
return live in :mod:`tests.helpers`; import them from there."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The test models are tiny (8x8 digits, 2-D toys, small images): torch's intra-op threads only add
# barrier waits there, which cost up to 35x per operation when another process holds a core (a
# 3x3 convolution of a batch of 4: 4.4 ms with 2 threads against 0.12 ms with 1, measured on 2
# busy cores). One thread per process, inherited by every subprocess the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tests.helpers import FIXTURE_MODELS, CliResult, invoke_cli, invoke_subprocess  # noqa: E402


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """``run_cli("run", MODEL, ...)`` -> :class:`CliResult`, in-process."""
    return invoke_cli


@pytest.fixture
def cli_subprocess() -> Callable[..., CliResult]:
    """``cli_subprocess("run", MODEL, ..., env={...})`` -> :class:`CliResult`, in a real process."""
    return invoke_subprocess


@pytest.fixture
def fixture_models() -> Path:
    """Path of ``tests/fixtures_models.py`` (use as ``f"{fixture_models}:exact"``)."""
    return FIXTURE_MODELS
