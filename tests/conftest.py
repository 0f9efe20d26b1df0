"""Shared fixtures: the real embedded MNIST subset, loaded once per session."""

from __future__ import annotations

import pytest

from orbitbench.data import Digits, load_digits


@pytest.fixture(scope="session")
def mnist5k() -> Digits:
    return load_digits("mnist5k")
