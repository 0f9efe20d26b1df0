"""Running one cell, wherever a launcher puts it (this process, a thread, a Ray task, a SLURM job).

`execute_cell` claims the cell (`orbitbench.io.Claim` on `claims/<cell>.lock`), so two runners
never run one cell twice: a cell claimed elsewhere comes back `busy`, one finished meanwhile
`done`. Holding the claim also makes clearing an unfinished attempt safe: every process that
writes into a cell folder holds its claim (a subprocess fit inherits the descriptor), so an
unclaimed folder has no live writer.

By default the fit is a `python -m orbitbench fit` subprocess (`orbitbench.sweep._child`): DDP
re-executes the command line per rank, and a crash, OOM or leaked global state stays inside one
cell. The child dies with the process that started it (PR_SET_PDEATHSIG), so a SIGKILLed sweep
leaves no orphan fit behind. `in_process=True` runs the LightningCLI in this process instead (no
interpreter start-up per cell; single device), with every output line in the cell's `fit.log`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from orbitbench.errors import Interrupted, OrbitbenchError
from orbitbench.io import Claim, try_claim
from orbitbench.run.record import RECORD_FILE
from orbitbench.sweep.results import cell_dir, claim_path, read_spec, result_from_record
from orbitbench.sweep.spec import Cell, SweepSpec, fit_argv

Status = Literal["ran", "done", "busy", "failed", "bad_settings"]
_children: set[subprocess.Popen] = set()  # running subprocess fits, so a stopped sweep can end them
_children_lock = threading.Lock()


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell (plain data: it travels back from Ray tasks and SLURM jobs)."""

    cell: Cell
    status: Status
    message: str = ""
    out_test_acc: float | None = None
    seconds: float = 0.0


def execute_cell(spec: SweepSpec | None, root: Path, cell: Cell, in_process: bool = False) -> CellOutcome:
    """Claim `cell`, run its fit unless finished, check its record; never raises for a failed fit."""
    root = Path(root)
    spec = spec or read_spec(root)
    claim = try_claim(claim_path(root, cell))
    if claim is None:
        return CellOutcome(cell, "busy", "claimed by another runner")
    with claim:
        folder = cell_dir(root, cell)
        record = folder / RECORD_FILE
        if record.is_file():
            return CellOutcome(cell, "done")
        if folder.exists():  # an attempt whose writers are all gone: they held this claim
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        argv = fit_argv(spec, cell, folder)
        start = time.perf_counter()
        try:
            log = open(folder / "fit.log", "w")
            log.write("$ orbitbench " + " ".join(argv) + "\n")
            log.flush()
        except OSError as error:  # a full disk: every further cell would fail the same way
            shutil.rmtree(folder, ignore_errors=True)
            raise OrbitbenchError(f"cell {cell.cell_id}: cannot write {folder / 'fit.log'}: {error.strerror or error}; "
                                  "finished cells are kept, re-run the same command to resume") from None
        with log:
            returncode = _fit_in_process(argv, log) if in_process else _fit_subprocess(argv, log, claim)
        seconds = time.perf_counter() - start
        _raise_if_signalled()  # a fit cut short by a signal is not a result, nor a failed cell
        if returncode != 0:
            tail = (folder / "fit.log").read_text().strip().splitlines()[-1:] or [""]
            message = f"cell {cell.cell_id} failed (exit {returncode}): {tail[0][:300]} [full log: {folder / 'fit.log'}]"
            return CellOutcome(cell, "bad_settings" if returncode == 2 else "failed", message, seconds=seconds)
        try:
            from orbitbench.run.record import load_record

            result = result_from_record(spec, cell, load_record(record), str(record))
        except OrbitbenchError as error:
            return CellOutcome(cell, "failed", f"cell {cell.cell_id}: {error}", seconds=seconds)
        return CellOutcome(cell, "ran", out_test_acc=result.out_test_acc, seconds=seconds)


