"""Importable test helpers for sweeps (on PYTHONPATH in their subprocesses): a tiny sweep file, a
callback that holds a fit at the start of training, and a DataModule with a group action the
package does not ship."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from orbitbench.datamodules import OrbitDataModule
from orbitbench.orbits import GroupAction

# Two cells of 1 epoch on 5 images per class: seconds each.
TINY = """\
name: tiny
track: test-tiny
datamodule: RotatedMNIST
grid:
  model: [paper_mlp]
  n_angles: [2, 4]
  leave_out_class: [3]
  seed: [0]
fit:
  trainer.max_epochs: 1
  data.source: mnist5k
  data.images_per_class: 5
  data.batch_size: 64
"""


class PauseWhile(L.Callback):
    """Wait at the start of training for as long as `flag` exists (a fit to kill mid-run)."""

    def __init__(self, flag: str) -> None:
        self.flag = Path(flag)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        print("paused", flush=True)
        while self.flag.exists():
            time.sleep(0.1)


class HorizontalFlip(GroupAction):
    """C_2 acting by mirroring the image left-right (pose 1)."""

    kind = "flip"

    def _pose_all(self, images: Tensor, k: int) -> Tensor:
        return torch.flip(images, dims=(-1,)) if k % 2 else images


class FlippedMNIST(OrbitDataModule):
    """Digits and their mirror images: a new group action declared in two places."""

    order_argument = "n_flips"
    order_range = (1, 2)

    def __init__(self, n_flips: int = 2, **kwargs) -> None:
        super().__init__(n_flips, **kwargs)

    def make_group(self, n_poses: int) -> GroupAction:
        return HorizontalFlip(n_poses)
