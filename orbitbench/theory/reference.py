"""The independent reference: neural-tangents, found beside the environment rather than in it.

orbitbench computes every kernel in torch; neural-tangents 0.6.5 is what the tests and benchmarks
check those kernels against. Its package declares TensorFlow and tf2jax for its TensorFlow bridge
(`neural_tangents.experimental`), which orbitbench never uses and which would hold TensorBoard at a
release that no longer starts. So `make install` puts neural-tangents alone (`pip install
--no-deps --target <venv>/reference`) next to the venv's packages, where `pip check` does not look,
and its real needs (jax, jaxlib, frozendict) come from the `reference` extra. Importing it here
registers an empty `neural_tangents.experimental` first, so the TF bridge is never loaded.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

from orbitbench.errors import OrbitbenchError

REFERENCE_ENV = "ORBITBENCH_REFERENCE"
INSTALL_HINT = (
    "pip install 'orbitbench[reference]' && pip install --no-deps --target <venv>/reference "
    "neural-tangents==0.6.5 (what `make install` does)"
)


def reference_dir() -> Path:
    """Where the reference lives: `$ORBITBENCH_REFERENCE`, else `<sys.prefix>/reference`."""
    return Path(os.environ.get(REFERENCE_ENV) or Path(sys.prefix, "reference"))


def neural_tangents() -> types.ModuleType:
    """The `neural_tangents` package (JAX in float64), or one clear error saying how to install it."""
    if "neural_tangents" not in sys.modules:
        folder = str(reference_dir())
        if Path(folder).is_dir() and folder not in sys.path:
            sys.path.append(folder)
        stub = types.ModuleType("neural_tangents.experimental", "TensorFlow bridge: not loaded by orbitbench")
        sys.modules.setdefault("neural_tangents.experimental", stub)
    try:
        import jax
        import neural_tangents
    except Exception as error:  # ImportError, or JAX failing inside the import
        raise OrbitbenchError(
            f"backend='neural_tangents' needs the reference install ({type(error).__name__}: {error}): "
            f"{INSTALL_HINT}; or use backend='torch'"
        ) from error
    jax.config.update("jax_enable_x64", True)
    return neural_tangents
