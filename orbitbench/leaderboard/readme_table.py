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

A second kind of block, `<!-- leaderboard pairs: track=... -->` ... `<!-- end leaderboard pairs -->`,
puts each supervised model beside its `linearized(<model>)` entry (docs/THEORY.md §9): what training
the network's own linearisation the same way does to in-test and out-test, paired cell by cell.
A third, `<!-- leaderboard scale: track=... -->` ... `<!-- end leaderboard scale -->`, gives the
kernel regression at the network's scale against the network (docs/THEORY.md §10): how far each
kernel's level is from the network's, paired cell by cell, and how well it picks the failing digits.
A fourth, `<!-- leaderboard methods: track=... -->` ... `<!-- end leaderboard methods -->`, puts each
training method's entry (docs/CHALLENGERS.md) beside supervised training of the same model: what the
method does to in-test and out-test, paired cell by cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from orbitbench.errors import OrbitbenchError
from orbitbench.leaderboard.intervals import Unit, paired_difference, t_interval
from orbitbench.leaderboard.schema import Entry, PoseResult
from orbitbench.theory.registry import predictor, predictor_names

BLOCK = re.compile(
    r"(?P<begin><!-- leaderboard (?P<kind>table|pairs|scale|methods): track=(?P<track>[a-z0-9][a-z0-9.-]*) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- end leaderboard (?P=kind) -->)",
    re.S,
)
LINEARIZED = re.compile(r"linearized\((?P<inner>.+)\)")



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


class _Paired(NamedTuple):
    """Two entries' cells of one group order, paired by (leave-out class, seed) unit."""

    units: int
    in_test: tuple[float, float]  # means over the shared units: first entry, second entry
    out_test: tuple[float, float]
    other_out_test: list[float]  # the second entry's out-test per shared unit
    difference: tuple[float, float, float]  # second - first out-test: mean and 95% interval


def _by_unit(entry: Entry, n: int, key: str) -> dict[Unit, float]:
    return {(c.leave_out_class, c.seed): getattr(c.metrics, key) for c in entry.cells if c.n_poses == n}


def _paired(first: Entry, second: Entry, n: int) -> _Paired | None:
    """`second` against `first` at order `n` over the units both ran (None: no shared unit)."""
    out_test = [_by_unit(e, n, "out_test_acc") for e in (first, second)]
    in_test = [_by_unit(e, n, "in_test_acc") for e in (first, second)]
    units = sorted(out_test[0].keys() & out_test[1].keys())
    if not units:
        return None

    def mean(by_unit: dict[Unit, float]) -> float:
        return sum(by_unit[u] for u in units) / len(units)

    return _Paired(len(units), (mean(in_test[0]), mean(in_test[1])), (mean(out_test[0]), mean(out_test[1])),
                   [out_test[1][u] for u in units], paired_difference(out_test[1], out_test[0]))  # fmt: skip


