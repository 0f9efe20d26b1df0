"""The sweep runner: validate everything, record the spec, hand unfinished cells to a launcher.

Several runners may work on one sweep directory at once (two terminals, one per GPU, one per
node on a shared filesystem): each cell is claimed by whoever runs it, so they split the cells
and none runs twice. A runner that finds cells claimed elsewhere waits for them at the end and
runs any whose runner failed or died, so every runner ends with the same complete table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.io import try_claim
from orbitbench.sweep.cell import BadFitSettings, CellOutcome, stop_on_signals
from orbitbench.sweep.launch import Launcher, LocalLauncher
from orbitbench.sweep.results import SweepState, claim_path, is_finished, prepare_root, read_sweep_dir, write_csv
from orbitbench.sweep.spec import Cell, SweepSpec, check_runnable

DIR_LOCK = "claims/sweep.lock"


def run_sweep(
    spec: SweepSpec, root: Path, launcher: Launcher | None = None, in_process: bool = False,
    fail_fast: bool = False, progress: bool = True,
) -> SweepState:
    """Run every unfinished cell of `spec` in `root`; then rewrite results.csv from the records."""
    from tqdm.auto import tqdm

    launcher = launcher or LocalLauncher()
    if in_process and getattr(launcher, "jobs", 1) > 1:
        raise OrbitbenchError("--in_process runs one cell at a time; drop --jobs or --in_process")
    check_runnable(spec)  # nothing is written before the whole grid is known to be runnable
    root = Path(root).absolute()  # remote workers may start elsewhere
    with try_claim(root / DIR_LOCK, wait=True):  # spec merges and table writes, one runner at a time
        prepare_root(spec, root)
    cells = spec.cells()
    todo = todo_first = [cell for cell in cells if not is_finished(root, cell)]
    failures: list[str] = []
    ran_here: list[str] = []
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=f"sweep {spec.name}", unit="cell",
               disable=not progress, file=sys.stderr)
    with stop_on_signals():
        while todo:
            busy = _run_round(spec, root, todo, launcher, in_process, bar, failures, fail_fast, ran_here)
            for cell in busy:  # another runner has it: wait until it lets go
                with try_claim(claim_path(root, cell), wait=True):
                    pass
            todo = [cell for cell in busy if not is_finished(root, cell)]  # its runner failed or died
    bar.close()
    elsewhere = len(todo_first) - len(ran_here) - len(failures)
    print(f"sweep {spec.name}: {len(ran_here)} cells ran here, {elsewhere} in other runners, "
          f"{len(cells) - len(todo_first)} were finished before, {len(failures)} failed", file=sys.stderr)
    with try_claim(root / DIR_LOCK, wait=True):
        state = read_sweep_dir(root)
        write_csv(state)
    if failures:
        raise OrbitbenchError(
            f"{len(failures)} of {len(cells)} cells failed (first: {failures[0]}); re-run the same command to retry them"
        )
    return state


def _run_round(
    spec: SweepSpec, root: Path, todo: list[Cell], launcher: Launcher, in_process: bool, bar, failures: list[str],
    fail_fast: bool, ran_here: list[str],
) -> list[Cell]:
    """One pass of the launcher over `todo`; returns the cells claimed by another runner."""
    busy: list[Cell] = []
    outcomes = launcher.run(spec, root, todo, in_process)
    try:
        for outcome in outcomes:
            if outcome.status == "bad_settings" or (fail_fast and outcome.status == "failed"):
                raise (BadFitSettings if outcome.status == "bad_settings" else OrbitbenchError)(outcome.message)
            _report(outcome, bar, failures, busy)
            if outcome.status == "ran":
                ran_here.append(outcome.cell.cell_id)
    finally:
        outcomes.close()  # stops what the launcher still runs when we leave early
    return busy


def _report(outcome: CellOutcome, bar, failures: list[str], busy: list[Cell]) -> None:
    cell_id = outcome.cell.cell_id
    if outcome.status == "busy":
        busy.append(outcome.cell)
        bar.set_postfix_str(f"{cell_id} runs elsewhere")
        return
    if outcome.status in ("failed", "bad_settings"):
        failures.append(outcome.message)
        bar.write(f"orbitbench: {outcome.message}", file=sys.stderr)
    elif outcome.status == "ran":
        bar.set_postfix_str(f"{cell_id} out-test {outcome.out_test_acc:.3f}")
    bar.update(1)
