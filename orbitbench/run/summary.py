"""The few human lines `orbitbench fit` prints at the end: what ran, the accuracies, where things are."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from orbitbench.entrants import entrant_id
from orbitbench.run.callbacks.record_writer import RunRecordWriter, describe_run, run_log_dir
from orbitbench.run.finding import finding_lines
from orbitbench.run.record import RECORD_FILE, load_record


def fit_summary(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """A few human lines: what ran, the three accuracies, where logs and checkpoint are.

    Read from the run record where there is one: under `ddp_spawn` the workers wrote it and this
    process's Trainer never saw the epochs.
    """
    log_dir = run_log_dir(trainer)
    written = next((c.record for c in trainer.callbacks if isinstance(c, RunRecordWriter) and c.record), None)
    if written is None and log_dir and Path(log_dir, RECORD_FILE).is_file():
        written = load_record(log_dir)
    if written is not None:
        model, data, epochs = written.model, written.data, written.epochs
        accuracies = (written.metrics.train_acc, written.metrics.in_test_acc, written.metrics.out_test_acc)
        checkpoint = written.last_checkpoint
        predictions, digits = written.predictions, written.data.digits
    else:
        described = describe_run(trainer, pl_module)
        model, data, epochs, checkpoint = described["model"], described["data"], trainer.current_epoch, described["last_checkpoint"]
        metrics = trainer.callback_metrics
        accuracies = (None, *(float(metrics[k]) if k in metrics else None for k in ("val/in_test_acc", "val/out_test_acc")))
        predictions, digits = None, None

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    where = ", ".join(f"{k}={v}" for k, v in (("n_poses", data.n_poses), ("leave_out_class", data.hparams.get("leave_out_class"))) if v is not None)
    lines = [
        f"orbitbench fit: {entrant_id(model.backbone, model.method)} on {data.datamodule}({where}), "
        f"{epochs} epoch{'' if epochs == 1 else 's'}, {model.n_params:,} parameters",
        f"  accuracy     train {fmt(accuracies[0])} | in-test {fmt(accuracies[1])} | out-test {fmt(accuracies[2])}",
        "               (train: eval mode on the training split; in-test: new digits in the seen poses; out-test: the held-out pose)",
        *finding_lines(accuracies[1], accuracies[2], accuracies[0], data.hparams.get("leave_out_class"), digits, predictions),
    ]
    if log_dir:
        kinds = ", ".join(_logger_output(logger) for logger in trainer.loggers)
        outputs = ", ".join(([RECORD_FILE] if written is not None else []) + ([kinds] if kinds else []))
        lines.append(f"  logs         {log_dir}" + (f" ({outputs})" if outputs else ""))
        if written is None:
            lines.append(f"  no {RECORD_FILE}: validation never ran (it holds the validated accuracies)")
    if checkpoint:
        lines.append(f"  checkpoint   {checkpoint}")
    lines += [c.summary_line() for c in trainer.callbacks if callable(getattr(c, "summary_line", None))]
    board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None:
        lines.append(f"  view with    tensorboard --logdir {board.save_dir}")
    return "\n".join(lines)


def _logger_output(logger) -> str:
    """What a logger leaves in the run folder, in words."""
    if isinstance(logger, TensorBoardLogger):
        return "TensorBoard events"
    if isinstance(logger, CSVLogger):
        return "metrics.csv"
    return type(logger).__name__
