"""A sweep directory on disk: its spec, its finished cells (their run records) and results.csv.

    <root>/sweep.yaml                 the spec (more models may be added; any other change is refused)
    <root>/cells/<cell>/              the cell's Lightning log dir: record.json (the result), fit.log,
                                      TensorBoard events, checkpoints
    <root>/claims/<cell>.lock         held by whoever runs the cell (see orbitbench.io.Claim)
    <root>/results.csv                one row per finished cell, grid order

A cell is finished when its `record.json` exists: the fit writes it atomically as its last act.
Collection reads nothing else, so results do not depend on how (or where) the cells ran.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from orbitbench.errors import OrbitbenchError
from orbitbench.entrants import entrant_id
from orbitbench.io import atomic_write_text
from orbitbench.theory.registry import predictor_names, recorded_predictions
from orbitbench.run.record import RECORD_FILE, RunRecord, load_record
from orbitbench.stats import mean_std
from orbitbench.sweep.spec import Cell, SweepSpec, parse_sweep_text

SPEC_FILE = "sweep.yaml"
CSV_FILE = "results.csv"
CSV_COLUMNS = (
    "sweep", "track", "cell", "model", "method", "datamodule", "n_poses", "leave_out_class", "seed",
    "train_acc", "in_test_acc", "out_test_acc", "in_test_acc_per_pose", "out_test_acc_per_pose", "param_count", "log_dir",
)


SCALE_COLUMNS = {"scale_out_test": "scale_out_test_acc", "scale_kappa": "scale_kappa", "scale_m": "regression_m"}


def csv_columns() -> tuple[str, ...]:
    """`results.csv`'s columns: each registered kernel predictor's spectral-rule prediction of
    out-test accuracy (`orbitbench.theory.registry`) is a column `pred_<name>_out_test`; then its
    regression at scale (docs/THEORY.md §10): `pred_<name>_scale_out_test`, `_scale_kappa`, `_scale_m`."""
    at = CSV_COLUMNS.index("in_test_acc_per_pose")
    scale = (f"pred_{name}_{column}" for name in predictor_names() for column in SCALE_COLUMNS)
    return (*CSV_COLUMNS[:at], *(f"pred_{name}_out_test" for name in predictor_names()), *scale, *CSV_COLUMNS[at:])


def scale_predictions(record: RunRecord) -> dict[str, dict[str, float | int | None]]:
    """predictor -> its at-scale numbers (`SCALE_COLUMNS`; None where not measured)."""
    measured = record.predictions.predictors if record.predictions is not None else {}
    return {name: {column: getattr(measured[name], field) if name in measured else None
                   for column, field in SCALE_COLUMNS.items()} for name in predictor_names()}  # fmt: skip


class CellResult(BaseModel):
    """One finished cell: its place in the grid and what its run record measured."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    track: str
    cell: str
    model: str
    method: str = "supervised"
    datamodule: str
    n_poses: int = Field(ge=1)
    leave_out_class: int = Field(ge=0, le=9)
    seed: int
    train_acc: float | None = Field(default=None, ge=0, le=1)
    in_test_acc: float = Field(ge=0, le=1)
    out_test_acc: float = Field(ge=0, le=1)
    predicted: dict[str, float | None] = {}  # predictor -> spectral-rule out-test prediction (None: undefined)
    scale: dict[str, dict[str, float | int | None]] = {}  # predictor -> at-scale regression (SCALE_COLUMNS)
    in_test_acc_per_pose: list[float | None] = []
    out_test_acc_per_pose: list[float | None] = []
    wall_time_s: float = Field(ge=0)
    param_count: int = Field(ge=1)
    log_dir: str  # relative to the sweep directory
    versions: dict[str, str]
    finished: datetime


def cell_dir(root: Path, cell: Cell) -> Path:
    return Path(root) / "cells" / cell.cell_id


def claim_path(root: Path, cell: Cell) -> Path:
    return Path(root) / "claims" / f"{cell.cell_id}.lock"


def is_finished(root: Path, cell: Cell) -> bool:
    return (cell_dir(root, cell) / RECORD_FILE).is_file()


