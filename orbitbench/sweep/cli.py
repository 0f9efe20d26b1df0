"""`orbitbench sweep run | list | collect | plot`: argparse wiring over the typed functions in
`orbitbench.sweep` (a thin layer; the project's single front end may replace it).

    orbitbench sweep run sweeps/cpu_quick.yaml [--out DIR] [--models a,b] [--in-process]
                         [--launcher local|ray|submitit] [--jobs K] [--address ADDR]
    orbitbench sweep sweeps/cpu_quick.yaml          # same as `run`
    orbitbench sweep list FILE [--out DIR]          # cells and whether they are finished
    orbitbench sweep collect DIR                    # rebuild DIR/results.csv from the run records
    orbitbench sweep plot DIR [-o fig1c.png]        # accuracy vs group order, mean +- std over classes
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from orbitbench.errors import OrbitbenchError

SUBCOMMANDS = ("run", "collect", "plot", "list")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orbitbench sweep",
        description="A grid of `orbitbench fit` cells from a sweep file (sweeps/*.yaml): run it on this machine, "
        "Ray or SLURM, list its cells, collect results.csv, plot Fig. 1C. Clusters: docs/SWEEPS.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) every unfinished cell of a sweep file")
    run.add_argument("sweep_file")
    run.add_argument("--out", help="sweep directory (default: runs/sweeps/<name>); runners on one directory split its cells")
    run.add_argument("--models", help="comma-separated models to run on this sweep file's protocol instead of its grid's")
    run.add_argument("--launcher", default="local", choices=("local", "ray", "submitit"),
                     help="where cells run: this machine, Ray tasks, a SLURM job array (ray/submitit: pip install 'orbitbench[cluster]')")
    run.add_argument("--jobs", type=int, default=1, help="cells at once (local subprocesses; SLURM array parallelism)")
    run.add_argument("--address", help="--launcher ray: the cluster to join (auto, ray://host:10001); default a local instance")
    run.add_argument("--cpus-per-cell", type=float, default=1, help="each cell's CPU request (ray, submitit)")
    run.add_argument("--gpus-per-cell", type=float, default=0, help="each cell's GPU request (ray, submitit)")
    run.add_argument("--submitit-cluster", choices=("slurm", "local"), help="default: SLURM when available, else local")
    run.add_argument("--submitit", action="append", default=[], metavar="KEY=VALUE",
                     help="a submitit executor parameter (slurm_partition=gpu, timeout_min=120, ...); repeatable")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--in-process", action="store_true",
                     help="run cells in the runner's process (no start-up per cell; single device)")
    listing = sub.add_parser("list", help="print the cells of a sweep file and whether they are finished")
    listing.add_argument("sweep_file")
    listing.add_argument("--out")
    listing.add_argument("--models")
    collect = sub.add_parser("collect", help="rebuild <dir>/results.csv from the finished cells")
    collect.add_argument("sweep_dir")
    plot = sub.add_parser("plot", help="Fig. 1C: accuracy vs group order per model")
    plot.add_argument("sweep_dir")
    plot.add_argument("-o", "--output", help="PNG path (default: <dir>/fig1c.png)")
    return parser


def _models(text: str | None) -> list[str] | None:
    return None if text is None else [m.strip() for m in text.split(",") if m.strip()]


def _key_values(items: list[str]) -> dict:
    parameters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OrbitbenchError(f"--submitit {item!r}: expected KEY=VALUE, e.g. slurm_partition=gpu")
        parameters[key] = yaml.safe_load(value)
    return parameters


def main(argv: Sequence[str] | None = None) -> int:
    from orbitbench import sweep
    from orbitbench.sweep.cell import SweepTerminated

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["run", *argv]  # `orbitbench sweep FILE` is `orbitbench sweep run FILE`
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            table = sweep.run(
                Path(args.sweep_file), args.out, args.launcher, args.jobs, args.in_process, args.address,
                _models(args.models), args.fail_fast, not args.no_progress, args.cpus_per_cell, args.gpus_per_cell,
                args.submitit_cluster, _key_values(args.submitit),
            )
            state = sweep.read_sweep_dir(table.parent)
            print(f"{len(state.results)} of {len(state.spec.cells())} cells finished; table: {table}")
            if state.missing:
                print(f"{len(state.missing)} cells of {table.parent} are not finished (other --models)")
        elif args.command == "list":
            for cell_id, done in sweep.cells(Path(args.sweep_file), args.out, _models(args.models)):
                print(f"{'done' if done else 'todo'}  {cell_id}")
        elif args.command == "collect":
            path = sweep.collect(Path(args.sweep_dir))
            state = sweep.read_sweep_dir(args.sweep_dir)
            print(f"{len(state.results)} finished, {len(state.missing)} missing; table: {path}")
        elif args.command == "plot":
            print(sweep.plot(Path(args.sweep_dir), args.output))
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        return 2
    except SweepTerminated as stop:
        print(f"orbitbench: sweep stopped by {signal.Signals(stop.signum).name}; finished cells are kept, "
              "re-run the same command to resume", file=sys.stderr)
        return 128 + stop.signum
    return 0
