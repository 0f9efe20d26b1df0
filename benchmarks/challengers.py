"""Rebuild the findings of docs/CHALLENGERS.md (table and figure) from finished sweep folders.

    python benchmarks/challengers.py runs/sweeps/challengers runs/sweeps/challengers_steerable

Reads each cell's run record (`cells/*/record.json`), groups by (backbone, method, group order)
and averages over leave-out classes; prints the Markdown table and writes
docs/challengers_out_test.png. Methods are told apart by the record's `model.method`.

Out-test holds one class only, so beside the record's in-test accuracy (all classes) the table
gives the in-test accuracy of the leave-out class itself (its seen poses), recomputed from the
cell's last checkpoint: a method that carries the symmetry has out-test close to *that*.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from orbitbench.io import atomic_write_bytes
from orbitbench.plots import Curve, Panel, accuracy_png
from orbitbench.record import load_record

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "challengers_out_test.png"


@torch.no_grad()
def leave_out_class_in_test_acc(record) -> float:
    """Accuracy on the in-test pairs of the leave-out class, from the run's last checkpoint."""
    from orbitbench.datamodules import datamodule_class
    from orbitbench.module import OrbitClassifier

    model = OrbitClassifier.load_from_checkpoint(record.last_checkpoint, map_location="cpu").eval()
    dm = datamodule_class(record.data.datamodule)(**record.data.hparams)
    dm.setup("fit")
    pairs = dm.splits["in_test"]  # [M, 2] (image, pose)
    labels = dm.digits.labels[pairs[:, 0]]
    mine = pairs[labels == record.data.hparams["leave_out_class"]]
    predicted = model.net(dm.materialize(mine[:, 0], mine[:, 1])).argmax(dim=1)
    return (predicted == record.data.hparams["leave_out_class"]).double().mean().item()


def collect(folders: list[Path]) -> dict[tuple[str, str, int], list]:
    groups: dict[tuple[str, str, int], list] = defaultdict(list)
    for folder in folders:
        for path in sorted(folder.glob("cells/*/record.json")):
            record = load_record(path)
            groups[(record.model.backbone, record.model.method, record.data.n_poses)].append(record)
    return groups


def main(folders: list[Path]) -> None:
    groups = collect(folders)
    print("| backbone | method | n_angles | classes | in-test | in-test, leave-out class | out-test | kernel prediction |")
    print("|---|---|---|---|---|---|---|---|")
    curves: dict[tuple[str, str], dict[int, tuple[float, float, float, float]]] = defaultdict(dict)
    for (backbone, method, n), records in sorted(groups.items()):
        ins = [r.metrics.in_test_acc for r in records]
        outs = [r.metrics.out_test_acc for r in records]
        classes = ",".join(str(r.data.hparams["leave_out_class"]) for r in records)
        mean_in, mean_out = statistics.mean(ins), statistics.mean(outs)
        mean_class = statistics.mean(leave_out_class_in_test_acc(r) for r in records)
        spread = lambda xs: statistics.pstdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        curves[(backbone, method)][n] = (mean_in, spread(ins), mean_out, spread(outs))
        print(f"| {backbone} | {method} | {n} | {classes} | {mean_in:.3f} | {mean_class:.3f} | {mean_out:.3f} | (later) |")
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
