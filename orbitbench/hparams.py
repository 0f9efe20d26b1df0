"""TensorBoard's HPARAMS tab, filled with what a reader compares runs of a sweep by.

Lightning's default registers a placeholder `hp_metric = -1` and only the module's and
DataModule's constructor arguments, so the optimiser, learning rate, epochs and the global seed
are missing and the DataModule's split seed reads as "the" seed. This callback registers the
run's settings under distinct names and the three accuracies (plus any `hparam_metrics()` a
callback offers, such as kernel predictions) as hparam metrics: NaN at fit start, the final values
at the end, so an interrupted run shows up with empty metrics rather than not at all.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

HPARAM_METRICS = ("hparams/train_acc", "hparams/in_test_acc", "hparams/out_test_acc")


def run_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """Flat name -> scalar/str settings: model, optimiser, training, data and both seeds."""
    settings: dict[str, Any] = {}
    for key, value in pl_module.hparams.items():
        if not key.startswith("_"):
            settings[f"model/{key}"] = value
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        settings["optim/name"] = type(optimizer).__name__
        group = optimizer.param_groups[0]
        for key in ("lr", "weight_decay", "momentum", "betas"):
            if key in group:
                settings[f"optim/{key}"] = group[key]
    settings["trainer/max_epochs"] = trainer.max_epochs
    dm = trainer.datamodule
    if dm is not None:
        settings["data/class"] = type(dm).__name__
        for key, value in dm.hparams.items():
            if key.startswith("_"):
                continue
            settings["seed/split" if key == "seed" else f"data/{key}"] = value
        if hasattr(dm, "n_poses"):
            settings["data/n_poses"] = dm.n_poses
    seed = os.environ.get("PL_GLOBAL_SEED")
    settings["seed/global"] = int(seed) if seed is not None else None
    return {k: _scalar(v) for k, v in settings.items()}


def _scalar(value: Any) -> Any:
    """TensorBoard takes numbers, strings and bools; everything else as its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return "None" if value is None else value
    return str(value)


class HParamsSession(L.Callback):
    """Register settings and the final accuracies as one HPARAMS session per fit (TensorBoard only).

    Place it after `RunRecordWriter`: its fit-end values are the record's.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        if trainer.global_step > 0:
            return  # resumed: the session was registered by the interrupted run
        names = list(HPARAM_METRICS)
        for callback in trainer.callbacks:
            names += list(getattr(callback, "hparam_metric_names", lambda: [])())
        logger.log_hyperparams(run_settings(trainer, pl_module), metrics={name: math.nan for name in names})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        values = final_accuracies(trainer)
        for callback in trainer.callbacks:
            values.update(getattr(callback, "hparam_metrics", lambda: {})())
        trainer.logger.log_metrics({k: v for k, v in values.items() if v is not None}, step=trainer.global_step)
        trainer.logger.save()


def final_accuracies(trainer: L.Trainer) -> dict[str, float | None]:
    """The end-of-fit accuracies under their hparam-metric names, read from the run record (so train
    accuracy is the eval-mode one); nothing when the run wrote no record."""
    from orbitbench.record import RunRecordWriter

    writer = next((c for c in trainer.callbacks if isinstance(c, RunRecordWriter)), None)
    if writer is None or writer.record is None:
        return {}
    metrics = writer.record.metrics
    return {
        "hparams/train_acc": metrics.train_acc,
        "hparams/in_test_acc": metrics.in_test_acc,
        "hparams/out_test_acc": metrics.out_test_acc,
    }
