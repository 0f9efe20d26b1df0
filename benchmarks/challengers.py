"""Rebuild the findings of docs/CHALLENGERS.md (table and figure) from finished sweep folders.

    python benchmarks/challengers.py runs/sweeps/challengers runs/sweeps/challengers_steerable

Reads each cell's run record (`cells/*/record.json`), groups by (backbone, method, group order)
and averages over leave-out classes; prints the Markdown table and writes
docs/challengers_out_test.png. Methods are told apart by the record's `model.method`.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from orbitbench.io import atomic_write_bytes
from orbitbench.plots import Curve, Panel, accuracy_png
from orbitbench.record import load_record

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "challengers_out_test.png"


def collect(folders: list[Path]) -> dict[tuple[str, str, int], list]:
    groups: dict[tuple[str, str, int], list] = defaultdict(list)
    for folder in folders:
        for path in sorted(folder.glob("cells/*/record.json")):
            record = load_record(path)
            groups[(record.model.backbone, record.model.method, record.data.n_poses)].append(record)
    return groups


def main(folders: list[Path]) -> None:
    groups = collect(folders)
    print("| backbone | method | n_angles | classes | in-test | out-test | gap | kernel prediction |")
    print("|---|---|---|---|---|---|---|---|")
    curves: dict[tuple[str, str], dict[int, tuple[float, float, float, float]]] = defaultdict(dict)
    for (backbone, method, n), records in sorted(groups.items()):
        ins = [r.metrics.in_test_acc for r in records]
        outs = [r.metrics.out_test_acc for r in records]
        classes = ",".join(str(r.data.hparams["leave_out_class"]) for r in records)
        mean_in, mean_out = statistics.mean(ins), statistics.mean(outs)
        spread = lambda xs: statistics.pstdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        curves[(backbone, method)][n] = (mean_in, spread(ins), mean_out, spread(outs))
        print(f"| {backbone} | {method} | {n} | {classes} | {mean_in:.3f} | {mean_out:.3f} | {mean_in - mean_out:+.3f} | (later) |")
    orders = sorted({n for *_, n in groups})
    panel = Panel("challengers: in-test (dashed) and out-test (solid)", orders, "n_angles")
    for (backbone, method), by_n in curves.items():
        xs = sorted(by_n)
        label = f"{backbone} / {method}"
        panel.curves.append(Curve(f"{label} out-test", xs, [by_n[x][2] for x in xs], [by_n[x][3] for x in xs], label))
        panel.curves.append(Curve(f"{label} in-test", xs, [by_n[x][0] for x in xs], [by_n[x][1] for x in xs], label,
                                  dashed=True, band=False))
    atomic_write_bytes(FIGURE, accuracy_png([panel]))
    print(f"figure: {FIGURE}")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or [Path("runs/sweeps/challengers"), Path("runs/sweeps/challengers_steerable")])
