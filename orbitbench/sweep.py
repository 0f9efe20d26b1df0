"""`orbitbench sweep`: the paper's Fig. 1 grid (models x poses x leave-out classes x seeds) as one
resumable command, and `orbitbench sweep plot` for Fig. 1C.

    orbitbench sweep run sweeps/cpu_quick.yaml [--out DIR] [--models a,b] [--shard I/K] [--in-process]
    orbitbench sweep sweeps/cpu_quick.yaml          # same as `run`
    orbitbench sweep collect DIR                    # rebuild DIR/results.csv from finished cells
    orbitbench sweep plot DIR [-o fig1c.png]        # accuracy vs n_poses, mean +- std over classes

Every cell is a plain `python -m orbitbench fit ...` subprocess with its own log dir
(`DIR/cells/<cell>/`: TensorBoard events, the child's console output in `fit.log`, the module's
`metrics.json`). Cells run as subprocesses, not in-process, because (1) Lightning's DDP launcher
re-executes the current command line once per rank, which must be the cell's `fit`, not the sweep;
(2) a crash, OOM or leaked global state (seeds, threads, CUDA context) stays inside one cell.
The cost is the interpreter start per cell: +34 s measured on a loaded 2-core CPU
(benchmarks/RESULTS.md); `--in-process` runs the cells through the LightningCLI in the sweep's own
process instead (same numbers, single device only).

A cell is finished when `DIR/cells/<cell>/result.json` exists; it is written atomically after the
fit exited 0, so killing the sweep loses at most the cell in progress and a re-run skips the rest.

Several GPUs: put Lightning's own flags in the sweep file's `fit:` section (`trainer.devices: 4`,
`trainer.strategy: ddp`) to run each cell data-parallel, or run one sweep per device on disjoint
cells (`CUDA_VISIBLE_DEVICES=i orbitbench sweep run F --shard i/K` for i in 0..K-1, also across
nodes sharing a filesystem), then `orbitbench sweep collect DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orbitbench.errors import OrbitbenchError

# Datamodule class -> the constructor argument that sets the group order.
POSE_ARGUMENT = {"RotatedMNIST": "n_angles", "TranslatedMNIST": "n_shifts"}
RESULT_FILE = "result.json"
SPEC_FILE = "sweep.yaml"
CSV_FILE = "results.csv"
METRICS_FILE = "metrics.json"  # written by the LightningModule at the end of fit/test
CSV_COLUMNS = (
    "sweep", "track", "cell", "model", "datamodule", "n_poses", "leave_out_class", "seed",
    "train_acc", "in_test_acc", "out_test_acc", "spectral_pred_acc",
    "in_test_acc_per_pose", "out_test_acc_per_pose", "wall_time_s", "param_count", "log_dir",
)
# Fit settings that fix which images are shown: they define a leaderboard track's protocol.
PROTOCOL_DATA_KEYS_EXCLUDED = ("batch_size", "num_workers", "data_dir")

Scalar = str | int | float | bool | None
FitValue = Scalar | list[Scalar] | dict[str, Any]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# ----------------------------------------------------------------------------------------------
# The sweep file
# ----------------------------------------------------------------------------------------------


class Grid(BaseModel):
    """The axes of the sweep; the cells are their Cartesian product."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: list[str] = Field(min_length=1)
    n_angles: list[int] | None = Field(default=None, min_length=1)
    n_shifts: list[int] | None = Field(default=None, min_length=1)
    leave_out_class: list[int] = Field(min_length=1)
    seed: list[int] = Field(default=[0], min_length=1)

    @field_validator("model", "n_angles", "n_shifts", "leave_out_class", "seed")
    @classmethod
    def _unique(cls, values: list | None) -> list | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"values must be unique, got {values}")
        return values

    @field_validator("n_angles", "n_shifts")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v < 1 for v in values):
            raise ValueError(f"group orders must be >= 1, got {values}")
        return values

    @field_validator("leave_out_class")
    @classmethod
    def _digit(cls, values: list[int]) -> list[int]:
        if any(v not in range(10) for v in values):
            raise ValueError(f"leave-out classes must be digits 0-9, got {values}")
        return values


