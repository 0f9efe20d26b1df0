"""Small statistics shared by the theory experiments, the NTK callback and the sweep tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation of two 1-D sequences (tensors too); NaN when either is constant or too short."""
    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, population std, count) of a non-empty collection: the spread over leave-out classes."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), len(values)
