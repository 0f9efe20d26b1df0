"""The project README's result tables, made from the leaderboard entries instead of copied by hand.

A table lives between two HTML comments that name its track:

    <!-- leaderboard table: track=mnist5k-cpu -->
    ...generated Markdown...
    <!-- end leaderboard table -->

`orbitbench leaderboard build` rewrites every such block from the entries and `leaderboard check`
fails while one is stale, so a number in the README is always one an entry holds (and `check`
recomputes each entry from its cells). The rows are the track's supervised entries: the kernel
theory describes networks trained on the labels alone (a method's own loss is outside it). Out-test
carries the 95% t-interval over the order's cells (leave-out classes x seeds), as the leaderboard
does; a predictor column appears only where some entry of the track carries that prediction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.leaderboard.intervals import t_interval
from orbitbench.leaderboard.schema import Entry, PoseResult
from orbitbench.theory.registry import predictor, predictor_names

BLOCK = re.compile(
    r"(?P<begin><!-- leaderboard table: track=(?P<track>[a-z0-9][a-z0-9.-]*) -->\n)(?P<body>.*?)(?P<end><!-- end leaderboard table -->)",
    re.S,
)



def _prediction(result: PoseResult, predictor: str) -> str:
    if predictor not in result.predicted:
        return "-"
    kappa = result.kappa.get(predictor)
    return f"{result.predicted[predictor].mean:.3f}" + (f" ({kappa.mean:+.2f})" if kappa is not None else "")


def _scale(result: PoseResult, predictor: str) -> str:
    found = result.at_scale.get(predictor)
    if found is None:
        return "-"
    kappa = "" if found.kappa is None else f"{found.kappa.mean:+.2f}, "
    return f"{found.out_test.mean:.3f} ({kappa}m {found.m:,})"


def kernel_table(entries: Iterable[Entry], track: str) -> str:
    """Markdown: per supervised entry of `track` and group order, the network's accuracies and what
    each kernel predicted for out-test (kappa against the network per cell, averaged)."""
    rows = sorted((e for e in entries if e.track == track and e.method == "supervised"), key=lambda e: e.model)
    if not rows:
        raise OrbitbenchError(f"README.md: the leaderboard table names track {track!r}, which has no supervised entry")
    order = rows[0].cells[0].data.order_argument or "group order"
    shown = [p for p in predictor_names() if predictor(p).shown and any(p in r.predicted for e in rows for r in e.results)]
    scaled = [p for p in predictor_names() if predictor(p).shown and any(p in r.at_scale for e in rows for r in e.results)]
    lines = [
        f"| model | {order} | train | in-test | network out-test [95% CI] |"
        + "".join(f" `{p}` predicted (kappa) |" for p in shown)
        + "".join(f" `{p}` at scale (kappa, m) |" for p in scaled),
        "|---|---:|---:|---:|---:|" + "---:|" * (len(shown) + len(scaled)),
    ]
    for entry in rows:
        for result in sorted(entry.results, key=lambda r: r.n_poses):
            train = f"{result.train.mean:.3f}" if result.train is not None else "-"
            out_test = [c.metrics.out_test_acc for c in entry.cells if c.n_poses == result.n_poses]
            _, low, high = t_interval(out_test)
            cells = [f"`{entry.model}`", str(result.n_poses), train, f"{result.in_test.mean:.3f}",
                     f"{result.out_test.mean:.3f} [{max(low, 0.0):.2f}, {min(high, 1.0):.2f}]", *(_prediction(result, p) for p in shown),
                     *(_scale(result, p) for p in scaled)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def refreshed(text: str, entries: Iterable[Entry]) -> str:
    """`text` with every leaderboard-table block regenerated from `entries`."""
    entries = list(entries)
    return BLOCK.sub(lambda m: m["begin"] + kernel_table(entries, m["track"]) + m["end"], text)


def project_readme(root: Path) -> Path | None:
    """The README beside the leaderboard folder, if it holds a generated table (test roots do not)."""
    path = Path(root).parent / "README.md"
    try:
        return path if BLOCK.search(path.read_text(encoding="utf-8")) else None
    except (OSError, UnicodeDecodeError):
        return None