def result_from_record(spec: SweepSpec, cell: Cell, record: RunRecord, source: str) -> CellResult:
    """Check the record is this cell's run (a moved or hand-edited folder is refused), then summarise it."""
    found = (record.model.backbone, record.model.method, record.data.n_poses,
             record.data.hparams.get("leave_out_class"), record.seeds.seed_everything, record.stage)
    expected = (cell.model, cell.method, cell.n_poses, cell.leave_out_class, cell.seed, "fit")
    if found != expected:
        raise OrbitbenchError(
            f"{source}: the record is of (model, method, n_poses, leave_out_class, seed, stage) {found}, "
            f"not of cell {cell.cell_id} {expected}; delete that cell folder to re-run it"
        )
    predicted = {name: values["out_test"] for name, values in recorded_predictions(record).items()}
    metrics = record.metrics
    return CellResult(
        sweep=spec.name, track=spec.track, cell=cell.cell_id, model=cell.model, method=cell.method,
        datamodule=spec.datamodule,
        n_poses=cell.n_poses, leave_out_class=cell.leave_out_class, seed=cell.seed,
        train_acc=metrics.train_acc, in_test_acc=metrics.in_test_acc, out_test_acc=metrics.out_test_acc,
        predicted=predicted, scale=scale_predictions(record),
        in_test_acc_per_pose=metrics.in_test_acc_per_pose, out_test_acc_per_pose=metrics.out_test_acc_per_pose,
        wall_time_s=record.wall_time_s, param_count=record.model.n_params,
        log_dir=str(Path("cells") / cell.cell_id), versions=record.versions, finished=record.finished,
    )


@dataclass
class SweepState:
    """A sweep directory as found on disk: the spec it was started with and its finished cells."""

    root: Path
    spec: SweepSpec
    results: dict[str, CellResult]  # cell id -> result, in grid order
    missing: list[Cell]


def read_spec(root: Path) -> SweepSpec:
    path = Path(root) / SPEC_FILE
    if not path.is_file():
        raise OrbitbenchError(
            f"{str(root)!r} is not a sweep directory: {SPEC_FILE} missing (run `orbitbench sweep run <file>` first)"
        )
    return parse_sweep_text(path.read_text(), str(path))


def read_sweep_dir(root: str | Path) -> SweepState:
    """Load `root/sweep.yaml` and every finished cell's run record; an unusable record is an error."""
    root = Path(root)
    spec = read_spec(root)
    results: dict[str, CellResult] = {}
    missing: list[Cell] = []
    for cell in spec.cells():
        if not is_finished(root, cell):
            missing.append(cell)
            continue
        path = cell_dir(root, cell) / RECORD_FILE
        results[cell.cell_id] = result_from_record(spec, cell, load_record(path), str(path))
    return SweepState(root, spec, results, missing)


def write_csv(state: SweepState) -> Path:
    """`results.csv`: one row per finished cell, grid order; per-pose lists as `;`-joined numbers.

    Only measurements and grid positions: the same cells give the same bytes however they ran.
    """
    buffer = io.StringIO()
    columns = csv_columns()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for result in state.results.values():
        row = result.model_dump(include=set(columns))
        row.update({f"pred_{name}_out_test": value for name, value in result.predicted.items()})
        row.update({f"pred_{name}_{column}": value for name, values in result.scale.items()
                    for column, value in values.items()})  # fmt: skip
        for key in ("in_test_acc_per_pose", "out_test_acc_per_pose"):
            row[key] = ";".join("" if v is None else f"{v:.6g}" for v in row[key])
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    path = state.root / CSV_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


def entrant(result: CellResult) -> str:
    """What a sweep compares: the model, with its training method when that is not `supervised`."""
    return entrant_id(result.model, result.method)


def aggregate(results: Sequence[CellResult], key: str) -> dict[tuple[str, int], tuple[float, float, int]]:
    """(entrant, n_poses) -> (mean, population std, count) of `key` over leave-out classes and seeds;
    the entrant is `entrant(result)`: the model, plus its method where that is not `supervised`."""
    groups: dict[tuple[str, int], list[float]] = {}
    for result in results:
        value = getattr(result, key)
        if value is not None:
            groups.setdefault((entrant(result), result.n_poses), []).append(float(value))
    return {group: mean_std(values) for group, values in groups.items()}


def prepare_root(spec: SweepSpec, root: Path) -> SweepSpec:
    """Record the spec in the sweep dir and return the dir's spec (call with the dir's lock held).

    Running more models of the same sweep into the same dir (`--models`) adds them to the recorded
    grid; any other difference (grid, settings) is refused rather than mixed into one table.
    """
    spec_path = root / SPEC_FILE
    if not spec_path.is_file():
        atomic_write_text(spec_path, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        return spec
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
    if merged != previous:
        atomic_write_text(spec_path, yaml.safe_dump(merged.model_dump(mode="json"), sort_keys=False))
    return merged
