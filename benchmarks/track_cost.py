"""What a track's sweep costs on this machine, measured on a sample of its cells.

    OMP_NUM_THREADS=1 python benchmarks/track_cost.py runs/sweeps/cpu_track --leave-out-class 5

Re-runs one cell per (model, method, group order) of a finished sweep, as its own config.yaml
says, `--runners` at a time (one torch thread each: the track's two-runner layout), in a fresh
folder. Per cell it prints the re-run's wall time next to the recorded one, and whether the
metrics are bit-identical to the record. The estimate for the whole sweep scales each sampled
cell by the number of leave-out classes and seeds, divided by the runners. The cells of a
(model, order) differ only in which class is held out, so they cost the same up to noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rerun(cell: Path, scratch: Path) -> tuple[str, float, float, float, bool]:
    """(cell id, recorded s, re-run s, re-run s with the process start, metrics identical) for one
    cell re-run from its config. The record's wall time starts after the imports, like a cell of
    an in-process runner, which pays them once."""
    target = scratch / cell.name
    config = (cell / "config.yaml").read_text().replace(str(cell.resolve()), str(target))
    target.mkdir(parents=True)
    (scratch / f"{cell.name}.yaml").write_text(config)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orbitbench", "fit", "--config", str(scratch / f"{cell.name}.yaml")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"orbitbench: re-running {cell.name} failed: {done.stderr.strip().splitlines()[-1]}")
    old = json.loads((cell / "record.json").read_text())
    new = json.loads((target / "record.json").read_text())
    return cell.name, old["wall_time_s"], new["wall_time_s"], seconds, old["metrics"] == new["metrics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--leave-out-class", type=int, default=5, help="which class's cells to re-run")
    parser.add_argument("--runners", type=int, default=2)
    args = parser.parse_args()
    if not (args.sweep_dir / "cells").is_dir():
        print(f"orbitbench: {args.sweep_dir} is not a sweep directory (no cells/)", file=sys.stderr)
        return 2
    cells = sorted(c for c in (args.sweep_dir / "cells").iterdir() if (c / "record.json").is_file())
    if not cells:
        print(f"orbitbench: {args.sweep_dir} has no finished cells", file=sys.stderr)
        return 2
    per_group: dict[str, int] = {}
    for cell in cells:  # `<model>-n<order>-c<class>-s<seed>`: group = model and order
        model, order, _, _ = cell.name.rsplit("-", 3)
        per_group[f"{model}-{order}"] = per_group.get(f"{model}-{order}", 0) + 1
    sample = [c for c in cells if c.name.rsplit("-", 3)[2] == f"c{args.leave_out_class}"]
    with tempfile.TemporaryDirectory(prefix="track_cost_") as scratch, ThreadPoolExecutor(args.runners) as pool:
        start = time.perf_counter()
        rows = list(pool.map(lambda c: rerun(c, Path(scratch)), sample))
        wall = time.perf_counter() - start
    print("| cell | recorded s | re-run s | with process start s | metrics bit-identical |\n|---|---:|---:|---:|---|")
    total = 0.0
    for name, old, new, process, same in rows:
        total += new * per_group[name.rsplit("-", 2)[0]]
        print(f"| {name} | {old:.0f} | {new:.0f} | {process:.0f} | {'yes' if same else 'NO'} |")
    print(f"\nsample: {len(rows)} cells in {wall:.0f} s wall with {args.runners} runners; whole sweep "
          f"({sum(per_group.values())} cells) estimated at {total / args.runners / 60:.0f} min wall "
          f"({total / 3600:.2f} h of one core)")
    return 0 if all(same for *_, same in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
