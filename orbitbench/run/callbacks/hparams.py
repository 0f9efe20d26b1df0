"""TensorBoard's HPARAMS tab and custom scalar charts, filled with what a reader compares runs by.

Lightning's `log_hyperparams` registers a placeholder `hp_metric` and marks no setting as varying,
so the HPARAMS table opens on five alphabetically first constants (batch size, DataModule class,
...). `HParamsSession` writes the summaries itself (TensorBoard's `hparams.summary`):

- every setting under a distinct name (`model/*`, `optim/*`, `trainer/max_epochs`, `data/*`,
  `seed/global`, `seed/split`), the ones a sweep varies (`VARYING`) marked as such, so they are the
  table's default columns; each trial is named `<model> <group> C<n> leave-out <c> seed <s>`;
- as metrics, the run's own scalar series (`val/in_test_acc`, `val/out_test_acc`, the eval-mode
  `train/eval_acc` at fit end, and every callback's `hparam_metric_names()`, e.g. predicted
  out-test accuracies): the table shows their last values, and no copy of them clutters the
  Scalars tab;
- the validation accuracies once more under `accuracy/` (`accuracy/in_test`, `accuracy/out_test`,
  `accuracy/train`): TensorBoard's Scalars tab sorts groups by name, so without them it opens on
  Lightning's `epoch` and `model/n_params`, the curves a reader wants folded away below `train/`
  and `ntk/`; the `val/*` series (what the run record reads) stay as they are;
- a custom-scalars layout (the CUSTOM SCALARS tab): train / in-test / out-test accuracy and loss
  overlaid, plus every callback's `scalar_layout()` (the kernel predictors, one category each).
"""

from __future__ import annotations

import os
import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from orbitbench.entrants import entrant_id

# Copies of the validated accuracies under a group that sorts first in the Scalars tab.
FIRST_GROUP = {"val/in_test_acc": "accuracy/in_test", "val/out_test_acc": "accuracy/out_test", "train/acc": "accuracy/train"}
TRAIN_EVAL_ACC = "train/eval_acc"  # eval-mode accuracy on the whole training split, at fit end (= the record's)
HPARAM_METRICS = {TRAIN_EVAL_ACC: "train acc (eval mode)", "val/in_test_acc": "in-test acc", "val/out_test_acc": "out-test acc"}
# The settings a sweep varies: the HPARAMS table's default columns (it shows the first five, by name).
VARYING = ("data/group", "data/leave_out_class", "data/n_poses", "model/method", "seed/global", "seed/split")
ACCURACY_LAYOUT = {
    "accuracy": {
        "train / in-test / out-test accuracy": ["Multiline", [r"^train/acc$", r"^val/in_test_acc$", r"^val/out_test_acc$"]],
        "train / in-test / out-test loss": ["Multiline", [r"^train/loss$", r"^val/in_test_loss$", r"^val/out_test_loss$"]],
    }
}


