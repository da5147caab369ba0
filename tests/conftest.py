"""Shared fixtures: seeds, and textbook structures."""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (modules that flip or extract many
    small problems run faster so on 2 cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def textbook_structures():
    from textbook import textbook

    return textbook()
