"""`orbitbench predict`: per-sample predictions of a trained checkpoint, and what the held-out
upright digits are taken for.

The out-test accuracy says *how often* the network fails on the leave-out class's held-out pose;
the rows say *which* digits fail and as what, which is where a reader starts looking for a reason.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from orbitbench.io import atomic_write_bytes, atomic_write_text
from orbitbench.run.callbacks.record_writer import run_log_dir

PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FIGURE = "confusion.png"
COLUMNS = ("image_index", "pose", "label", "predicted", "margin")


def prediction_rows(logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predicted class and the true label's margin (its logit minus the best other one; > 0 iff right)."""
    others = logits.clone()
    others.scatter_(1, label[:, None], float("-inf"))
    true_logit = logits.gather(1, label[:, None]).squeeze(1)
    return {"predicted": logits.argmax(dim=1), "margin": true_logit - others.amax(dim=1)}


class PredictionWriter(BasePredictionWriter):
    """Write `predictions.csv` and `confusion.png` into the run's log dir at the end of `predict`."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.written: list[Path] = []

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        rows = {k: torch.cat([p[k] for p in predictions]).cpu() for k in COLUMNS}
        folder = Path(run_log_dir(trainer) or ".")
        folder.mkdir(parents=True, exist_ok=True)
        table = folder / PREDICTIONS_FILE
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for values in zip(*(rows[k].tolist() for k in COLUMNS)):
            writer.writerow(f"{v:.6g}" if isinstance(v, float) else v for v in values)
        atomic_write_text(table, text.getvalue())
        dm = trainer.datamodule
        split = getattr(dm, "predict_split", "out_test")
        figure = confusion_figure(rows["label"], rows["predicted"], getattr(dm, "num_classes", 10), split)
        image = folder / CONFUSION_FIGURE
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=120)
        atomic_write_bytes(image, png.getvalue())
        self.written = [table, image]


def confusion_figure(label: torch.Tensor, predicted: torch.Tensor, num_classes: int, split: str) -> Any:
    """Rows = true class, columns = predicted class, cells = fraction of the row's samples."""
    from matplotlib.figure import Figure

    counts = torch.bincount(label * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)
    present = counts.sum(dim=1) > 0
    shown = counts[present].double()
    fractions = shown / shown.sum(dim=1, keepdim=True)  # [classes present, num_classes]
    figure = Figure(figsize=(6.0, 1.2 + 0.45 * int(present.sum())), layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(fractions.numpy(), vmin=0, vmax=1, cmap="Blues", aspect="auto")
    rows = torch.nonzero(present).squeeze(1).tolist()
    for i, row in enumerate(rows):
        for j in range(num_classes):
            if counts[row, j]:
                axes.text(j, i, f"{fractions[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if fractions[i, j] > 0.5 else "black")  # fmt: skip
    axes.set(xticks=range(num_classes), yticks=range(len(rows)), yticklabels=rows,
             xlabel="predicted class", ylabel="true class", title=f"{split}: what the network predicts ({int(counts.sum())} samples)")  # fmt: skip
    return figure
