"""What every `orbitbench theory` experiment shares: option checks, the run folder, outputs.

A run folder is an `orbitbench.io.WriteOnceFolder`: written under `<out>.partial` and renamed when
the experiment has finished, so a failed, interrupted (SIGTERM) or killed run never leaves a
half-written folder in place of a result.
"""

from __future__ import annotations

import types
import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from orbitbench.errors import OrbitbenchError
from orbitbench.io import WriteOnceFolder, sigterm_as_exit
from orbitbench.orbits import GROUPS, INTERPOLATIONS, GroupAction
from orbitbench.stats import pearson  # noqa: F401  (the experiments import it from here)


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
                 "block_elements", "epochs")
POSITIVE_INT_LISTS = ("n_poses", "depths", "n_angles", "rotations", "shifts", "orbit_sizes")


def execute(experiment: str, run: Callable[[types.SimpleNamespace, RunFolder], dict], options: dict) -> Path:
    """Check `options` (an experiment function's arguments), run into a fresh folder, return it."""
    data = options.pop("data", None)
    if data is not None:  # flat for the experiments: args.source, args.seed, ...
        options.update(dataclasses.asdict(data) if dataclasses.is_dataclass(data) else dict(data))
    for name in POSITIVE_INTS:
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OrbitbenchError(f"{name}={value!r}: expected a positive integer")
    for name in POSITIVE_INT_LISTS:
        values = options.get(name)
        if values is not None and (not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
            raise OrbitbenchError(f"{name}={values!r}: expected one or more positive integers")
    if options.get("reg") is not None and not options["reg"] >= 0:
        raise OrbitbenchError(f"reg={options['reg']!r}: expected a number >= 0")
    if options.get("interpolation", "cubic") not in INTERPOLATIONS:
        raise OrbitbenchError(f"interpolation={options['interpolation']!r}: expected one of {', '.join(INTERPOLATIONS)}")
    args = types.SimpleNamespace(**options)
    args.device = str(check_device(options.get("device", "cpu")))
    folder = RunFolder(options.get("out"), experiment)
    try:
        return folder.commit(run(args, folder))
    except BaseException:
        folder.discard()
        raise


def resolve_group(name: str) -> type[GroupAction]:
    """An experiment's `--group`: a registered kind (rotation, translation) or the import path of a
    `GroupAction` subclass (`mypackage.actions.Flip`; a trusted package, docs/ARCHITECTURE.md)."""
    if name in GROUPS:
        return GROUPS[name]
    if "." not in name:
        raise OrbitbenchError(f"group={name!r}: expected one of {', '.join(GROUPS)} or package.module.Class of a GroupAction")
    import importlib

    from orbitbench.trust import check_class_path

    check_class_path(name, f"group {name!r}", "class")
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError as error:
        raise OrbitbenchError(f"group {name!r}: cannot import {module!r} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, GroupAction)):
        raise OrbitbenchError(f"group {name!r} is not a GroupAction subclass (orbitbench.orbits)")
    return found


@dataclass(frozen=True)
class DigitData:
    """The seed digits of an experiment: where they come from, how they are drawn and rotated.

    Args:
        source: mnist5k (embedded), mnist, auto or an IDX path.
        data_dir: folder holding MNIST/raw for source mnist / auto (default: the user's cache, `orbitbench data`).
        interpolation: rotation interpolation: cubic (the paper's kernel code), bilinear, nearest.
        seed: seed of the digit draws (paper 124); draws are prefix-stable in their counts.
    """

    source: str = "mnist5k"
    data_dir: str | None = None
    interpolation: str = "cubic"
    seed: int = 124


DATA_ARGUMENTS_DOC = """
        data: the seed digits (`--data.source`, `--data.data_dir`, `--data.interpolation`, `--data.seed`).
        device: torch device of the kernels (cpu, cuda, cuda:1, ...).
        out: run folder (default runs/theory/<experiment>-<time>)."""


def documents_data_arguments(function: Callable) -> Callable:
    """Append the shared data/run arguments to an experiment's `Args:` docstring section."""
    function.__doc__ = function.__doc__.rstrip() + DATA_ARGUMENTS_DOC + "\n    "
    return function


@dataclass(frozen=True)
class Ridge:
    """One side's ridge: `value * trace` (relative) or `value` itself (absolute) (docs/THEORY.md §8)."""

    value: float
    relative: bool = True

    def note(self, side: str) -> str:
        if side == "spectral":
            where = "trace(K) = n K[0, 0]" if self.relative else "1 (absolute)"
            return f"{self.value:g} * {where} added to every eigenvalue of the circularized kernel (Eq. 7)"
        where = "trace(K[O, O])" if self.relative else "I (absolute)"
        return f"{self.value:g} * {where} on the diagonal of the observed block (kernel regression)"


# Named pairs of (spectral, exact) ridges of `theory pairs` / `theory cnn`.
RIDGE_PRESETS = {
    "orbitbench": (Ridge(1e-10), Ridge(1e-10)),  # one small ridge on both sides
    "authors": (Ridge(1e-5), Ridge(1e-10)),  # the authors' Fig. 4 code: 1e-5 K00 n spectral, 1e-10 trace exact
}
SCALES = {"relative": True, "absolute": False}


def resolve_ridges(options: dict) -> tuple[Ridge, Ridge]:
    """(spectral, exact) ridges from a preset (`ridge`), both values (`reg`) and per-side
    `spectral_reg` / `exact_reg` / `spectral_scale` / `exact_scale`, later ones overriding."""
    preset = options.get("ridge") or "orbitbench"
    if preset not in RIDGE_PRESETS:
        raise OrbitbenchError(f"ridge={preset!r}: expected one of {', '.join(RIDGE_PRESETS)}")
    sides = []
    for side, ridge in zip(("spectral", "exact"), RIDGE_PRESETS[preset]):
        value = options.get(f"{side}_reg")
        value = value if value is not None else options.get("reg") if options.get("reg") is not None else ridge.value
        scale = options.get(f"{side}_scale")
        if scale is not None and scale not in SCALES:
            raise OrbitbenchError(f"{side}_scale={scale!r}: expected relative or absolute")
        if not value >= 0:
            raise OrbitbenchError(f"{side}_reg={value!r}: expected a number >= 0")
        sides.append(Ridge(float(value), ridge.relative if scale is None else SCALES[scale]))
    return sides[0], sides[1]


def ridge_note(reg: float, spectral: bool = True, exact: bool = True) -> dict:
    """What ridge each side of an experiment used (one relative value), for its summary.json (docs/THEORY.md §2-3)."""
    sides = [side for side, used in (("spectral", spectral), ("exact", exact)) if used]
    return {side: Ridge(reg).note(side) for side in sides}


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


