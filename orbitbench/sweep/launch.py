"""Launchers: how the cells of a sweep run; what a cell is and how it is collected does not change.

- `local`: in this machine, one cell at a time (default) or `jobs` subprocess fits at once;
- `ray`: one Ray task per cell with its CPU / GPU needs declared, on a local Ray instance or an
  existing cluster (`address`); needs the `cluster` extra (`pip install orbitbench[cluster]`);
- `submitit`: one SLURM job array (one task per cell) through submitit; `cluster="local"` runs
  the same jobs as local processes (tests, a workstation).

Every launcher runs `orbitbench.sweep.cell.execute_cell`, which claims its cell on the shared
sweep directory: several runners (launchers, machines) on one directory split the cells.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from orbitbench.errors import OrbitbenchError
from orbitbench.sweep.cell import CellOutcome, execute_cell, kill_running_children
from orbitbench.sweep.spec import Cell, SweepSpec

LauncherName = Literal["local", "ray", "submitit"]
LAUNCHERS: tuple[str, ...] = ("local", "ray", "submitit")


class Launcher(Protocol):
    def run(self, spec: SweepSpec, root: Path, cells: list[Cell], in_process: bool) -> Iterator[CellOutcome]:
        """Run `cells`, yielding each outcome as it comes; on an exception, stop what still runs."""


def _import_cluster_package(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise OrbitbenchError(
            f"--launcher {name} needs the {name!r} package: pip install 'orbitbench[cluster]'"
        ) from None


@dataclass
class LocalLauncher:
    """Cells on this machine: in order in this thread, or `jobs` subprocess fits at a time."""

    jobs: int = 1

    def run(self, spec: SweepSpec, root: Path, cells: list[Cell], in_process: bool) -> Iterator[CellOutcome]:
        if self.jobs == 1:
            for cell in cells:
                yield execute_cell(spec, root, cell, in_process)
            return
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="cell")
        futures = []
        try:
            futures += [pool.submit(execute_cell, spec, root, cell, False) for cell in cells]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            kill_running_children()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RayLauncher:
    """One Ray task per cell; a local Ray instance unless `address` names a cluster (`auto`, `ray://...`)."""

    address: str | None = None
    cpus_per_cell: float = 1
    gpus_per_cell: float = 0

    def run(self, spec: SweepSpec, root: Path, cells: list[Cell], in_process: bool) -> Iterator[CellOutcome]:
        ray = _import_cluster_package("ray")
        started = not ray.is_initialized()
        if started:  # an existing connection (a notebook, a test) is used as it is
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=0)(execute_cell)
        pending = {task.remote(spec, str(root), cell, in_process): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                pending.pop(done[0])
                yield ray.get(done[0])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)  # kills the worker; its fit dies with it (PDEATHSIG)
            raise
        finally:
            if started:
                ray.shutdown()


@dataclass
class SubmititLauncher:
    """One SLURM job array through submitit: task i runs cell i; logs under `<root>/submitit/`.

    `cluster`: None picks SLURM when `sbatch` is available, else local processes; "local" forces
    local processes. `parameters` go to `executor.update_parameters` (e.g. `slurm_partition`,
    `timeout_min`, `gpus_per_node`, `cpus_per_task`, `slurm_array_parallelism`).
    """

    cluster: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def run(self, spec: SweepSpec, root: Path, cells: list[Cell], in_process: bool) -> Iterator[CellOutcome]:
        submitit = _import_cluster_package("submitit")
        executor = submitit.AutoExecutor(folder=str(root / "submitit" / "%j"), cluster=self.cluster)
        try:
            executor.update_parameters(**{"timeout_min": 60, **self.parameters})
        except (TypeError, ValueError) as error:
            raise OrbitbenchError(f"submitit parameters: {' '.join(str(error).split())}") from None
        n = len(cells)
        jobs = executor.map_array(execute_cell, [spec] * n, [str(root)] * n, cells, [in_process] * n)
        try:
            for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
                try:
                    yield job.result()
                except Exception as error:  # the job itself died (time limit, node failure)
                    cell = cells[jobs.index(job)]
                    yield CellOutcome(cell, "failed", f"cell {cell.cell_id}: job {job.job_id} failed: {str(error)[-300:]}")
        except BaseException:
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            raise


def make_launcher(
    name: str, jobs: int = 1, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0,
    submitit_cluster: str | None = None, submitit_parameters: dict[str, Any] | None = None,
) -> Launcher:
    if name not in LAUNCHERS:
        raise OrbitbenchError(f"--launcher {name!r} is unknown: expected one of {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise OrbitbenchError(f"--jobs {jobs} is invalid: expected a positive integer")
    if address is not None and name != "ray":
        raise OrbitbenchError("--address is for --launcher ray (a Ray cluster's address)")
    if name in ("ray", "submitit"):
        _import_cluster_package(name)  # missing: one line before anything is written
    if name == "ray":
        return RayLauncher(address, cpus_per_cell, gpus_per_cell)
    if name == "submitit":
        parameters = {"slurm_array_parallelism": jobs, "cpus_per_task": int(cpus_per_cell),
                      **({"gpus_per_node": int(gpus_per_cell)} if gpus_per_cell else {}), **(submitit_parameters or {})}
        return SubmititLauncher(submitit_cluster, parameters)
    return LocalLauncher(jobs)