def run_settings(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """Flat name -> scalar/str settings: model, optimiser, training, data and both seeds."""
    settings: dict[str, Any] = {}
    for key, value in pl_module.hparams.items():
        if not key.startswith("_"):
            settings[f"model/{key}"] = value
    settings.setdefault("model/method", "supervised")
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
        if getattr(dm, "n_poses", None) is not None:  # the group order is known before setup
            settings["data/n_poses"] = dm.n_poses
        if getattr(dm, "group", None) is not None:
            settings["data/group"] = getattr(dm.group, "kind", str(dm.group))
    seed = os.environ.get("PL_GLOBAL_SEED")
    settings["seed/global"] = int(seed) if seed is not None else None
    return {k: _scalar(v) for k, v in settings.items()}


def trial_name(settings: dict[str, Any]) -> str:
    """`paper_mlp rotation C8 leave-out 5 seed 125/124`: the HPARAMS table's trial column."""
    model = entrant_id(str(settings.get("model/backbone", "model")), settings.get("model/method"))
    return (f"{model} {settings.get('data/group', '')} C{settings.get('data/n_poses', '?')} "
            f"leave-out {settings.get('data/leave_out_class', '?')} "
            f"seed {settings.get('seed/global')}/{settings.get('seed/split')}").replace("  ", " ")  # fmt: skip


def _scalar(value: Any) -> Any:
    """TensorBoard takes numbers, strings and bools; everything else as its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return "None" if value is None else value
    return str(value)


def _summary(tag: str, **plugin_data):
    """A Summary holding HParamsPluginData (what `tensorboard.plugins.hparams.summary` builds, minus
    its TensorFlow import)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(**plugin_data)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def _hooks(trainer: L.Trainer, name: str) -> list:
    return [getattr(c, name) for c in trainer.callbacks if callable(getattr(c, name, None))]


class HParamsSession(L.Callback):
    """One HPARAMS session per fit and the custom-scalars layout (TensorBoard only, global rank 0).

    Place it after `RunRecordWriter`: the eval-mode train accuracy it logs at fit end is the record's.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero or trainer.global_step > 0:
            return  # resumed: the session was registered by the interrupted run
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from torch.utils.tensorboard.summary import custom_scalars

        settings = run_settings(trainer, pl_module)
        logger.log_hyperparams(settings)  # hparams.yaml beside the events (no summaries: no metrics given)
        metrics = dict(HPARAM_METRICS)
        for names in _hooks(trainer, "hparam_metric_names"):
            metrics.update({name: name for name in names()})
        kinds = {bool: api_pb2.DATA_TYPE_BOOL, int: api_pb2.DATA_TYPE_FLOAT64, float: api_pb2.DATA_TYPE_FLOAT64}
        infos = [api_pb2.HParamInfo(name=k, type=kinds.get(type(v), api_pb2.DATA_TYPE_STRING), differs=k in VARYING)
                 for k, v in settings.items()]  # fmt: skip
        metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=shown)
                        for tag, shown in metrics.items()]  # fmt: skip
        layout = dict(ACCURACY_LAYOUT)
        for extra in _hooks(trainer, "scalar_layout"):
            layout.update(extra())
        start = plugin_data_pb2.SessionStartInfo(group_name=trial_name(settings), start_time_secs=time.time())
        for key, value in settings.items():
            field = "bool_value" if isinstance(value, bool) else "number_value" if isinstance(value, (int, float)) else "string_value"
            setattr(start.hparams[key], field, value)
        writer = logger.experiment._get_file_writer()
        writer.add_summary(_summary(metadata.EXPERIMENT_TAG, experiment=api_pb2.Experiment(
            hparam_infos=infos, metric_infos=metric_infos, time_created_secs=time.time())))
        writer.add_summary(_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
        writer.add_summary(custom_scalars(layout))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the epoch's metrics are reduced: the accuracies again under `accuracy/`."""
        if not isinstance(trainer.logger, TensorBoardLogger) or not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        writer = trainer.logger.experiment
        # The step Lightning logged `val/*` at (its logger step lags global_step by one at an epoch's end).
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        for source, tag in FIRST_GROUP.items():
            if source in metrics:
                writer.add_scalar(tag, float(metrics[source]), global_step=step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        train_acc = final_train_accuracy(trainer)
        if train_acc is not None:
            trainer.logger.log_metrics({TRAIN_EVAL_ACC: train_acc}, step=trainer.global_step)
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        trainer.logger.experiment._get_file_writer().add_summary(_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
        trainer.logger.save()


def final_train_accuracy(trainer: L.Trainer) -> float | None:
    """The run record's eval-mode train accuracy (None when the run wrote no record)."""
    from orbitbench.run.callbacks.record_writer import RunRecordWriter

    writer = next((c for c in trainer.callbacks if isinstance(c, RunRecordWriter)), None)
    return None if writer is None or writer.record is None else writer.record.metrics.train_acc
