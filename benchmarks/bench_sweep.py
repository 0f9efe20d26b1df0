"""What one sweep cell costs as a subprocess, against the same fit run in-process (the baseline).

The sweep runs each cell as `python -m orbitbench fit ...` (isolation, DDP re-execution); this
measures the price: interpreter + import start-up per cell. Round-robin repeats so machine load
hits both alike; prints medians and the ratio.

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--epochs 1] [--seeds-per-class 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cell_args(log_dir: Path, epochs: int, seeds_per_class: int) -> list[str]:
    return [
        "fit", "--model.backbone=paper_mlp", "--data=RotatedMNIST", "--data.n_angles=4",
        "--data.leave_out_class=3", "--data.source=mnist5k", f"--data.seeds_per_class={seeds_per_class}",
        f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={log_dir}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds-per-class", type=int, default=10)
    args = parser.parse_args()

    from orbitbench.training_cli import run_lightning_cli  # warm imports for the in-process baseline

    timings: dict[str, list[float]] = {"in-process": [], "subprocess": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            argv = cell_args(Path(tmp) / f"in{repeat}", args.epochs, args.seeds_per_class)
            start = time.perf_counter()
            assert run_lightning_cli(argv) == 0
            timings["in-process"].append(time.perf_counter() - start)

            argv = cell_args(Path(tmp) / f"sub{repeat}", args.epochs, args.seeds_per_class)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "orbitbench", *argv], check=True, capture_output=True)
            timings["subprocess"].append(time.perf_counter() - start)

    base = statistics.median(timings["in-process"])
    sub = statistics.median(timings["subprocess"])
    print(f"paper_mlp, n_angles 4, {args.seeds_per_class} images/class, {args.epochs} epoch(s), "
          f"{args.repeats} round-robin repeats (median seconds)")
    print(f"  in-process fit (baseline)  {base:6.2f} s")
    print(f"  subprocess fit (sweep)     {sub:6.2f} s   ratio {sub / base:.2f}x, start-up {sub - base:+.2f} s per cell")


if __name__ == "__main__":
    main()
