"""What the run and the theory read from a set-up orbit DataModule, and the out-test rule.

`PartialOrbits` is the one protocol the LightningModule, the callbacks and the probe check
(instead of asking `hasattr` for a few names each); `OrbitDataModule` (orbitbench.datamodules)
implements it once `setup()` has run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from orbitbench.data import Digits
from orbitbench.orbits import GroupAction


def out_test_mask(labels: Tensor, pose: Tensor, leave_out_class: int, held_out_poses: Sequence[int]) -> Tensor:
    """bool [B]: the (image, pose) pairs never trained on, the held-out poses of the leave-out class.

    `labels` and `pose` are int64 [B] for the same pairs (the label of each pair's image).
    """
    held = torch.zeros(int(pose.max()) + 1 if pose.numel() else 1, dtype=torch.bool, device=pose.device)
    held[[p for p in held_out_poses if p < held.numel()]] = True
    return (labels == leave_out_class) & held[pose]


@runtime_checkable
class PartialOrbits(Protocol):
    """A set-up dataset of partially observed orbits: the digits, the group, the three splits."""

    group: GroupAction
    digits: Digits
    splits: dict[str, Tensor]  # "train", "in_test", "out_test" -> int64 [M, 2] of (image index, pose)
    held_out_poses: list[int]
    num_classes: int

    @property
    def n_poses(self) -> int: ...

    @property
    def leave_out_class(self) -> int: ...

    def materialize(self, image_index: Tensor, pose: Tensor) -> Tensor: ...  # [B], [B] -> [B, 1, H, W]

    def partner_poses(self, image_index: Tensor, pose: Tensor) -> Tensor: ...  # [B], [B] -> [B]

    def is_out_test(self, image_index: Tensor, pose: Tensor) -> Tensor: ...  # [B], [B] -> bool [B]

    def split_dataloader(self, name: str, sampler: Any = None) -> Any: ...  # index batches (image, pose, label)


@torch.no_grad()
def split_accuracy(net: nn.Module, data: PartialOrbits, split: str, device: torch.device | str) -> float:
    """Accuracy of `net` on one split with the network in eval mode (dropout off, BatchNorm's running
    statistics), batch by batch; the network's train / eval flags are restored. NaN for an empty split.

    The run record's train accuracy: the epoch's running `train/acc` mixes weights of a whole epoch
    and counts dropout, so it cannot be set beside in-test and out-test accuracy.
    """
    was_training = net.training
    net.eval()
    correct = total = 0
    # the network's own floating dtype (float64 under `64-true`; float32 weights under mixed precision)
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
    try:
        for image_index, pose, label in data.split_dataloader(split):
            image_index, pose, label = image_index.to(device), pose.to(device), label.to(device)
            images = data.materialize(image_index, pose).to(dtype)
            correct += int((net(images).argmax(dim=1) == label).sum())
            total += label.numel()
    finally:
        net.train(was_training)
    return correct / total if total else math.nan
