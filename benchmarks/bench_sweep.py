"""What one sweep cell costs through each launcher, against the same fit run in-process (baseline).

The baseline is `run_lightning_cli` in this already-warm process: the fit alone. Each launcher
runs the same cell through `orbitbench.sweep` machinery (claim, cell folder, run record, result
check): `local` in-process, `local` subprocess (the default), one Ray task on a local Ray
instance started once beforehand (its start-up is reported apart), and one submitit job with the
local executor (subprocess fit inside the job, and `--in-process` inside the job). Round-robin
repeats so machine load hits all alike; medians and ratios to the baseline. The eval-mode train
accuracy pass the run record adds to every fit is timed inside the baseline fits.

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--epochs 1] [--seeds-per-class 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import count
from pathlib import Path

from _timing import round_robin

SPEC = """\
name: bench
track: bench
datamodule: RotatedMNIST
grid: {{model: [paper_mlp], n_angles: [4], leave_out_class: [3], seed: [{seed}]}}
fit:
  data.source: mnist5k
  data.images_per_class: {spc}
  trainer.max_epochs: {epochs}
  trainer.enable_model_summary: false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds-per-class", type=int, default=10)
    parser.add_argument("--no-cluster", action="store_true", help="skip the ray and submitit launchers")
    args = parser.parse_args()

    from orbitbench.run.module import OrbitClassifier
    from orbitbench.sweep import Cell, fit_argv, parse_sweep_text
    from orbitbench.sweep.cell import execute_cell
    from orbitbench.sweep.launch import RayLauncher, SubmititLauncher
    from orbitbench.sweep.results import prepare_root
    from orbitbench.run.cli import run_lightning_cli

    train_acc_seconds: list[float] = []
    measure = OrbitClassifier.split_accuracy

    def timed_split_accuracy(self, split):  # the record's eval-mode train accuracy, timed
        start = time.perf_counter()
        try:
            return measure(self, split)
        finally:
            train_acc_seconds.append(time.perf_counter() - start)

    OrbitClassifier.split_accuracy = timed_split_accuracy
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    fresh = count()  # every timed cell is a new cell (new seed, new folder): nothing is skipped as done

    def new_cell() -> tuple:
        seed = next(fresh)
        spec = parse_sweep_text(SPEC.format(seed=seed, spc=args.images_per_class, epochs=args.epochs), "bench")
        root = tmp / f"sweep{seed}"
        prepare_root(spec, root)
        return spec, root, Cell("paper_mlp", 4, 3, seed)

    def baseline() -> None:
        spec, root, cell = new_cell()
        assert run_lightning_cli(fit_argv(spec, cell, root / "fit")) == 0

    def local(in_process: bool):
        def work() -> None:
            spec, root, cell = new_cell()
            outcome = execute_cell(spec, root, cell, in_process)
            assert outcome.status == "ran", outcome

        return work

    def through(launcher, in_process: bool = False):
        def work() -> None:
            spec, root, cell = new_cell()
            (outcome,) = launcher.run(spec, root, [cell], in_process)
            assert outcome.status == "ran", outcome

        return work

    methods = {
        "in-process fit (baseline)": baseline,
        "local, in-process cell": local(True),
        "local, subprocess cell (default)": local(False),
    }
    ray_start = None
    if not args.no_cluster:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        ray_start = time.perf_counter() - start
        methods["ray task, subprocess cell"] = through(RayLauncher())
        methods["submitit local job, subprocess cell"] = through(SubmititLauncher("local"))
        methods["submitit local job, in-process cell"] = through(SubmititLauncher("local"), in_process=True)
    try:
        medians = round_robin(methods, args.repeats)
    finally:
        if ray_start is not None:
            ray.shutdown()

    base = medians["in-process fit (baseline)"]
    fit_seconds = sorted(train_acc_seconds)[len(train_acc_seconds) // 2] if train_acc_seconds else float("nan")
    print(f"paper_mlp, n_angles 4, {args.images_per_class} images/class, {args.epochs} epoch(s), "
          f"{args.repeats} round-robin repeats (median seconds)")
    for name, seconds in medians.items():
        print(f"  {name:38s} {seconds:7.2f} s   ratio {seconds / base:5.2f}x   overhead {seconds - base:+7.2f} s per cell")
    print(f"  eval-mode train accuracy pass (record)  {fit_seconds:7.3f} s per in-process fit "
          f"({fit_seconds / base:.1%} of the baseline)")
    if ray_start is not None:
        print(f"  ray.init (once per sweep, not per cell)  {ray_start:7.2f} s")


if __name__ == "__main__":
    main()
