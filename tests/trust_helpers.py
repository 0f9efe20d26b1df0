"""Harmless stand-ins for code planted in data (tests/test_trust.py): each writes a marker file
when it runs, so a test can tell that orbitbench ran nothing it was handed as data."""

from __future__ import annotations

import os
from pathlib import Path

MARKER_ENV = "ORBITBENCH_TEST_MARKER"


def write_marker(*args, **kwargs) -> None:
    """Called (a planted `class_path`, builder or `_instantiator`) or unpickled (`Payload`)."""
    Path(os.environ.get(MARKER_ENV, "orbitbench-test-marker")).write_text(f"ran with {args!r} {kwargs!r}\n")


class Marker:
    """Instantiated from a planted `class_path`."""

    def __init__(self, *args, **kwargs) -> None:
        write_marker(*args, **kwargs)


class Payload:
    """Pickled into a checkpoint: unpickling it with `weights_only=False` calls `write_marker`."""

    def __reduce__(self):
        return write_marker, ("unpickled",)
