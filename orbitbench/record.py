"""The run record: `record.json`, the one contract between a run and everything that reads it.

Every `orbitbench fit | validate | test` writes it atomically into the run's log dir when the
stage ends (`RunRecordWriter`, always on). The sweep, the leaderboard and any analysis read it
with `load_record`; nothing reads TensorBoard files or guesses metric names. Each metric has
exactly one name:

    metrics.train_acc               accuracy on the training split, network in eval mode, measured
                                    at the end of fit (None for validate / test); the running
                                    train-mode `train/acc` stays in TensorBoard only
    metrics.in_test_acc, out_test_acc, in_test_loss, out_test_loss   from the last val (fit,
                                    validate) or test loop
    metrics.in_test_acc_per_pose, out_test_acc_per_pose   [n_poses], null = pose not in the split
    callbacks[<class name>]         `record_summary()` of every callback that has one
    seeds.seed_everything           the global seed (`--seed_everything`)
    seeds.data_split_seed           the DataModule's split / subsampling seed (`--data.seed`)
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_text, git_commit, one_line_validation_error, read_text_file, versions

RECORD_FILE = "record.json"
Accuracy = float
PerPose = list[float | None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    backbone: str
    backbone_kwargs: dict[str, Any] | None = None
    method: str = "supervised"  # the training method (orbitbench.methods); records before methods: supervised
    method_kwargs: dict[str, Any] | None = None
    num_classes: int | None = None
    n_params: int = Field(ge=1)


class DataSettings(_Strict):
    datamodule: str  # RotatedMNIST (exported by orbitbench.datamodules) or the import path package.module.Class
    group: str | None = None  # the group action's kind, e.g. rotation
    order_argument: str | None = None  # e.g. n_angles
    n_poses: int | None = Field(default=None, ge=1)
    hparams: dict[str, Any] = {}  # every DataModule constructor argument but the order
    digits: str | None = None  # the source the digits came from (`auto` resolved: mnist or mnist5k); older records: None
    n_images: int | None = None  # base images before any group action


class Seeds(_Strict):
    seed_everything: int | None
    data_split_seed: int | None


class Metrics(_Strict):
    train_acc: Accuracy | None = Field(default=None, ge=0, le=1)
    in_test_acc: Accuracy = Field(ge=0, le=1)
    out_test_acc: Accuracy = Field(ge=0, le=1)
    in_test_loss: float | None = None
    out_test_loss: float | None = None
    in_test_acc_per_pose: PerPose = []
    out_test_acc_per_pose: PerPose = []


class RunRecord(_Strict):
    """What one run trained on what, what it measured, and what produced it."""

    schema_version: Literal[1] = 1
    stage: Literal["fit", "validate", "test"]
    model: ModelSettings
    data: DataSettings
    seeds: Seeds
    metrics: Metrics
    callbacks: dict[str, dict[str, Any]] = {}
    epochs: int = Field(ge=0)
    global_step: int = Field(ge=0)
    log_dir: str | None
    last_checkpoint: str | None
    wall_time_s: float = Field(ge=0)
    versions: dict[str, str]
    git_commit: str | None
    finished: datetime


def load_record(path: str | Path) -> RunRecord:
    """Read a run's `record.json` (or the run dir holding it); one OrbitbenchError line if unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    if not path.is_file():
        raise OrbitbenchError(f"{path}: no run record (the run did not finish, or this is not a run's log dir)")
    try:
        record = RunRecord.model_validate_json(read_text_file(path, "run record"))
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(str(path), error)) from None
    from orbitbench.trust import check_run_settings

    check_run_settings(record.model, record.data, str(path))  # a record is data: the classes it names are checked
    return record