class SweepSpec(BaseModel):
    """A sweep file: which grid, on which track, with which `orbitbench fit` settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    track: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    description: str = ""
    datamodule: Literal["RotatedMNIST", "TranslatedMNIST"]
    grid: Grid
    # `orbitbench fit` settings as dotted keys (`trainer.max_epochs: 3`), for every cell ...
    fit: dict[str, FitValue] = {}
    # ... and per model on top (training budget only: data settings are the track's protocol).
    model_fit: dict[str, dict[str, FitValue]] = {}
    # A model's own `orbitbench fit --config` file (models/<name>.yaml), applied before the settings.
    config_files: dict[str, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        pose_arg = POSE_ARGUMENT[self.datamodule]
        other = "n_shifts" if pose_arg == "n_angles" else "n_angles"
        if getattr(self.grid, pose_arg) is None:
            raise ValueError(f"datamodule {self.datamodule} needs grid.{pose_arg} (a list of group orders)")
        if getattr(self.grid, other) is not None:
            raise ValueError(f"grid.{other} does not apply to {self.datamodule}; use grid.{pose_arg}")
        for key in list(self.fit) + [k for over in self.model_fit.values() for k in over]:
            if key.startswith("-") or not re.fullmatch(r"[A-Za-z_][\w.]*\+?", key):
                raise ValueError(f"fit key {key!r} is not a dotted `orbitbench fit` option like trainer.max_epochs")
        reserved = {f"data.{pose_arg}", "data.leave_out_class", "seed_everything", "model.backbone", "data"}
        for key in reserved & set(self.fit):
            raise ValueError(f"fit.{key} is set by the grid for every cell; remove it from fit")
        for section in ("model_fit", "config_files"):
            for model in getattr(self, section):
                if model not in self.grid.model:
                    raise ValueError(f"{section}.{model}: {model!r} is not in grid.model {self.grid.model}")
        for model, over in self.model_fit.items():
            for key in over:
                if key.startswith("data.") or key in reserved:
                    raise ValueError(
                        f"model_fit.{model}.{key}: data settings are the track's protocol and must be "
                        "the same for every model; set them in fit"
                    )
        return self

    @property
    def pose_argument(self) -> str:
        return POSE_ARGUMENT[self.datamodule]

    @property
    def n_poses(self) -> list[int]:
        return list(getattr(self.grid, self.pose_argument))

    def protocol_data(self) -> dict[str, Any]:
        """The `data.*` settings that decide which images a cell sees (part of the track)."""
        return {
            key.removeprefix("data."): value
            for key, value in sorted(self.fit.items())
            if key.startswith("data.") and key.removeprefix("data.") not in PROTOCOL_DATA_KEYS_EXCLUDED
        }

    def training_config(self, model: str) -> dict[str, Any]:
        """Everything a submission chooses for `model`: the non-protocol fit settings."""
        merged = {**self.fit, **self.model_fit.get(model, {})}
        config = {
            key: value
            for key, value in sorted(merged.items())
            if not key.startswith("data.") or key.removeprefix("data.") in PROTOCOL_DATA_KEYS_EXCLUDED
        }
        if model in self.config_files:
            path = Path(self.config_files[model])
            config["config_file"] = str(path)
            config["config_file_content"] = yaml.safe_load(path.read_text()) if path.is_file() else None
        return config

    def cells(self) -> list[Cell]:
        return [
            Cell(model, n, c, s)
            for model, n, c, s in itertools.product(
                self.grid.model, self.n_poses, self.grid.leave_out_class, self.grid.seed
            )
        ]


def one_line_validation_error(source: str, error: ValidationError) -> str:
    """pydantic's multi-line report -> `source: field.path: message (got value)` on one line."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "<top level>"
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if first["type"] not in ("missing", "model_type") else ""
    more = f" [+{error.error_count() - 1} more error(s)]" if error.error_count() > 1 else ""
    return f"{source}: {where}: {message}{got}{more}".replace("\n", " ")


def parse_sweep_text(text: str, source: str) -> SweepSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OrbitbenchError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(raw, dict):
        raise OrbitbenchError(f"{source}: a sweep file must be a YAML mapping with name, track, datamodule, grid")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(source, error)) from None


