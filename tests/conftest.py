"""Shared fixtures: the real embedded MNIST subset, loaded once per session."""

from __future__ import annotations

import pytest

from orbitbench.data import Digits, load_digits


@pytest.fixture(scope="session")
def mnist5k() -> Digits:
    return load_digits("mnist5k")


@pytest.fixture(scope="session")
def neural_tangents():
    """neural-tangents' stax (the reference kernels); skips the test where it is not installed."""
    from orbitbench.errors import OrbitbenchError
    from orbitbench.kernels import neural_tangents_stax

    try:
        return neural_tangents_stax()
    except OrbitbenchError as error:
        pytest.skip(str(error))