def _fit_subprocess(argv: list[str], log: TextIO, claim: Claim) -> int:
    """`python -m orbitbench.sweep._child <pid> fit ...`: holds the claim, dies with this process."""
    command = [sys.executable, "-m", "orbitbench.sweep._child", str(os.getpid()), *argv]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, pass_fds=[claim.fileno()], start_new_session=True
    )
    with _children_lock:
        _children.add(process)
    try:
        return process.wait()
    except BaseException:  # SweepTerminated, KeyboardInterrupt: end the fit and its own children
        _kill_group(process)
        raise
    finally:
        with _children_lock:
            _children.discard(process)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the fit, its workers and DDP ranks
    process.wait()


def kill_running_children() -> None:
    """End every subprocess fit this process started (a stopped sweep with several jobs)."""
    with _children_lock:
        running = list(_children)
    for process in running:
        _kill_group(process)


class BadFitSettings(OrbitbenchError):
    """`orbitbench fit` rejected its settings (exit 2): every other cell would fail the same way."""


# ---- in-process cells ------------------------------------------------------------------------


def _fit_in_process(argv: list[str], log: TextIO) -> int:
    """One cell's fit in this process. A finished fit leaves its trainer, module, data and callbacks
    in reference cycles that only the cyclic collector frees, and its full pass rarely runs in a
    long-lived runner: collected here, or a runner keeps every cell's posed images and kernels."""
    from orbitbench.run.cli import run_lightning_cli  # imported before the redirection (its loggers)

    try:
        with _output_to(log):
            try:
                return run_lightning_cli(argv)
            except Exception as error:  # a crash in one cell must not end the sweep
                print(f"{type(error).__name__}: {' '.join(str(error).split())}", file=sys.stderr)
                return 1
    finally:
        gc.collect()


@contextlib.contextmanager
def _output_to(log: TextIO):
    """Send everything this process prints to `log`: file descriptors 1 and 2 (C code), sys.stdout /
    sys.stderr (pytest, notebooks replace them) and every logging handler writing to either."""
    sys.stdout.flush()
    sys.stderr.flush()
    outer = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in getattr(logger, "handlers", [])
        if type(handler) is logging.StreamHandler and handler.stream in outer
    ]
    saved = [os.dup(1), os.dup(2)]
    previous = [handler.setStream(log) for handler in handlers]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for handler, stream in zip(handlers, previous):
            handler.setStream(stream)


# ---- signals -------------------------------------------------------------------------------


class SweepTerminated(Interrupted):
    """SIGTERM or Ctrl-C reached the sweep. A BaseException so that no `except Exception` (ours or
    Lightning's) turns it into a failed cell: the sweep stops; finished cells stay finished."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"sweep stopped by {name}; finished cells are kept, re-run the same command to resume", signum)


_received_signals: list[int] = []  # what `stop_on_signals` caught, even where its raise was swallowed


def _raise_if_signalled() -> None:
    """Stop the sweep if a signal arrived, also when its exception was lost on the way.

    A signal handler's exception surfaces wherever the main thread happens to be; inside a
    finalizer Python only prints it, and Lightning then ends the fit quietly on its own SIGTERM
    flag. The record kept by the handler makes the stop certain either way.
    """
    if _received_signals:
        raise SweepTerminated(_received_signals[-1])


@contextlib.contextmanager
def stop_on_signals():
    """Make `kill <sweep pid>` and Ctrl-C stop the whole sweep, not just the cell in progress.

    In-process, Lightning's SIGTERM handler only sets a flag (made for cluster requeueing) and its
    Ctrl-C handling ends the fit as a failure, so the sweep would go on with the next cell; it
    calls handlers installed before it, so ours runs too. Subprocess fits are killed with their
    process group.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _received_signals.clear()

    def handler(signum, frame):
        _received_signals.append(signum)
        raise SweepTerminated(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
