"""Throughput of orbit generation: orbitbench.orbits vs scipy.ndimage.rotate vs torchvision rotate.

Same images (the 5,000 embedded digits, unit-normed, float32) and the same 16 angles for all
three, side by side in one run. Baselines:
- scipy: `ndimage.rotate(batch, angle, axes=(1, 2), reshape=False, order=3)`, one call per angle
  on the whole batch (the paper's kernel scripts);
- torchvision: `transforms.functional.rotate` on the batch, one call per angle (the paper's
  training script, nearest interpolation; bilinear timed too).
Run: `python benchmarks/bench_orbits.py [--angles 16] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from scipy import ndimage
from torchvision.transforms import InterpolationMode

from orbitbench.data import load_digits
from orbitbench.orbits import Rotation, normalize
from orbitbench.datamodules import RotatedMNIST


def best_time(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--angles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    digits = load_digits("mnist5k")
    images = normalize(digits.images.float() / 255, "unit_norm")  # [5000, 28, 28]
    n = args.angles
    degrees = [360.0 * k / n for k in range(n)]
    rotated = images.shape[0] * n

    rows: list[tuple[str, float]] = []
    for interpolation in ("bilinear", "nearest"):
        group = Rotation(n, interpolation)
        group.orbit(images[:2])  # build the cached tables outside the timing
        rows.append((f"orbitbench Rotation({n}, {interpolation}).orbit", best_time(lambda: group.orbit(images), args.repeats)))
    for name, mode in (("nearest", InterpolationMode.NEAREST), ("bilinear", InterpolationMode.BILINEAR)):
        batch = images[:, None]
        rows.append((f"torchvision rotate ({name}), per angle", best_time(
            lambda: [TF.rotate(batch, angle, interpolation=mode) for angle in degrees], args.repeats)))
    array = images.numpy()
    rows.append(("scipy.ndimage.rotate (order 3), per angle", best_time(
        lambda: [ndimage.rotate(array, angle, axes=(1, 2), reshape=False, order=3) for angle in degrees], 1)))

    dm = RotatedMNIST(n_angles=n, source="mnist5k", batch_size=2048)
    dm.setup("fit")
    def one_epoch() -> None:
        for batch in dm.train_dataloader():
            dm.on_after_batch_transfer(batch, 0)
    epoch_samples = dm.splits["train"].shape[0]
    epoch_time = best_time(one_epoch, args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{rotated:,} rotations of 28x28 digits ({images.shape[0]} images x {n} angles)\n")
    ours = rows[0][1]
    print(f"{'method':48s} {'seconds':>9s} {'images/s':>12s} {'time vs ours':>13s}")
    for name, seconds in rows:
        print(f"{name:48s} {seconds:9.3f} {rotated / seconds:12,.0f} {seconds / ours:12.1f}x")
    print(f"\nRotatedMNIST train epoch, indices -> posed batches (batch 2048): {epoch_samples:,} samples in "
          f"{epoch_time:.3f} s = {epoch_samples / epoch_time:,.0f} samples/s (paper MLP trains at ~23,000/s here)")


if __name__ == "__main__":
    main()
