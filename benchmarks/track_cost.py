"""What a track's sweep costs on this machine, measured on a sample of its cells.

    OMP_NUM_THREADS=1 python benchmarks/track_cost.py runs/sweeps/cpu_track --leave-out-class 5
    python benchmarks/track_cost.py runs/sweeps/mnist_cpu --recorded    # nothing re-run

`--recorded` reads what a finished sweep's records say instead: per (model, method, group order),
the cells' summed time and the kernel predictions' share of it (the probes and the regression at
scale, as the records time them: `prediction_seconds`), so a re-seed reports its own cost.

Re-runs the cells of one leave-out class, one per (model, method, group order, seed), through the
sweep's own cell runner (a subprocess fit each), `--runners` at a time (one torch thread each: the
track's two-runner layout), in a fresh folder. Per cell it prints the re-run's wall time next to the recorded one, and whether the
metrics are bit-identical to the record. The estimate for the whole sweep scales each sampled
cell by its group's size over the cells sampled from it, divided by the runners. The cells of a
(model, order) differ only in which class is held out, so they cost the same up to noise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.run.record import RECORD_FILE, load_record
from orbitbench.sweep.cell import execute_cell
from orbitbench.sweep.results import SPEC_FILE, cell_dir, read_sweep_dir
from orbitbench.theory.registry import predictor, predictor_names


def rerun(state, scratch: Path, cell) -> tuple[str, float, float, float, bool]:
    """(cell id, recorded s, re-run s, re-run s with the process start, metrics identical) for one
    cell re-run by the sweep's own cell runner in a subprocess. The record's wall time starts after
    the imports, like a cell of an in-process runner, which pays them once."""
    start = time.perf_counter()
    outcome = execute_cell(state.spec, scratch, cell, in_process=False)
    seconds = time.perf_counter() - start
    if outcome.status != "ran":
        raise OrbitbenchError(f"re-running {cell.cell_id} failed: {outcome.message}")
    old = load_record(cell_dir(state.root, cell) / RECORD_FILE)
    new = load_record(cell_dir(scratch, cell) / RECORD_FILE)
    return cell.cell_id, old.wall_time_s, new.wall_time_s, seconds, old.metrics == new.metrics


def prediction_seconds(record) -> float:
    """The kernel predictions' time in one record: the probe of every predictor, plus the regression
    at scale, which the network's `scale.seconds` times as a whole. 0 without predictions. The record
    keeps the last measurement (fit end). A predictor measured at every measurement (`trained`)
    counts twice, fit start and end; one measured once (`infinite`, `init`: kernels that do not move
    with training) is reused at the end, where the record repeats its first `seconds`: once."""
    if record.predictions is None:
        return 0.0
    found = record.predictions.model_dump()
    times = lambda name: 1 if name in predictor_names() and predictor(name).when == "once" else 2  # noqa: E731
    probe = sum(float((p or {}).get("seconds") or 0.0) * times(name) for name, p in (found.get("predictors") or {}).items())
    return probe + float(((found.get("network") or {}).get("scale") or {}).get("seconds") or 0.0)


def recorded(state) -> None:
    """Per (model, method, group order): cells, summed cell time, predictions' time and share."""
    rows: dict[tuple, list[float]] = {}
    for cell in state.spec.cells():
        if cell.cell_id not in state.results:
            continue
        record = load_record(cell_dir(state.root, cell) / RECORD_FILE)
        row = rows.setdefault((cell.model, cell.method, cell.n_poses), [0, 0.0, 0.0])
        row[0] += 1
        row[1] += record.wall_time_s
        row[2] += prediction_seconds(record)
    if not rows:
        raise OrbitbenchError(f"{state.root} has no finished cells")
    print("| model | method | order | cells | cell time, core-min | predictions, core-min | predictions / the rest |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (model, method, order), (count, wall, kernel) in sorted(rows.items()):
        print(f"| `{model}` | {method} | {order} | {count} | {wall / 60:.1f} | {kernel / 60:.1f} | {kernel / (wall - kernel):.2f} |")
    wall, kernel = sum(r[1] for r in rows.values()), sum(r[2] for r in rows.values())
    print(f"\nall: {wall / 60:.1f} core-min, of which predictions {kernel / 60:.1f} ({kernel / (wall - kernel):.2f}x the rest)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--leave-out-class", type=int, default=5, help="which class's cells to re-run")
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--recorded", action="store_true", help="summarise the records' own times; re-run nothing")
    args = parser.parse_args()
    state = read_sweep_dir(args.sweep_dir)
    if args.recorded:
        recorded(state)
        return 0
    finished = [c for c in state.spec.cells() if c.cell_id in state.results]
    if not finished:
        raise OrbitbenchError(f"{args.sweep_dir} has no finished cells")
    group = lambda c: (c.model, c.method, c.n_poses)  # noqa: E731  cells of a group differ only in class and seed
    per_group: dict[tuple, int] = {}
    for cell in finished:
        per_group[group(cell)] = per_group.get(group(cell), 0) + 1
    sample = [c for c in finished if c.leave_out_class == args.leave_out_class]
    sampled: dict[tuple, int] = {}
    for cell in sample:  # several seeds of the class: each stands for its share of the group
        sampled[group(cell)] = sampled.get(group(cell), 0) + 1
    with tempfile.TemporaryDirectory(prefix="track_cost_") as tmp, ThreadPoolExecutor(args.runners) as pool:
        scratch = Path(tmp)
        shutil.copy(state.root / SPEC_FILE, scratch / SPEC_FILE)
        start = time.perf_counter()
        rows = list(pool.map(lambda c: (group(c), *rerun(state, scratch, c)), sample))
        wall = time.perf_counter() - start
    print("| cell | recorded s | re-run s | with process start s | metrics bit-identical |\n|---|---:|---:|---:|---|")
    total = 0.0
    for key, name, old, new, process, same in rows:
        total += new * per_group[key] / sampled[key]
        print(f"| {name} | {old:.0f} | {new:.0f} | {process:.0f} | {'yes' if same else 'NO'} |")
    print(f"\nsample: {len(rows)} cells in {wall:.0f} s wall with {args.runners} runners; whole sweep "
          f"({sum(per_group.values())} cells) estimated at {total / args.runners / 60:.0f} min wall "
          f"({total / 3600:.2f} h of one core)")
    return 0 if all(same for *_, same in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        sys.exit(2)
