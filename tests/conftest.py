"""Shared fixtures: the real embedded MNIST subset, loaded once per session.

The embedded subset is the suite's data: `make install` puts full MNIST in the user's cache,
where `source: auto` would find it, so the whole session (and every command it starts) points
the cache at an empty folder. Tests of full MNIST itself ask for `installed_mnist`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from orbitbench.data import DATA_ENV, Digits, load_digits, raw_folder

USER_MNIST = raw_folder()  # the user's cache, read before the session hides it


@pytest.fixture(scope="session", autouse=True)
def embedded_data_only(tmp_path_factory):
    before = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str(tmp_path_factory.mktemp("no-full-mnist"))
    yield
    if before is None:
        del os.environ[DATA_ENV]
    else:
        os.environ[DATA_ENV] = before


@pytest.fixture(scope="session")
def installed_mnist() -> Path:
    """The user's full-MNIST folder (MNIST/raw) as `make install` left it; skips where it is not installed."""
    from orbitbench.data_cache import installed

    if not installed(USER_MNIST.parent.parent):
        pytest.skip(f"full MNIST is not installed in {USER_MNIST} (`make install` fetches it)")
    return USER_MNIST


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
    from orbitbench.theory.kernels import neural_tangents_stax

    try:
        return neural_tangents_stax()
    except OrbitbenchError as error:
        if os.environ.get("ORBITBENCH_REQUIRE_REFERENCE"):  # `make test` sets it: CI never skips these
            raise
        pytest.skip(str(error))
