"""orbitbench: can an architecture learn a symmetry it has only partly seen?

Data flows one way: source images (`orbitbench.data`) -> group action (`orbitbench.orbits`)
-> split (`orbitbench.datamodules`) -> model (`orbitbench.models`) -> callbacks -> logs /
leaderboard. The theory side (`orbitbench.spectral`, `orbitbench.kernels`, `orbitbench.ntk`)
predicts from a network's kernel whether a held-out pose will be classified right.
"""

from orbitbench import _env  # noqa: F401  (JAX defaults before anything imports it)

__version__ = "0.1.0"
