"""orbitbench: can an architecture learn a symmetry it has only partly seen?

Data flows one way: source images (`orbitbench.data`) -> group action (`orbitbench.orbits`)
-> split (`orbitbench.datamodules`) -> model (`orbitbench.models`) -> the Lightning run
(`orbitbench.run`: module, callbacks, run record) -> sweep -> leaderboard. The kernel theory
(`orbitbench.theory`) predicts from a network's kernel whether a held-out pose will be classified
right; `orbitbench.experiments` are the paper's kernel experiments. docs/ARCHITECTURE.md.
"""

from orbitbench import _env  # noqa: F401  (JAX defaults before anything imports it)
from orbitbench import _moved

_moved.install()

__version__ = "0.1.0"


def load_model(entry, cell: str, **kwargs):
    """The trained network of a leaderboard cell (`orbitbench.leaderboard.load.load_model`): from the
    local cache, or re-run with the entry's recorded settings and checked bit-identical first."""
    from orbitbench.leaderboard.load import load_model as _load_model

    return _load_model(entry, cell, **kwargs)
