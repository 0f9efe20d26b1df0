"""The statistics every floor shares: mean and spread, Pearson, the Student-t interval of a mean (over
leave-out classes and seeds) and the Wilson interval of a proportion (over probe digits)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95


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


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `values`: Student t with len - 1 degrees of freedom."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(accuracy: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion `accuracy` observed over `n` independent units.

    `n` counts the independent units (probe seeds): several held-out poses of one seed are one unit,
    so pass the seed count and the seed-averaged accuracy. (0, 1) for n = 0.
    """
    if n <= 0 or math.isnan(accuracy):
        return 0.0, 1.0
    centre = accuracy + z * z / (2 * n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - half) / denominator), min(1.0, (centre + half) / denominator)
