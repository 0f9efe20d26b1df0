"""Uncertainty of a track's scores: units, t-intervals, paired differences and rank ranges.

A *unit* is one (leave-out class, seed) pair: the cells of a unit share their held-out digits
and training seed, so a unit's score is its out-test accuracy averaged over the track's group
orders, and two entries of a track are paired unit by unit (docs/THEORY.md §5: the spread over
leave-out classes is the dominant one). Intervals are two-sided 95% Student-t intervals over
units; with one unit the interval is the whole [0, 1] range (nothing is known about the spread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from orbitbench.stats import LEVEL, t_interval

__all__ = ["LEVEL", "Unit", "clip", "paired_difference", "rank_ranges", "t_interval", "unit_scores"]
Unit = tuple[int, int]  # (leave-out class, seed)


def unit_scores(cells: Iterable[tuple[Unit, int, float]]) -> dict[Unit, float]:
    """(unit, group order, out-test) per cell -> unit -> out-test averaged over the group orders."""
    grouped: dict[Unit, list[float]] = {}
    for unit, _, value in cells:
        grouped.setdefault(unit, []).append(float(value))
    return {unit: sum(v) / len(v) for unit, v in sorted(grouped.items())}


def paired_difference(a: Mapping[Unit, float], b: Mapping[Unit, float]) -> tuple[float, float, float]:
    """Mean and 95% interval of a - b over the units both have (paired by cell)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("no shared units to pair")
    return t_interval([a[u] - b[u] for u in shared])


def rank_ranges(scores: Mapping[str, Mapping[Unit, float]]) -> dict[str, tuple[int, int]]:
    """Name -> (best, worst) rank: a is ahead of b only where the paired a - b interval is above 0.

    Entries whose paired difference interval contains 0 cannot be told apart, so each may take
    the other's rank; an entry's best rank is 1 + the entries surely ahead of it, its worst is
    the count of entries minus those surely behind it.
    """
    names = list(scores)
    ahead = {name: 0 for name in names}
    behind = {name: 0 for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            _, low, high = paired_difference(scores[a], scores[b])
            if low > 0:
                ahead[b] += 1
                behind[a] += 1
            elif high < 0:
                ahead[a] += 1
                behind[b] += 1
    return {name: (1 + ahead[name], len(names) - behind[name]) for name in names}


def clip(value: float) -> float:
    """Interval ends on the accuracy scale [-1, 1] (an infinite end: nothing known)."""
    return max(-1.0, min(1.0, value))
