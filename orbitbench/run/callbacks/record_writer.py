"""`RunRecordWriter`: writes the run record (`orbitbench.run.record`) when fit, validate or test ends."""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from orbitbench.io import atomic_write_text

from orbitbench.provenance import git_commit, versions
from orbitbench.run.record import RECORD_FILE, DataSettings, KernelPredictions, Metrics, ModelSettings, PerPose, RunRecord, Seeds


def _python_scalar(value: Any) -> Any:
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
    """Writes `record.json` at the end of fit / validate / test (global rank 0; all ranks keep `.record`).

    A callback with `kernel_predictions() -> KernelPredictions | None` fills the record's `predictions`;
    one with `record_summary() -> dict` gets `callbacks[<its class name>]`.
    """

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
            predictions=next((p for c in trainer.callbacks
                              if callable(getattr(c, "kernel_predictions", None)) and (p := c.kernel_predictions())), None),
            callbacks={
                type(c).__name__: {k: _python_scalar(v) for k, v in c.record_summary().items()}
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
