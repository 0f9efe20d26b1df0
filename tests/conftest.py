"""Shared fixtures: the real embedded MNIST subset, loaded once per session."""

from __future__ import annotations

import os

import pytest
import torch

from orbitbench.data import Digits, load_digits


@pytest.fixture(scope="session")
def mnist5k() -> Digits:
    return load_digits("mnist5k")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny training runs: on a shared 2-core machine two threads contend
    with other processes and run far slower than one; on tiny runs one is also fastest when idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def neural_tangents():
    """neural-tangents' stax (the reference kernels); skips the test where it is not installed."""
    from orbitbench.errors import OrbitbenchError
    from orbitbench.kernels import neural_tangents_stax

    try:
        return neural_tangents_stax()
    except OrbitbenchError as error:
        if os.environ.get("ORBITBENCH_REQUIRE_REFERENCE"):  # `make test` sets it: CI never skips these
            raise
        pytest.skip(str(error))
