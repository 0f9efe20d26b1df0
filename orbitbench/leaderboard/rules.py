"""A track's rules as data, read from its sweep files: which entries may be ranked.

`min_in_test_acc` (a sweep file field; docs/SWEEPS.md has the convergence rule it encodes): a network
whose mean in-test accuracy at some group order falls below it has not learnt the task even in the
poses it saw, so its out-test says nothing about symmetry (a 2-epoch network at chance once ranked
3-7 on the smoke track). `leaderboard add` and `check` refuse such an entry with the reason.
`ranked: false` marks a smoke track: its entries are listed, never ranked.
"""

from __future__ import annotations

from typing import Any

from orbitbench.errors import OrbitbenchError
from orbitbench.leaderboard.schema import Entry


def learnt_shortfall(entry: Entry, spec: Any) -> str | None:
    """Why `entry` misses its sweep file's `min_in_test_acc` (None when it meets it or there is none)."""
    floor = getattr(spec, "min_in_test_acc", None)
    if floor is None:
        return None
    for result in entry.results:
        if result.in_test.mean < floor:
            return (f"in-test {result.in_test.mean:.3f} at n_poses={result.n_poses} is below the track's "
                    f"min_in_test_acc {floor} (sweeps/{spec.name}.yaml): the network has not learnt the task in "
                    "distribution, so its out-test is not ranked; train it longer (check convergence as "
                    "docs/SWEEPS.md does) and add it again")
    return None


def check_learnt(entry: Entry, spec: Any, source: str) -> None:
    """One `orbitbench:` line when the entry misses its track's convergence rule."""
    why = learnt_shortfall(entry, spec)
    if why is not None:
        raise OrbitbenchError(f"{source}: {why}")


def ranked_tracks(specs: dict[str, Any]) -> dict[str, bool]:
    """Track -> ranked? A track is ranked unless one of its sweep files says `ranked: false`."""
    ranked: dict[str, bool] = {}
    for spec in specs.values():
        ranked[spec.track] = ranked.get(spec.track, True) and bool(getattr(spec, "ranked", True))
    return ranked
