"""`orbitbench leaderboard`: entries whose every number is recomputed from the run records they carry.

    schema     the entry file (per-cell records, aggregates, metadata, verification)
    integrity  protocol from the cells vs the track, recomputation, checks, re-runs
    intervals  units, t-intervals, paired differences to the baseline, rank ranges
    render     README.md (Markdown), index.html (self-contained page), the figure
    cli        add / build / check / verify as typed functions (`orbitbench.cli` exposes them through jsonargparse)
    rules      a track's rules from its sweep files: min_in_test_acc (refused below), ranked
    load       a cell's trained network: cached, or re-run and checked bit-identical (`orbitbench.load_model`)
"""

from orbitbench.leaderboard.cli import add, build, check, load_entries, parse_entry, verify

__all__ = ["add", "build", "check", "load_entries", "parse_entry", "verify"]
