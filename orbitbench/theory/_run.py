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
from collections.abc import Iterable
from pathlib import Path

from orbitbench.io import WriteOnceFolder, sigterm_as_exit
from orbitbench.stats import pearson  # noqa: F401  (the experiments import it from here)

# Flag types raise ArgumentTypeError: argparse keeps its message (a ValueError would be replaced
# by "invalid <type> value"), and the theory parser turns it into one OrbitbenchError line.
BadFlag = argparse.ArgumentTypeError


def int_list(text: str) -> list[int]:
    """`"2,4,8"` or `"2 4 8"` -> [2, 4, 8] (positive integers)."""
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise BadFlag(f"{text!r} is not a list of integers (expected e.g. '2,4,8')") from None
    if not values or any(v < 1 for v in values):
        raise BadFlag(f"{text!r}: expected one or more positive integers (e.g. '2,4,8')")
    return values


def float_list(text: str) -> list[float]:
    """`"0.5,1,2"` -> [0.5, 1.0, 2.0]."""
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise BadFlag(f"{text!r} is not a list of numbers (expected e.g. '0.5,1,2')") from None
    if not values:
        raise BadFlag(f"{text!r}: expected one or more numbers")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadFlag(f"{text!r} is not a positive integer")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise BadFlag(f"{text!r} is not a number >= 0")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/theory/<experiment>-<time>)")
    parser.add_argument("--seed", type=int, default=124, help="seed of the pair / seed-digit draws (paper: 124)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="mnist5k", help="digits: mnist5k (embedded), mnist, auto or an IDX path")
    parser.add_argument("--data-dir", default="data", help="folder of full MNIST for --source mnist/auto")
    parser.add_argument(
        "--interpolation", default="bilinear", choices=("bilinear", "nearest"), help="rotation interpolation"
    )


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
        with open(self.path / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
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


