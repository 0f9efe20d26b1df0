"""Progress for a log file: plain lines instead of a redrawn progress bar.

A TQDM bar written to a file (`orbitbench fit ... > log`, a SLURM job, a sweep cell) leaves every
redraw behind; `PlainProgress` is a Lightning `ProgressBar` that prints what the bar would show, once
an epoch, and within a long epoch a short line every `interval_s` seconds (a full-MNIST epoch takes
tens of seconds on two cores: without them the log is silent until it ends). The CLI uses it in
place of the TQDM bar whenever stdout is not a terminal.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


class PlainProgress(ProgressBar):
    """`epoch 3/10  step 84  train/loss 0.412  ...  val/out_test_acc 0.219  (4.1 s)`, on global rank 0."""

    def __init__(self, interval_s: float = 5.0) -> None:
        super().__init__()
        self._enabled = True
        self.interval_s = interval_s
        self._epoch_start = time.perf_counter()
        self._last_line = self._epoch_start

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_line = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        """`  epoch 3/10  batch 120/413  train/loss 0.41  (12 s, ~30 s left in the epoch)`, every `interval_s`."""
        now = time.perf_counter()
        if not self._enabled or not trainer.is_global_zero or now - self._last_line < self.interval_s:
            return
        self._last_line = now
        done, total = batch_idx + 1, self.total_train_batches
        elapsed = now - self._epoch_start
        left = (f", ~{elapsed * (total - done) / done:.0f} s left in the epoch"
                if isinstance(total, (int, float)) and total != float("inf") and done else "")
        # This batch's loss from the step's own output: the module logs train/loss only on the steps
        # the logger writes, so the bar's metrics would often have none to show.
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        shown = f"  train/loss {float(loss):.3f}" if loss is not None else ""
        of = f"/{total:.0f}" if isinstance(total, (int, float)) and total != float("inf") else ""
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        print(f"  epoch {trainer.current_epoch + 1}{epochs}  batch {done}{of}{shown}  ({elapsed:.0f} s{left})",
              file=sys.stdout, flush=True)  # fmt: skip

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's validation loop: its accuracies are among the bar's metrics.
        if not self._enabled or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in sorted(self.get_metrics(trainer, pl_module).items()) if k != "v_num"}
        shown = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._epoch_start
        print(f"epoch {trainer.current_epoch + 1}{total}  step {trainer.global_step}  {shown}  ({seconds:.1f} s)",
              file=sys.stdout, flush=True)  # fmt: skip
