"""Rebuild the findings of docs/CHALLENGERS.md (table and figure) from finished sweep folders.

    python benchmarks/challengers.py runs/sweeps/cpu_track runs/sweeps/cpu_track_challengers \
        runs/sweeps/cpu_track_steerable --trained

Reads each cell's run record (`cells/*/record.json`), keeps the backbones named by `--backbones`,
groups by (backbone, method, group order) and averages over leave-out classes; prints the
Markdown table and writes docs/challengers_out_test.png.

Out-test holds one class only, so beside the record's in-test accuracy (all classes) the table
gives the in-test accuracy of the leave-out class itself (its seen poses), recomputed from the
cell's last checkpoint: a method that carries the symmetry has out-test close to *that*.

Kernel predictions: `infinite` and `init` are the ones each cell's EmpiricalNTKCallback recorded
(spectral rule on the cell's out-test digits, and Cohen's kappa against the network). A method
changes only how the weights move, so its initial kernel is its backbone's: whether a method
adapts the kernel to the symmetry shows in the kernel of the *trained* weights, which `--trained`
computes from each cell's last checkpoint on the callback's probe (same draw, same digits), as
kernel regression on the training split (the spectral rule on that kernel is printed as a range
only). A method's `infinite` and `init` columns read "undefined" where the method declares that
they do not describe its network (MethodInfo.kernel_predictors), as on the leaderboard.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_bytes
from orbitbench.leaderboard.intervals import paired_difference, t_interval, unit_scores
from orbitbench.plots import Curve, Panel, accuracy_png
from orbitbench.run.record import load_record

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "challengers_out_test.png"
BACKBONES = "paper_mlp,paper_convnet,c4_pooled(paper_mlp),steerable_cnn_c4,steerable_cnn_c8,steerable_cnn_c16"
BUILT_IN = ("steerable", "c4_pooled")  # invariant by construction: no trained-kernel measurement


@torch.no_grad()
def leave_out_class_in_test_acc(model, dm, leave_out_class: int) -> float:
    """Accuracy on the in-test pairs of the leave-out class (its seen poses)."""
    pairs = dm.splits["in_test"]  # [M, 2] (image, pose)
    mine = pairs[dm.digits.labels[pairs[:, 0]] == leave_out_class]
    predicted = model.net(dm.materialize(mine[:, 0], mine[:, 1])).argmax(dim=1)
    return (predicted == leave_out_class).double().mean().item()


def trained_kernel(model, dm, n_seeds: int) -> tuple[float, float, float]:
    """(kernel-regression out-test, its kappa, spectral-rule out-test) of the empirical NTK at the
    trained weights, on the probe the cell's callback drew (`n_seeds` leave-out digits, the default
    draw otherwise)."""
    from orbitbench.run.callbacks.kernel_predictions import model_twin, network_of
    from orbitbench.theory.predictions import KernelPredictors
    from orbitbench.theory.probe import ProbeOptions, draw_probe

    network = network_of(model)
    predictors = KernelPredictors(draw_probe(dm, ProbeOptions(n_seeds=n_seeds)), model_twin(model),
                                  chunk_size=32, predictors=["trained"])
    entry = predictors.report(network).predictors["trained"]
    return entry["regression_out_test_acc"], entry["regression_kappa"], entry["spectral_out_test_acc"]


def measure(record, with_trained: bool) -> dict[str, float | None]:
    """What one cell contributes to the table."""
    from orbitbench.run.predict_kernel import load_checkpoint

    if not record.last_checkpoint:
        raise OrbitbenchError(f"cell {record.data.hparams} wrote no checkpoint")
    model, dm, _, _ = load_checkpoint(Path(record.last_checkpoint))
    model.eval()
    leave_out = record.data.hparams["leave_out_class"]
    predictions = record.predictions
    row: dict[str, float | None] = {
        "unit": (leave_out, record.seeds.seed_everything), "in_test": record.metrics.in_test_acc, "out_test": record.metrics.out_test_acc,
        "class_in_test": leave_out_class_in_test_acc(model, dm, leave_out),
    }  # fmt: skip
    for name in ("infinite", "init"):
        entry = predictions.predictors.get(name) if predictions is not None else None
        row[f"{name}_pred"], row[f"{name}_kappa"] = (entry.spectral_out_test_acc, entry.kappa) if entry else (None, None)
    row["trained_pred"] = row["trained_kappa"] = row["trained_spectral"] = None
    if with_trained:
        row["trained_pred"], row["trained_kappa"], row["trained_spectral"] = trained_kernel(
            model, dm, predictions.probe.get("n_seeds", 32) if predictions is not None else 32)
    return row


def cell(rows: list[dict], key: str, method: str = "supervised") -> str:
    from orbitbench.leaderboard.integrity import method_kernel_predictors

    if key not in method_kernel_predictors(method):  # as the leaderboard shows it
        return "undefined"
    values = [r[f"{key}_pred"] for r in rows]
    if any(v is None for v in values):
        return "-"
    return f"{statistics.mean(values):.3f} ({statistics.mean(r[f'{key}_kappa'] for r in rows):+.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="finished sweep directories")
    parser.add_argument("--backbones", default=BACKBONES, help="comma-separated backbones to keep")
    parser.add_argument("--trained", action="store_true", help="also the trained-weights kernel (slow)")
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"where the PNG goes (default {FIGURE.name})")
    args = parser.parse_args()
    keep = set(args.backbones.split(","))
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for folder in args.folders:
        if not (folder / "cells").is_dir():
            raise OrbitbenchError(f"{folder} is not a sweep directory (no cells/)")
        for path in sorted(folder.glob("cells/*/record.json")):
            record = load_record(path)
            if record.model.backbone in keep:
                groups[(record.model.backbone, record.model.method, record.data.n_poses)].append(
                    measure(record, args.trained and not record.model.backbone.startswith(BUILT_IN)))
    if not groups:
        raise OrbitbenchError(f"no finished cell of {', '.join(sorted(keep))} in {', '.join(map(str, args.folders))}")
    print("| backbone | method | n_angles | cells | in-test | in-test, leave-out class | out-test [95% CI] "
          "| pred. infinite (κ) | pred. init (κ) | trained-kernel regression (κ) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    curves: dict[tuple[str, str], dict[int, tuple[float, float, float | None]]] = defaultdict(dict)
    for (backbone, method, n), rows in sorted(groups.items()):
        mean, low, high = t_interval([r["out_test"] for r in rows])
        trained = [r["trained_pred"] for r in rows]
        curves[(backbone, method)][n] = (mean, statistics.pstdev(r["out_test"] for r in rows),
                                         None if None in trained else statistics.mean(trained))
        print(f"| {backbone} | {method} | {n} | {len(rows)} | {statistics.mean(r['in_test'] for r in rows):.3f} "
              f"| {statistics.mean(r['class_in_test'] for r in rows):.3f} | {mean:.3f} [{max(low, 0):.2f}, {min(high, 1):.2f}] "
              f"| {cell(rows, 'infinite', method)} | {cell(rows, 'init', method)} | {cell(rows, 'trained')} |")
    orders = sorted({n for *_, n in groups})
    panels = []
    for title, members in (("paper MLP", ("paper_mlp",)), ("paper ConvNet", ("paper_convnet",)),
                           ("built-in symmetry", ("c4_pooled(paper_mlp)", "steerable_cnn", "steerable_cnn_c4",
                                                  "steerable_cnn_c8", "steerable_cnn_c16"))):  # fmt: skip
        panel = Panel(title, orders, "n_angles", "out-test: network (solid), trained kernel (dashed)")
        for (backbone, method), by_n in curves.items():
            if backbone not in members:
                continue
            xs, label = sorted(by_n), (method if len(members) == 1 else backbone)
            panel.curves.append(Curve(label, xs, [by_n[x][0] for x in xs], [by_n[x][1] for x in xs], label))
            if all(by_n[x][2] is not None for x in xs):
                panel.curves.append(Curve(f"{label}, trained kernel", xs, [by_n[x][2] for x in xs], [0.0] * len(xs),
                                          label, dashed=True, band=False))
        if panel.curves:  # a panel of backbones this run did not keep is left out, not drawn empty
            panels.append(panel)
    atomic_write_bytes(args.figure, accuracy_png(panels, width=4.5))
    print("\n| backbone | method | out-test minus supervised, paired by leave-out class [95% CI] |\n|---|---|---:|")
    units = defaultdict(list)
    for (backbone, method, n), rows in groups.items():
        units[(backbone, method)] += [(r["unit"], n, r["out_test"]) for r in rows]
    for (backbone, method), cells in sorted(units.items()):
        if method != "supervised" and (backbone, "supervised") in units:
            mean, low, high = paired_difference(unit_scores(cells), unit_scores(units[(backbone, "supervised")]))
            print(f"| {backbone} | {method} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] |")
    spectral = [r["trained_spectral"] for rows in groups.values() for r in rows if r["trained_spectral"] is not None]
    if spectral:
        print(f"\nspectral rule on the trained kernel: {min(spectral):.3f}-{max(spectral):.3f} over {len(spectral)} cells")
    print(f"\nout-test interval: 95% Student t over leave-out classes; infinite / init: spectral rule (Eq. 7); "
          f"trained: kernel regression on the training split; each the mean over cells (mean Cohen's kappa against "
          f"the network)\nfigure: {args.figure}")


if __name__ == "__main__":
    try:
        main()
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        sys.exit(2)
