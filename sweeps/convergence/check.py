"""Is each model of a track trained to convergence? Reads convergence sweeps (learning curves at
2-3x the track's budget, sweeps/convergence/*.yaml) and prints, per model (and method) and group
order, the in-test accuracy at the track's budget next to what longer training reaches.

    python sweeps/convergence/check.py sweeps/cpu_track.yaml runs/sweeps/cpu_track_convergence \
        runs/sweeps/cpu_track_convergence_long runs/sweeps/cpu_track_convergence_n4

In-test is smoothed over three consecutive validations (a trailing window) because one cell's
in-test split is small. "What longer training reaches" is the mean in-test over the last third of
the long run (at least three validations): the plateau. A budget passes when its smoothed in-test
is no more than `--tolerance` below that. The best smoothed value at any later validation is
printed too, for information, but not used: the maximum of twenty noisy validations sits above
the plateau by about the tolerance itself, so it fails converged runs. Of several runs of one
(model, method, group order), the longest is used; it must be at least 1.5x the budget.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orbitbench.run.record import load_record
from orbitbench.sweep.spec import load_sweep_file


def curve(cell: Path, tag: str = "val/in_test_acc") -> list[tuple[int, float]]:
    """(global step, value) of every validation of `tag`, in step order (all event files of the cell)."""
    points = []
    for path in sorted(cell.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags()["scalars"]:
            points += [(s.step, s.value) for s in events.Scalars(tag)]
    return sorted(points)


def trailing(values: list[float], window: int = 3) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("track", type=Path, help="the track's sweep file (its model_fit epochs are the budgets)")
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="convergence sweep directories")
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--models", help="comma-separated: report only these models (model+method)")
    args = parser.parse_args()
    track = load_sweep_file(args.track)
    failed = 0
    for folder in args.sweep_dirs:
        if not (folder / "cells").is_dir():
            print(f"orbitbench: {folder} is not a sweep directory (no cells/)", file=sys.stderr)
            return 2
    print("| model | n | budget | long run (epochs) | in-test at budget | plateau (last third) | gap | pass "
          "| best later (epoch) | out-test at budget / end |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    longest: dict[tuple[str, int], tuple[int, Path]] = {}
    for cell in sorted(c for d in args.sweep_dirs for c in (d / "cells").iterdir()):
        if not (cell / "record.json").is_file():
            print(f"| {cell} | not finished |")
            failed += 1
            continue
        record = load_record(cell / "record.json")
        method = record.model.method
        key = (record.model.backbone + ("" if method == "supervised" else f"+{method}"), record.data.n_poses)
        if args.models and key[0] not in args.models.split(","):
            continue
        if key not in longest or record.global_step > longest[key][0]:
            longest[key] = (record.global_step, cell)
    for key in sorted(longest):
        cell = longest[key][1]
        record = load_record(cell / "record.json")
        model, shown = record.model.backbone, key[0]
        if model not in track.grid.model:
            print(f"| `{shown}` | {record.data.n_poses} | not on the track (no budget to check) |")
            continue
        settings = {**track.fit, **track.model_fit.get(model, {})}
        steps_per_epoch = record.global_step / record.epochs
        max_steps = int(settings.get("trainer.max_steps", -1))
        if max_steps > 0:
            budget, budget_steps = f"{max_steps} steps", max_steps
        else:
            budget, budget_steps = f"{settings['trainer.max_epochs']} epochs", int(settings["trainer.max_epochs"]) * steps_per_epoch
        points = curve(cell)
        # The run's length is its optimizer steps, not its last validation's step: a validation
        # every quarter epoch is logged one step before the epoch's end.
        if record.global_step < 1.5 * budget_steps:
            print(f"| `{shown}` | {record.data.n_poses} | {budget} | run not long enough ({record.global_step} steps) to check |")
            continue
        smooth = trailing([value for _, value in points])
        epoch = lambda i: round(points[i][0] / steps_per_epoch)  # noqa: E731
        index = max(i for i, (step, _) in enumerate(points) if step <= budget_steps + 1)
        later = max(range(index, len(smooth)), key=lambda i: smooth[i])
        tail = [value for step, value in points if step >= points[-1][0] * 2 / 3]
        if len(tail) < 3:
            tail = [value for _, value in points[-3:]]
        plateau = sum(tail) / len(tail)
        ok = smooth[index] >= plateau - args.tolerance
        on_track = record.data.n_poses in track.n_poses
        failed += on_track and not ok
        out = trailing([value for _, value in curve(cell, "val/out_test_acc")])
        print(f"| `{shown}` | {record.data.n_poses} | {budget} | {record.epochs} | {smooth[index]:.3f} | {plateau:.3f} "
              f"| {plateau - smooth[index]:+.3f} | {('yes' if ok else 'NO') if on_track else 'order not on the track'} | {smooth[later]:.3f} ({epoch(later)}) "
              f"| {out[index]:.3f} / {out[-1]:.3f} |")
    print(f"\nin-test at budget: trailing mean of 3 validations; plateau: mean of the long run's last third; "
          f"tolerance {args.tolerance}; a long run must be at least 1.5x the budget")
    return 1 if failed else 0


if __name__ == "__main__":
    from orbitbench.errors import OrbitbenchError

    try:
        sys.exit(main())
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        sys.exit(2)
