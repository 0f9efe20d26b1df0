"""What every `orbitbench theory` experiment shares: argument types, the run folder, outputs.

A run folder is an `orbitbench.io.WriteOnceFolder`: written under `<out>.partial` and renamed when
the experiment has finished, so a failed, interrupted (SIGTERM) or killed run never leaves a
half-written folder in place of a result.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from orbitbench.errors import OrbitbenchError
from orbitbench.io import WriteOnceFolder, sigterm_as_exit
from orbitbench.orbits import INTERPOLATIONS
from orbitbench.stats import pearson  # noqa: F401  (the experiments import it from here)

# Flag types raise ArgumentTypeError: argparse keeps its message (a ValueError would be replaced
# by "invalid <type> value"), and the theory parser turns it into one OrbitbenchError line.
BadFlag = argparse.ArgumentTypeError


def _list(text: str, convert, what: str, example: str, ok=lambda v: True, ok_what: str = "") -> list:
    try:
        values = [convert(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise BadFlag(f"{text!r} is not a list of {what} (expected e.g. '{example}')") from None
    if not values or not all(ok(v) for v in values):
        raise BadFlag(f"{text!r}: expected one or more {ok_what or what} (e.g. '{example}')")
    return values


def int_list(text: str) -> list[int]:
    """`"2,4,8"` or `"2 4 8"` -> [2, 4, 8] (positive integers)."""
    return _list(text, int, "integers", "2,4,8", lambda v: v >= 1, "positive integers")


def class_list(text: str) -> list[int]:
    """`"0,3,7"` -> [0, 3, 7] (digit classes 0-9)."""
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if not values or any(v not in range(10) for v in values):
        raise BadFlag(f"{text!r}: expected digit classes 0-9 (e.g. '0,3,7')")
    return values


def float_list(text: str) -> list[float]:
    """`"0.5,1,2"` -> [0.5, 1.0, 2.0]."""
    return _list(text, float, "numbers", "0.5,1,2")


def _number(text: str, convert, ok, what: str):
    try:
        value = convert(text)
    except ValueError:
        raise BadFlag(f"{text!r} is not {what}") from None
    if not ok(value):
        raise BadFlag(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/theory/<experiment>-<time>)")
    parser.add_argument("--seed", type=int, default=124, help="seed of the pair / seed-digit draws (paper: 124)")
    parser.add_argument("--device", default="cpu", help="torch device of the kernels (cpu, cuda, cuda:1, ...)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="mnist5k", help="digits: mnist5k (embedded), mnist, auto or an IDX path")
    parser.add_argument("--data-dir", default="data", help="folder of full MNIST for --source mnist/auto")
    parser.add_argument("--interpolation", default="cubic", choices=("cubic", "bilinear", "nearest"),
                        help="rotation interpolation (cubic: scipy's order-3 spline, as the paper's kernel code)")


def check_device(device: str) -> torch.device:
    """A usable torch device, or one OrbitbenchError line saying why not."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise OrbitbenchError(f"--device {device!r} is not a torch device (expected cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise OrbitbenchError(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is False)")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise OrbitbenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return parsed


# Option names shared by the experiments, checked for every entry point (CLI or a direct call).
POSITIVE_INTS = ("n_pairs", "seeds_per_class", "trials", "depth", "channels", "chunk", "steps", "batch_size",
                 "block_elements")
POSITIVE_INT_LISTS = ("n_poses", "depths", "n_angles", "rotations", "shifts", "orbit_sizes")


def execute(experiment: str, run: Callable[[argparse.Namespace, RunFolder], dict], options: dict) -> Path:
    """Check `options` (an experiment function's arguments), run into a fresh folder, return it."""
    for name in POSITIVE_INTS:
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OrbitbenchError(f"{name}={value!r}: expected a positive integer")
    for name in POSITIVE_INT_LISTS:
        values = options.get(name)
        if values is not None and (not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
            raise OrbitbenchError(f"{name}={values!r}: expected one or more positive integers")
    if "reg" in options and not options["reg"] >= 0:
        raise OrbitbenchError(f"reg={options['reg']!r}: expected a number >= 0")
    if options.get("interpolation", "cubic") not in INTERPOLATIONS:
        raise OrbitbenchError(f"interpolation={options['interpolation']!r}: expected one of {', '.join(INTERPOLATIONS)}")
    args = argparse.Namespace(**options)
    args.device = str(check_device(options.get("device", "cpu")))
    folder = RunFolder(options.get("out"), experiment)
    try:
        return folder.commit(run(args, folder))
    except BaseException:
        folder.discard()
        raise


DATA_ARGUMENTS_DOC = """
        source: digits: mnist5k (embedded), mnist, auto or an IDX path.
        data_dir: folder of full MNIST for source mnist / auto.
        interpolation: rotation interpolation: cubic (the paper's kernel code), bilinear, nearest.
        seed: seed of the digit draws (paper 124); draws are prefix-stable in their counts.
        device: torch device of the kernels (cpu, cuda, cuda:1, ...).
        out: run folder (default runs/theory/<experiment>-<time>)."""


def documents_data_arguments(function: Callable) -> Callable:
    """Append the shared data/run arguments to an experiment's `Args:` docstring section."""
    function.__doc__ = function.__doc__.rstrip() + DATA_ARGUMENTS_DOC + "\n    "
    return function


def ridge_note(reg: float, spectral: bool = True, exact: bool = True) -> dict:
    """What ridge each side of an experiment used, for its summary.json (docs/THEORY.md §2-3)."""
    note = {}
    if spectral:
        note["spectral"] = f"{reg:g} * trace(K) added to every eigenvalue of the circularized kernel (Eq. 7)"
    if exact:
        note["exact"] = f"{reg:g} * trace(K[O, O]) on the diagonal of the observed block (kernel regression)"
    return note


class RunFolder(WriteOnceFolder):
    """The experiment's folder: written as `<out>.partial`, renamed to `<out>` by `commit(summary)`.

    While it is open, SIGTERM ends the run through `discard()` (see `WriteOnceFolder`).
    """

    def __init__(self, out: Path | None, experiment: str) -> None:
        super().__init__(out or Path("runs") / "theory" / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}")
        self._writer = None
        self._sigterm = sigterm_as_exit()
        self._sigterm.__enter__()

    @property
    def writer(self):
        """TensorBoard SummaryWriter for scalars and figures (created on first use)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        return self._writer

    def write_csv(self, name: str, rows: Iterable[dict]) -> None:
        rows = list(rows)
        with open(self.path / name, "w", newline="") as handle:  # columns: every key, first seen first
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), restval="")
            writer.writeheader()
            writer.writerows(rows)

    def save_figure(self, figure, name: str = "figure.png", tag: str = "figure") -> None:
        figure.savefig(self.path / name, dpi=120, bbox_inches="tight")
        self.writer.add_figure(tag, figure, close=True)

    def commit(self, summary: dict) -> Path:  # type: ignore[override]
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        self._close()
        return super().commit()

    def discard(self) -> None:
        self._close()
        super().discard()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sigterm is not None:
            self._sigterm.__exit__(None, None, None)
            self._sigterm = None


