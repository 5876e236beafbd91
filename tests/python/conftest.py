"""Shared fixtures of the Python suite."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def arr() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
