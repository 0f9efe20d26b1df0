"""`orbitbench sweep`: the paper's Fig. 1 grid (models x group orders x leave-out classes x seeds).

One typed function per command, for any front end (and for notebooks):

    run(spec, out=None, launcher="local", jobs=1, in_process=False, address=None, models=None) -> Path
    collect(sweep_dir) -> Path            # rebuild results.csv from the cells' run records
    plot(sweep_dir, output=None) -> Path  # Fig. 1C: accuracy vs group order, mean ± std over classes
    cells(spec, out=None, models=None) -> list[tuple[str, bool]]   # (cell id, finished)

The parts: `spec` (the validated sweep file), `cell` (running one cell safely), `launch` (local,
Ray, submitit), `runner` (the loop), `results` (records -> results.csv). The command line is
`orbitbench.cli` (jsonargparse over these functions).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from orbitbench.io import atomic_write_bytes
from orbitbench.sweep.launch import make_launcher
from orbitbench.sweep.results import (
    CSV_COLUMNS,
    csv_columns,
    CSV_FILE,
    CellResult,
    SweepState,
    aggregate,
    cell_dir,
    entrant,
    is_finished,
    read_sweep_dir,
    write_csv,
)
from orbitbench.sweep.runner import run_sweep
from orbitbench.sweep.spec import NAME_PATTERN, Cell, SweepSpec, check_runnable, fit_argv, load_sweep_file, parse_sweep_text

__all__ = [
    "CSV_COLUMNS", "CSV_FILE", "csv_columns", "NAME_PATTERN", "Cell", "CellResult", "SweepSpec", "SweepState", "aggregate",
    "cell_dir", "cells", "collect", "fit_argv", "load_sweep_file", "parse_sweep_text", "plot",
    "read_sweep_dir", "run", "run_sweep", "write_csv",
]


def _spec_and_root(spec: Path | str, out: Path | str | None, models: list[str] | None) -> tuple[SweepSpec, Path]:
    loaded = load_sweep_file(spec)
    if models is not None:  # a contributor runs a track's sweep file with their own model: same protocol
        loaded = loaded.with_models(models)
        for model in models:
            if model in loaded.config_files:
                print(f"orbitbench sweep: {model} runs with --config {loaded.config_files[model]}", file=sys.stderr)
    return loaded, Path(out) if out else Path("runs") / "sweeps" / loaded.name


def run(
    spec: Path,
    out: Path | None = None,
    launcher: Literal["local", "ray", "submitit"] = "local",
    jobs: int = 1,
    in_process: bool = False,
    address: str | None = None,
    models: list[str] | None = None,
    fail_fast: bool = False,
    progress: bool = True,
    cpus_per_cell: float = 1,
    gpus_per_cell: float = 0,
    submitit_cluster: str | None = None,
    submitit_parameters: dict[str, Any] | None = None,
) -> Path:
    """Run (or resume) every unfinished cell of a sweep file; return the path of results.csv.

    Args:
        spec: the sweep file (`sweeps/*.yaml`).
        out: the sweep directory (default `runs/sweeps/<name>`); runners on one directory split its cells.
        launcher: `local` (this machine), `ray` (Ray tasks), `submitit` (a SLURM job array).
        jobs: cells at once: local subprocess fits, or the SLURM array's parallelism.
        in_process: run each fit in the runner's (or worker's) process: no interpreter start per cell.
        address: the Ray cluster to join (`auto`, `ray://host:10001`); default a local Ray instance.
        models: run these models on the sweep file's protocol instead of its grid's models.
        fail_fast: stop at the first failed cell.
        progress: show a progress bar over cells.
        cpus_per_cell, gpus_per_cell: each cell's resource request (Ray task, SLURM job).
        submitit_cluster: `slurm`, `local` or None (SLURM when available).
        submitit_parameters: more `AutoExecutor.update_parameters` keys (`slurm_partition`, `timeout_min`, ...).
    """
    loaded, root = _spec_and_root(spec, out, models)
    chosen = make_launcher(launcher, jobs, address, cpus_per_cell, gpus_per_cell, submitit_cluster, submitit_parameters)
    state = run_sweep(loaded, root, chosen, in_process, fail_fast, progress)
    print(f"{len(state.results)} of {len(state.spec.cells())} cells finished"
          + (f"; {len(state.missing)} cells of {root} belong to other --models" if state.missing else ""))
    return state.root / CSV_FILE


def collect(sweep_dir: Path) -> Path:
    """Rebuild `<sweep_dir>/results.csv` from the finished cells' run records; return its path."""
    return write_csv(read_sweep_dir(sweep_dir))


def plot(sweep_dir: Path, output: Path | None = None) -> Path:
    """Fig. 1C: out-test (solid, ± std band) and in-test (dashed) accuracy vs group order per model."""
    from orbitbench.errors import OrbitbenchError
    from orbitbench.plots import Curve, Panel, accuracy_png

    state = read_sweep_dir(sweep_dir)
    results = list(state.results.values())
    if not results:
        raise OrbitbenchError(f"{state.root}: no finished cells to plot yet")
    panel = Panel(f"{state.spec.name}: mean ± std over leave-out classes", state.spec.n_poses, state.spec.order_argument)
    for model in dict.fromkeys(entrant(r) for r in results):  # models (+ methods), in grid order
        for key, label, dashed in (("out_test_acc", "out-test", False), ("in_test_acc", "in-test", True)):
            stats = aggregate([r for r in results if entrant(r) == model], key)
            xs = sorted(n for _, n in stats)
            if xs:
                panel.curves.append(Curve(f"{model} {label}", xs, [stats[(model, n)][0] for n in xs],
                                          [stats[(model, n)][1] for n in xs], color_key=model, dashed=dashed,
                                          band=not dashed))
    output = Path(output) if output else state.root / "fig1c.png"
    atomic_write_bytes(output, accuracy_png([panel], width=6.5))
    return output


def cells(spec: Path, out: Path | None = None, models: list[str] | None = None) -> list[tuple[str, bool]]:
    """Every cell id of a sweep file and whether it is finished in the sweep directory."""
    loaded, root = _spec_and_root(spec, out, models)
    check_runnable(loaded)  # a model that does not exist is one line here too, not a list of todo cells
    return [(cell.cell_id, is_finished(root, cell)) for cell in loaded.cells()]


def format_cells(cells: list[tuple[str, bool]]) -> str:
    """`orbitbench sweep list`: one line per cell, `done` or `todo` first."""
    return "\n".join(f"{'done' if done else 'todo'}  {cell_id}" for cell_id, done in cells)