def linearization_table(entries: Iterable[Entry], track: str) -> str:
    """Markdown: per supervised model of `track` that has a `linearized(<model>)` entry, and group
    order, both networks' in-test and out-test, the out-test difference paired by (leave-out class,
    seed) with its 95% t-interval, and the analytic twin's regression at scale where both carry it."""
    supervised = {e.model: e for e in entries if e.track == track and e.method == "supervised"}
    pairs = [(supervised[found["inner"]], lin) for name, lin in sorted(supervised.items())
             if (found := LINEARIZED.fullmatch(name)) and found["inner"] in supervised]  # fmt: skip
    if not pairs:
        raise OrbitbenchError(f"README.md: the leaderboard pairs block names track {track!r}, which has no model "
                              "with a linearized(<model>) entry")  # fmt: skip
    order = pairs[0][0].cells[0].data.order_argument or "group order"
    lines = [f"| model | {order} | in-test: network / linearised | out-test: network / linearised | "
             "linearised - network out-test [95% CI] | cells | `infinite` at scale (m) |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for network, linear in pairs:
        for n in sorted({c.n_poses for c in linear.cells}):
            pair = _paired(network, linear, n)
            if pair is None:
                continue
            mean, low, high = pair.difference
            twin = next((r.at_scale["infinite"] for r in network.results if r.n_poses == n and "infinite" in r.at_scale), None)
            lines.append(f"| `{network.model}` | {n} | {pair.in_test[0]:.3f} / {pair.in_test[1]:.3f} | "
                         f"{pair.out_test[0]:.3f} / {pair.out_test[1]:.3f} | {mean:+.3f} [{low:+.2f}, {high:+.2f}] | {pair.units} | "
                         + (f"{twin.out_test.mean:.3f} ({twin.m:,})" if twin is not None else "-") + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def methods_table(entries: Iterable[Entry], track: str) -> str:
    """Markdown: per method entry of `track` whose model also has a supervised entry, and group order,
    in-test of both, the method's out-test with its 95% t-interval, and the out-test difference to
    supervised training paired by (leave-out class, seed) with its 95% t-interval."""
    entries = [e for e in entries if e.track == track]
    supervised = {e.model: e for e in entries if e.method == "supervised"}
    pairs = sorted(((supervised[e.model], e) for e in entries if e.method != "supervised" and e.model in supervised),
                   key=lambda pair: (pair[1].model, pair[1].method))  # fmt: skip
    if not pairs:
        raise OrbitbenchError(f"README.md: the leaderboard methods block names track {track!r}, which has no "
                              "method entry beside a supervised entry of the same model")  # fmt: skip
    order = pairs[0][0].cells[0].data.order_argument or "group order"
    lines = [f"| model | method | {order} | in-test: supervised / method | out-test: supervised / method [95% CI] | "
             "method - supervised out-test [95% CI] | cells |", "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for network, other in pairs:
        for n in sorted({c.n_poses for c in other.cells}):
            pair = _paired(network, other, n)
            if pair is None:
                continue
            mean, low, high = pair.difference
            _, method_low, method_high = t_interval(pair.other_out_test)
            lines.append(f"| `{other.model}` | `{other.method}` | {n} | {pair.in_test[0]:.3f} / {pair.in_test[1]:.3f} | "
                         f"{pair.out_test[0]:.3f} / {pair.out_test[1]:.3f} "
                         f"[{max(method_low, 0.0):.2f}, {min(method_high, 1.0):.2f}] | {mean:+.3f} [{low:+.2f}, {high:+.2f}] | "
                         f"{pair.units} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def scale_table(entries: Iterable[Entry], track: str) -> str:
    """Markdown: per supervised entry of `track`, group order and predictor measured at scale in
    every cell of that order, the network's out-test, the kernel's (regression on m points), their
    difference paired by cell with its 95% t-interval, the kernel's in-test, and kappa per cell."""
    rows = sorted((e for e in entries if e.track == track and e.method == "supervised"), key=lambda e: e.model)
    names = [p for p in predictor_names() if predictor(p).shown]
    lines = []
    for entry in rows:
        for n in sorted({c.n_poses for c in entry.cells}):
            cells = [c for c in entry.cells if c.n_poses == n]
            for name in (p for p in names if all(p in c.at_scale for c in cells)):
                found = [c.at_scale[name] for c in cells]
                mean, low, high = t_interval([c.metrics.out_test_acc - f.out_test for c, f in zip(cells, found)])
                kappas = [f.kappa for f in found if f.kappa is not None]
                kappa = f"{sum(kappas) / len(kappas):+.2f} [{min(kappas):+.2f}, {max(kappas):+.2f}]" if kappas else "-"
                network = sum(c.metrics.out_test_acc for c in cells) / len(cells)
                lines.append(f"| `{entry.model}` | {n} | {network:.3f} | `{name}` | {min(f.m for f in found):,} | "
                             f"{sum(f.out_test for f in found) / len(found):.3f} | {mean:+.3f} [{low:+.2f}, {high:+.2f}] | "
                             f"{sum(f.in_test for f in found) / len(found):.3f} | {kappa} |")  # fmt: skip
    if not lines:
        raise OrbitbenchError(f"README.md: the leaderboard scale block names track {track!r}, none of whose supervised "
                              "entries has a kernel regression at scale in every cell of an order")  # fmt: skip
    order = rows[0].cells[0].data.order_argument or "group order"
    head = (f"| model | {order} | network out-test | kernel | m | kernel out-test | network - kernel [95% CI] | "
            "kernel in-test | kappa: mean [lowest, highest cell] |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(lines) + "\n"


TABLES = {"table": kernel_table, "pairs": linearization_table, "scale": scale_table, "methods": methods_table}


def refreshed(text: str, entries: Iterable[Entry]) -> str:
    """`text` with every leaderboard block (kernel table, linearisation pairs, kernel at scale,
    methods) regenerated from `entries`."""
    entries = list(entries)
    return BLOCK.sub(lambda m: m["begin"] + TABLES[m["kind"]](entries, m["track"]) + m["end"], text)


def project_readme(root: Path) -> Path | None:
    """The README beside the leaderboard folder, if it holds a generated table (test roots do not)."""
    path = Path(root).parent / "README.md"
    try:
        return path if BLOCK.search(path.read_text(encoding="utf-8")) else None
    except (OSError, UnicodeDecodeError):
        return None
