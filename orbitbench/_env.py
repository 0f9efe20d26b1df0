"""Process-wide environment defaults, set before TensorFlow / JAX can be imported.

neural-tangents imports TensorFlow and JAX; both print start-up noise and JAX would otherwise
preallocate most of a GPU's memory that PyTorch needs. `setdefault` keeps a user's own choice.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_ENABLE_X64", "1")