def load_sweep_file(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise OrbitbenchError(f"sweep file {str(path)!r} does not exist; see sweeps/*.yaml for examples")
    return parse_sweep_text(path.read_text(), str(path))


def check_model_names(names: Sequence[str]) -> None:
    """Unknown names fail before any cell runs (building each once is cheap and exact)."""
    from orbitbench.models import create_model

    for name in names:
        create_model(name)  # raises OrbitbenchError naming the accepted models


# ----------------------------------------------------------------------------------------------
# Cells and their bookkeeping
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    model: str
    n_poses: int
    leave_out_class: int
    seed: int

    @property
    def cell_id(self) -> str:
        """A filesystem-safe, human-readable id: `paper_mlp-n4-c3-s0`, `timm_resnet18-n8-c0-s0`."""
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", self.model).strip("_")
        return f"{slug}-n{self.n_poses}-c{self.leave_out_class}-s{self.seed}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write next to `path`, then rename: readers see the old file or the whole new one, never half."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same filesystem
    try:
        with open(tmp, "xb") as handle:  # ordinary permissions (umask), unlike mkstemp's 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cli_value(value: FitValue) -> str:
    """A fit setting as jsonargparse reads it on the command line (YAML/JSON flow syntax)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def fit_argv(spec: SweepSpec, cell: Cell, log_dir: Path) -> list[str]:
    """The `orbitbench fit` command line of one cell: grid values, then fit, then model_fit."""
    settings: dict[str, FitValue] = {
        "seed_everything": cell.seed,
        "model.backbone": cell.model,
        "data": spec.datamodule,
        f"data.{spec.pose_argument}": cell.n_poses,
        "data.leave_out_class": cell.leave_out_class,
        "trainer.enable_progress_bar": False,  # the sweep's bar is over cells; fit.log stays readable
        **spec.fit,
        **spec.model_fit.get(cell.model, {}),
        "trainer.logger.class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "trainer.logger.init_args.save_dir": str(log_dir),
        "trainer.logger.init_args.name": "",
        "trainer.logger.init_args.version": "",
        "trainer.default_root_dir": str(log_dir),
    }
    config = [f"--config={spec.config_files[cell.model]}"] if cell.model in spec.config_files else []
    return ["fit", *config, *(f"--{key}={_cli_value(value)}" for key, value in settings.items())]


class CellResult(BaseModel):
    """`cells/<cell>/result.json`: one finished fit, everything the CSV and the leaderboard need."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    track: str
    cell: str
    model: str
    datamodule: str
    n_poses: int = Field(ge=1)
    leave_out_class: int = Field(ge=0, le=9)
    seed: int
    train_acc: float | None = Field(default=None, ge=0, le=1)
    in_test_acc: float = Field(ge=0, le=1)
    out_test_acc: float = Field(ge=0, le=1)
    spectral_pred_acc: float | None = Field(default=None, ge=0, le=1)
    in_test_acc_per_pose: list[float | None] = []
    out_test_acc_per_pose: list[float | None] = []
    wall_time_s: float = Field(ge=0)
    param_count: int | None = Field(default=None, ge=1)
    log_dir: str
    fit_argv: list[str]
    versions: dict[str, str]
    finished: str


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("orbitbench", "torch", "lightning", "timm", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def _metric(metrics: dict[str, Any], *names: str) -> Any:
    """The first of `names` found at the top of metrics.json or in its logged `metrics` dict."""
    logged = metrics.get("metrics") if isinstance(metrics.get("metrics"), dict) else {}
    for name in names:
        for source in (metrics, logged):
            if source.get(name) is not None:
                return source[name]
    return None


def _per_pose(metrics: dict[str, Any], split: str, n_poses: int) -> list[float | None]:
    """Per-pose accuracies (metrics.json `in_test_pose_acc`: a list, null for a pose never seen)."""
    listed = _metric(metrics, f"{split}_pose_acc", f"{split}_acc_per_pose")
    if isinstance(listed, list):
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in listed]
    return []


def _spectral_accuracy(metrics: dict[str, Any], argv: list[str], log_dir: Path) -> float | None:
    """EmpiricalNTKCallback's last `ntk/spectral_accuracy`, when the cell ran that callback.

    The callback logs through the loggers (not `self.log`), so it may be absent from metrics.json;
    then the cell's own TensorBoard events have it. Event files are read only for such cells.
    """
    found = _metric(metrics, "spectral_pred_acc", "ntk/spectral_accuracy")
    if found is not None or not any("EmpiricalNTKCallback" in arg for arg in argv):
        return found
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    if "ntk/spectral_accuracy" not in events.Tags().get("scalars", []):
        return None
    return float(events.Scalars("ntk/spectral_accuracy")[-1].value)


def result_from_metrics(
    spec: SweepSpec, cell: Cell, log_dir: Path, metrics: dict[str, Any], wall_time_s: float, argv: list[str]
) -> CellResult:
    """Map the module's metrics.json (names documented in orbitbench.module) to a CellResult."""
    for required in ("in_test_acc", "out_test_acc"):
        if _metric(metrics, required) is None:
            raise OrbitbenchError(
                f"cell {cell.cell_id}: {log_dir / METRICS_FILE} has no {required!r} "
                f"(keys: {', '.join(sorted(metrics)) or 'none'})"
            )
    return CellResult(
        sweep=spec.name,
        track=spec.track,
        cell=cell.cell_id,
        model=cell.model,
        datamodule=spec.datamodule,
        n_poses=cell.n_poses,
        leave_out_class=cell.leave_out_class,
        seed=cell.seed,
        train_acc=_metric(metrics, "train_acc", "train/acc"),
        in_test_acc=_metric(metrics, "in_test_acc", "val/in_test_acc"),
        out_test_acc=_metric(metrics, "out_test_acc", "val/out_test_acc"),
        spectral_pred_acc=_spectral_accuracy(metrics, argv, log_dir),
        in_test_acc_per_pose=_per_pose(metrics, "in_test", cell.n_poses),
        out_test_acc_per_pose=_per_pose(metrics, "out_test", cell.n_poses),
        wall_time_s=round(wall_time_s, 3),
        param_count=_metric(metrics, "n_params", "param_count"),
        log_dir=str(log_dir),
        fit_argv=argv,
        versions=package_versions(),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


@dataclass
class SweepState:
    """A sweep directory as found on disk: the spec it was started with and its finished cells."""

    root: Path
    spec: SweepSpec
    results: dict[str, CellResult]  # cell id -> result, in grid order
    missing: list[Cell]


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.cell_id


def read_sweep_dir(root: str | Path) -> SweepState:
    """Load `root/sweep.yaml` and every finished cell's result; malformed results are errors."""
    root = Path(root)
    spec_path = root / SPEC_FILE
    if not spec_path.is_file():
        raise OrbitbenchError(
            f"{str(root)!r} is not a sweep directory: {SPEC_FILE} missing (run `orbitbench sweep run <file>` first)"
        )
    spec = parse_sweep_text(spec_path.read_text(), str(spec_path))
    results: dict[str, CellResult] = {}
    missing: list[Cell] = []
    for cell in spec.cells():
        path = cell_dir(root, cell) / RESULT_FILE
        if not path.is_file():
            missing.append(cell)
            continue
        try:
            results[cell.cell_id] = CellResult.model_validate_json(path.read_text())
        except ValidationError as error:
            raise OrbitbenchError(one_line_validation_error(str(path), error)) from None
    return SweepState(root, spec, results, missing)


def write_csv(state: SweepState) -> Path:
    """`results.csv`: one row per finished cell, grid order; per-pose lists as `;`-joined numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in state.results.values():
        row = result.model_dump(include=set(CSV_COLUMNS))
        for key in ("in_test_acc_per_pose", "out_test_acc_per_pose"):
            row[key] = ";".join("" if v is None else f"{v:.6g}" for v in row[key])
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    path = state.root / CSV_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def _prepare_root(spec: SweepSpec, root: Path) -> SweepSpec:
    """Record the spec in the sweep dir and return the dir's spec.

    Running more models of the same sweep into the same dir (`--models`) adds them to the recorded
    grid; any other difference (grid, settings) is refused rather than mixed into one table.
    """
    spec_path = root / SPEC_FILE
    if spec_path.is_file():
        previous = parse_sweep_text(spec_path.read_text(), str(spec_path))
        shared = [m for m in spec.grid.model if m in previous.grid.model]
        same_models = all(
            spec.model_fit.get(m) == previous.model_fit.get(m) and spec.config_files.get(m) == previous.config_files.get(m)
            for m in shared
        )
        without_models = {"grid": {"model"}, "model_fit": True, "config_files": True}
        if not same_models or previous.model_dump(exclude=without_models) != spec.model_dump(exclude=without_models):
            raise OrbitbenchError(
                f"{root} holds a different sweep ({previous.name!r}, changed grid or settings); "
                "use another --out or delete that directory"
            )
        models = previous.grid.model + [m for m in spec.grid.model if m not in previous.grid.model]
        merged = previous.model_copy(
            update={"grid": previous.grid.model_copy(update={"model": models}),
                    "model_fit": {**previous.model_fit, **spec.model_fit},
                    "config_files": {**previous.config_files, **spec.config_files}}
        )
        if merged == previous:
            return previous
        spec_to_write = merged
    else:
        spec_to_write = spec
    atomic_write_text(spec_path, yaml.safe_dump(spec_to_write.model_dump(mode="json"), sort_keys=False))
    return spec_to_write


class BadFitSettings(OrbitbenchError):
    """`orbitbench fit` rejected its settings (exit 2): every other cell would fail the same way."""


@contextlib.contextmanager
def _output_to(log: io.TextIOBase):
    """Send this process's stdout and stderr (file descriptors, so C code and logging too) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # sys.stdout / sys.stderr may not be fds 1 and 2 (pytest, notebooks): redirect them as well.
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


def _fit_in_process(argv: list[str]) -> int:
    from orbitbench.training_cli import run_lightning_cli

    try:
        return run_lightning_cli(argv)
    except Exception as error:  # a crash in one cell must not end the sweep
        print(f"{type(error).__name__}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1


def run_cell(spec: SweepSpec, cell: Cell, root: Path, in_process: bool = False) -> CellResult:
    """One `orbitbench fit`; its console output goes to `fit.log`; the result is written last.

    By default a `python -m orbitbench fit` subprocess. `in_process=True` calls the LightningCLI
    in this process instead: no interpreter start-up per cell (tens of seconds on a loaded CPU,
    see benchmarks/RESULTS.md) but single-device only (DDP re-executes the command line) and a
    hard crash ends the sweep (resumable all the same).
    """
    log_dir = cell_dir(root, cell)
    if log_dir.exists():  # an unfinished attempt (killed or failed): its events would mix with ours
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True)
    argv = fit_argv(spec, cell, log_dir)
    start = time.perf_counter()
    with open(log_dir / "fit.log", "w") as log:
        log.write("$ orbitbench " + " ".join(argv) + "\n")
        log.flush()
        if in_process:
            with _output_to(log):
                returncode = _fit_in_process(argv)
        else:
            command = [sys.executable, "-m", "orbitbench", *argv]
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    _raise_if_signalled()  # a fit cut short by a signal is not a result, nor a failed cell
    if returncode != 0:
        tail = (log_dir / "fit.log").read_text().strip().splitlines()[-1:] or [""]
        message = f"cell {cell.cell_id} failed (exit {returncode}): {tail[0][:300]} [full log: {log_dir / 'fit.log'}]"
        raise (BadFitSettings if returncode == 2 else OrbitbenchError)(message)
    metrics_path = log_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise OrbitbenchError(f"cell {cell.cell_id}: the fit exited 0 but wrote no {metrics_path}")
    metrics = json.loads(metrics_path.read_text())
    result = result_from_metrics(spec, cell, log_dir, metrics, wall, argv)
    atomic_write_text(log_dir / RESULT_FILE, result.model_dump_json(indent=2) + "\n")
    return result


def _parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise OrbitbenchError(f"--shard {text!r} is invalid: expected I/K with 0 <= I < K, e.g. 0/4")
    return int(match.group(1)), int(match.group(2))


def run_sweep(
    spec: SweepSpec, root: Path, shard: tuple[int, int] = (0, 1), fail_fast: bool = False, progress: bool = True,
    in_process: bool = False,
) -> SweepState:
    """Run every unfinished cell of this shard, in grid order; then rewrite results.csv."""
    from tqdm.auto import tqdm

    check_model_names(spec.grid.model)
    for model, path in spec.config_files.items():
        if not Path(path).is_file():
            raise OrbitbenchError(f"config_files.{model}: {path!r} does not exist; expected a `orbitbench fit --config` YAML")
    _prepare_root(spec, root)  # the cells run are this spec's; the dir may hold more models
    index, count = shard
    mine = [cell for i, cell in enumerate(spec.cells()) if i % count == index]
    todo = [cell for cell in mine if not (cell_dir(root, cell) / RESULT_FILE).is_file()]
    failures: list[str] = []
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"sweep {spec.name}", unit="cell",
               disable=not progress, file=sys.stderr)
    with _stop_on_signals():
        _run_cells(spec, root, todo, bar, failures, fail_fast, in_process)
    bar.close()
    state = read_sweep_dir(root)
    write_csv(state)
    if failures:
        raise OrbitbenchError(
            f"{len(failures)} of {len(todo)} cells failed (first: {failures[0]}); re-run the same command to retry them"
        )
    return state


_received_signals: list[int] = []  # what `_stop_on_signals` caught, even where its raise was swallowed


def _raise_if_signalled() -> None:
    """Stop the sweep if a signal arrived, also when its exception was lost on the way.

    A signal handler's exception surfaces wherever the main thread happens to be; inside a
    finalizer Python only prints it, and Lightning then ends the fit quietly on its own SIGTERM
    flag. The record kept by the handler makes the stop certain either way.
    """
    if _received_signals:
        raise SweepTerminated(_received_signals[-1])


class SweepTerminated(BaseException):
    """SIGTERM or Ctrl-C reached the sweep. A BaseException so that no `except Exception` (ours or
    Lightning's) turns it into a failed cell: the sweep stops; finished cells stay finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """Make `kill <sweep pid>` and Ctrl-C stop the whole sweep, not just the cell in progress.

    In-process, Lightning's SIGTERM handler only sets a flag (made for cluster requeueing) and its
    Ctrl-C handling ends the fit as a failure, so the sweep would go on with the next cell; it
    calls handlers installed before it, so ours runs too. For subprocess cells, the exception makes
    `subprocess.run` kill the running child.
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


def _run_cells(spec: SweepSpec, root: Path, todo: list[Cell], bar, failures: list[str], fail_fast: bool,
               in_process: bool) -> None:
    for cell in todo:
        bar.set_postfix_str(cell.cell_id)
        try:
            result = run_cell(spec, cell, root, in_process)
        except OrbitbenchError as error:
            if fail_fast or isinstance(error, BadFitSettings):
                raise
            failures.append(str(error))
            bar.write(f"orbitbench: {error}", file=sys.stderr)
        else:
            bar.set_postfix_str(f"{cell.cell_id} out-test {result.out_test_acc:.3f}")
        bar.update(1)


# ----------------------------------------------------------------------------------------------
# Fig. 1C
# ----------------------------------------------------------------------------------------------


def aggregate(results: Sequence[CellResult], key: str) -> dict[tuple[str, int], tuple[float, float, int]]:
    """(model, n_poses) -> (mean, population std, count) of `key` over leave-out classes and seeds."""
    groups: dict[tuple[str, int], list[float]] = {}
    for result in results:
        value = getattr(result, key)
        if value is not None:
            groups.setdefault((result.model, result.n_poses), []).append(float(value))
    stats = {}
    for group, values in groups.items():
        mean = sum(values) / len(values)
        stats[group] = (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), len(values))
    return stats


