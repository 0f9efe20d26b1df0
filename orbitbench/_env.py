"""Process-wide environment defaults, set before JAX can be imported.

JAX (for the neural-tangents reference, `orbitbench.theory.reference`) would otherwise preallocate most
of a GPU's memory that PyTorch needs, and compute in float32. `setdefault` keeps a user's own choice.
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_ENABLE_X64", "1")