def _plain(value: Any) -> Any:
    """Tensor / numpy scalars as Python numbers (callback summaries are JSON)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value


def _per_pose(values: list[float] | None) -> PerPose:
    return [None if v is None or math.isnan(v) else float(v) for v in values or []]


def run_log_dir(trainer: L.Trainer) -> str | None:
    """The run's folder, `trainer.log_dir` without its collective.

    Under DDP `Trainer.log_dir` is a broadcast every rank must reach the same number of times;
    code that runs on rank 0 only (writing the record, the summary, removing a failed run) would
    wait forever for the other ranks. `RunRecordWriter.setup`, which every rank runs, asks once;
    before that (or without the writer) nothing is distributed yet and the Trainer answers locally.
    """
    writer = next((c for c in trainer.callbacks if isinstance(c, RunRecordWriter)), None)
    if writer is not None and writer.log_dir is not None:
        return writer.log_dir
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        logger = trainer.loggers[0] if trainer.loggers else None
        if logger is None:
            return trainer.default_root_dir
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # the Trainer's own rule

        return logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return trainer.log_dir


class RunRecordWriter(Callback):
    """Writes `record.json` at the end of fit / validate / test (global rank 0; all ranks keep `.record`)."""

    def __init__(self) -> None:
        self.record: RunRecord | None = None
        self.log_dir: str | None = None
        self._start = time.perf_counter()
        self._train_acc: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._start, self._train_acc, self.log_dir = time.perf_counter(), None, None
        self.log_dir = trainer.log_dir  # every rank, once: the one collective call (see run_log_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not at fit end: the model is still on its device, before the strategy's teardown.
        measure = getattr(pl_module, "split_accuracy", None)
        if callable(measure) and hasattr(trainer.datamodule, "split_dataloader"):
            self._train_acc = measure("train")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "fit", "val")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate", "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test", "test")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, prefix: str) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if f"{prefix}/in_test_acc" not in logged:  # e.g. fit with validation switched off
            return
        pose = getattr(pl_module, "pose_accuracy", {})
        self.record = RunRecord(
            stage=stage,
            **describe_run(trainer, pl_module),
            metrics=Metrics(
                train_acc=self._train_acc if stage == "fit" else None,
                in_test_acc=logged[f"{prefix}/in_test_acc"],
                out_test_acc=logged[f"{prefix}/out_test_acc"],
                in_test_loss=logged.get(f"{prefix}/in_test_loss"),
                out_test_loss=logged.get(f"{prefix}/out_test_loss"),
                in_test_acc_per_pose=_per_pose(pose.get("in_test")),
                out_test_acc_per_pose=_per_pose(pose.get("out_test")),
            ),
            callbacks={
                type(c).__name__: {k: _plain(v) for k, v in c.record_summary().items()}
                for c in trainer.callbacks
                if callable(getattr(c, "record_summary", None))
            },
            wall_time_s=round(time.perf_counter() - self._start, 3),
            versions=versions(),
            git_commit=git_commit(),
            finished=datetime.now(timezone.utc).replace(microsecond=0),
        )
        log_dir = run_log_dir(trainer)
        if trainer.is_global_zero and log_dir is not None:
            atomic_write_text(Path(log_dir) / RECORD_FILE, self.record.model_dump_json(indent=2) + "\n")


def describe_run(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The settings part of a record (model, data, seeds, progress, where): also the fit summary's header."""
    from orbitbench.datamodules import datamodule_name

    dm = trainer.datamodule
    hparams = {k: v for k, v in getattr(dm, "hparams", {}).items() if not k.startswith("_")}
    group = getattr(dm, "group", None)
    seed = os.environ.get("PL_GLOBAL_SEED")
    checkpoint = trainer.checkpoint_callback
    return {
        "model": ModelSettings(
            backbone=str(pl_module.hparams.get("backbone", type(pl_module).__name__)),
            backbone_kwargs=pl_module.hparams.get("backbone_kwargs"),
            method=str(pl_module.hparams.get("method", "supervised")),
            method_kwargs=pl_module.hparams.get("method_kwargs"),
            num_classes=pl_module.hparams.get("num_classes"),
            n_params=getattr(pl_module, "n_params", None) or sum(p.numel() for p in pl_module.parameters()),
        ),
        "data": DataSettings(
            datamodule=datamodule_name(type(dm)),
            group=getattr(group, "kind", None),
            order_argument=getattr(dm, "order_argument", None) or None,
            n_poses=getattr(dm, "n_poses", None),
            hparams=hparams,
            digits=getattr(getattr(dm, "digits", None), "source", None),
            n_images=len(dm.digits) if hasattr(dm, "digits") else None,
        ),
        "seeds": Seeds(seed_everything=int(seed) if seed is not None else None, data_split_seed=hparams.get("seed")),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "log_dir": run_log_dir(trainer),
        "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
    }
