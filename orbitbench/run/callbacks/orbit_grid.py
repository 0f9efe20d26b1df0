"""`TrainOrbitGrid`: a TensorBoard image of the training orbits, the out-test cells dimmed."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from orbitbench.datamodules import OrbitDataModule

MAX_GRID_POSES = 16


class TrainOrbitGrid(Callback):
    """Log a grid of sample orbits of the training data: one image per class (rows) x poses (columns).

    Out-test cells (the held-out poses of the leave-out class, never trained on) are dimmed.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        experiment = getattr(trainer.logger, "experiment", None)
        if not isinstance(dm, OrbitDataModule) or not hasattr(experiment, "add_image"):
            return
        from torchvision.utils import make_grid

        train_images = dm.splits["train"][:, 0]
        labels = dm.digits.labels
        rows = [int(train_images[labels[train_images] == c][0]) for c in range(dm.num_classes)
                if (labels[train_images] == c).any()]
        poses = torch.linspace(0, dm.n_poses - 1, min(dm.n_poses, MAX_GRID_POSES)).round().long().unique()
        image_index = torch.tensor(rows).repeat_interleave(len(poses))  # [rows*cols], row-major
        pose = poses.repeat(len(rows))
        cells = dm.materialize(image_index, pose).cpu()  # [rows*cols, 1, 28, 28]
        cells = cells / cells.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        held = dm.is_out_test(image_index, pose)
        cells[held] *= 0.3
        grid = make_grid(cells, nrow=len(poses), padding=1, pad_value=0.5)
        experiment.add_image("data/train_orbits", grid, 0)
