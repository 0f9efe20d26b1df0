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


