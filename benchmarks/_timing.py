"""Shared timing for the benchmark scripts: medians of methods timed in turns."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def round_robin(methods: dict[str, Callable[[], object]], rounds: int, warmup: bool = False) -> dict[str, float]:
    """Median seconds of each method, timed in turns so that load drift hits all of them alike.

    `warmup` runs every method once first, untimed (JIT compilation, cached tables).
    """
    if warmup:
        for work in methods.values():
            work()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, work in methods.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
