"""Shared fixtures for the difftraffic_rl tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Bit-reproducible CPU kernels (two threads may reorder float reductions)."""
    torch.set_num_threads(1)