def plot_sweep(state: SweepState, output: Path) -> Path:
    """Out-test (solid) and in-test (dashed) accuracy vs group order per model, mean +- std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(state.results.values())
    if not results:
        raise OrbitbenchError(f"{state.root}: no finished cells to plot yet")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for color, model in zip(itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), state.spec.grid.model):
        for key, style, marker, label in (("out_test_acc", "-", "o", "out-test"), ("in_test_acc", "--", "s", "in-test")):
            stats = aggregate([r for r in results if r.model == model], key)
            if not stats:
                continue
            xs = sorted(n for _, n in stats)
            means = [stats[(model, n)][0] for n in xs]
            stds = [stats[(model, n)][1] for n in xs]
            ax.plot(xs, means, style, marker=marker, mfc="none" if marker == "s" else color, color=color,
                    label=f"{model} {label}")
            if key == "out_test_acc":
                ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=color, alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(state.spec.n_poses, [str(n) for n in state.spec.n_poses])
    ax.set_xlabel(state.spec.pose_argument)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{state.spec.name}: mean ± std over leave-out classes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves stay visible
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(output, buffer.getvalue())
    return output


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

SUBCOMMANDS = ("run", "collect", "plot", "list")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbitbench sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) every unfinished cell of a sweep file")
    run.add_argument("sweep_file")
    run.add_argument("--out", help="sweep directory (default: runs/sweeps/<name>)")
    run.add_argument("--models", help="comma-separated subset of grid.model (or new names) to run instead")
    run.add_argument("--shard", default="0/1", help="run cells i, i+K, i+2K... only (I/K; one per device/node)")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--in-process", action="store_true",
                     help="run cells in this process (no start-up per cell; single device only)")
    listing = sub.add_parser("list", help="print the cells of a sweep file and whether they are finished")
    listing.add_argument("sweep_file")
    listing.add_argument("--out")
    listing.add_argument("--models")
    collect = sub.add_parser("collect", help="rebuild <dir>/results.csv from the finished cells")
    collect.add_argument("sweep_dir")
    plot = sub.add_parser("plot", help="Fig. 1C: accuracy vs n_poses per model")
    plot.add_argument("sweep_dir")
    plot.add_argument("-o", "--output", help="PNG path (default: <dir>/fig1c.png)")
    return parser


def _spec_for(args: argparse.Namespace) -> tuple[SweepSpec, Path]:
    spec = load_sweep_file(args.sweep_file)
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models:
            raise OrbitbenchError(f"--models {args.models!r} names no model")
        try:  # a contributor runs a track's sweep file with their own model: same protocol
            spec = SweepSpec.model_validate(
                {**spec.model_dump(), "grid": {**spec.grid.model_dump(), "model": models},
                 "model_fit": {m: v for m, v in spec.model_fit.items() if m in models},
                 "config_files": {m: v for m, v in spec.config_files.items() if m in models}}
            )
        except ValidationError as error:
            raise OrbitbenchError(one_line_validation_error("--models", error)) from None
    root = Path(args.out) if args.out else Path("runs") / "sweeps" / spec.name
    return spec, root


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["run", *argv]  # `orbitbench sweep FILE` is `orbitbench sweep run FILE`
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            spec, root = _spec_for(args)
            state = run_sweep(spec, root, _parse_shard(args.shard), args.fail_fast, not args.no_progress,
                              args.in_process)
            print(f"{len(state.results)} of {len(state.spec.cells())} cells finished; table: {root / CSV_FILE}")
            if state.missing:
                print(f"{len(state.missing)} cells of {root} are not finished here (other shards or --models)")
        elif args.command == "list":
            spec, root = _spec_for(args)
            for cell in spec.cells():
                done = (cell_dir(root, cell) / RESULT_FILE).is_file()
                print(f"{'done' if done else 'todo'}  {cell.cell_id}")
        elif args.command == "collect":
            state = read_sweep_dir(args.sweep_dir)
            path = write_csv(state)
            print(f"{len(state.results)} finished, {len(state.missing)} missing; table: {path}")
        elif args.command == "plot":
            state = read_sweep_dir(args.sweep_dir)
            output = Path(args.output) if args.output else state.root / "fig1c.png"
            print(plot_sweep(state, output))
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        return 2
    except SweepTerminated as stop:
        print(f"orbitbench: sweep stopped by {signal.Signals(stop.signum).name}; finished cells are kept, "
              "re-run the same command to resume", file=sys.stderr)
        return 128 + stop.signum
    return 0
