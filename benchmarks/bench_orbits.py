"""Throughput of orbit generation: orbitbench.orbits vs scipy.ndimage.rotate vs torchvision rotate.

Same images (the 5,000 embedded digits, unit-normed, float32) and the same 16 angles for all
three, side by side in one run. Baselines:
- scipy: `ndimage.rotate(batch, angle, axes=(1, 2), reshape=False, order=3)`, one call per angle
  on the whole batch (the paper's kernel scripts);
- torchvision: `transforms.functional.rotate` on the batch, one call per angle (the paper's
  training script, nearest interpolation; bilinear timed too).
The orbit is one [B, n, H, W] tensor; torchvision's per-angle calls give n separate tensors, so
"+ stack" is the like-for-like baseline (a 250 MB result is a fresh allocation either way, whose
page faults are part of the cost). Methods are timed in round-robin turns, medians reported.
Run: `python benchmarks/bench_orbits.py [--angles 16] [--repeats 7]`.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch
import torchvision.transforms.functional as TF
from scipy import ndimage
from torchvision.transforms import InterpolationMode

from orbitbench.data import load_digits
from orbitbench.orbits import Rotation, normalize
from orbitbench.datamodules import RotatedMNIST

from _timing import round_robin  # benchmarks/ is on sys.path when a script here runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--angles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    digits = load_digits("mnist5k")
    images = normalize(digits.images.float() / 255, "unit_norm")  # [5000, 28, 28]
    n = args.angles
    degrees = [360.0 * k / n for k in range(n)]
    rotated = images.shape[0] * n

    batch, array = images[:, None], images.numpy()
    groups = {interpolation: Rotation(n, interpolation) for interpolation in ("bilinear", "nearest")}
    for group in groups.values():
        group.orbit(images[:2])  # build the cached tables outside the timing
    modes = {"bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}
    methods: dict[str, Callable[[], object]] = {}
    for name in ("bilinear", "nearest"):
        methods[f"orbitbench Rotation({n}, {name}).orbit -> [B, n, H, W]"] = lambda g=groups[name]: g.orbit(images)
        methods[f"torchvision rotate ({name}), per angle"] = lambda m=modes[name]: [
            TF.rotate(batch, angle, interpolation=m) for angle in degrees]
        methods[f"torchvision rotate ({name}), per angle + stack"] = lambda m=modes[name]: torch.stack(
            [TF.rotate(batch, angle, interpolation=m) for angle in degrees], dim=1)
    medians = round_robin(methods, args.repeats)
    scipy_time = min(
        round_robin({"scipy": lambda: [ndimage.rotate(array, a, axes=(1, 2), reshape=False, order=3) for a in degrees]}, 1)["scipy"]
        for _ in range(2)
    )
    rows = [*medians.items(), ("scipy.ndimage.rotate (order 3), per angle", scipy_time)]

    dm = RotatedMNIST(n_angles=n, source="mnist5k", batch_size=2048)
    dm.setup("fit")
    def one_epoch() -> None:
        for batch in dm.train_dataloader():
            dm.on_after_batch_transfer(batch, 0)
    epoch_samples = dm.splits["train"].shape[0]
    epoch_time = round_robin({"epoch": one_epoch}, args.repeats)["epoch"]

    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{rotated:,} rotations of 28x28 digits ({images.shape[0]} images x {n} angles)\n")
    print(f"median of {args.repeats} round-robin turns (scipy: best of 2)\n")
    print(f"{'method':58s} {'seconds':>9s} {'images/s':>12s} {'scipy time / this':>18s}")
    for name, seconds in rows:
        print(f"{name:58s} {seconds:9.3f} {rotated / seconds:12,.0f} {scipy_time / seconds:17.1f}x")
    print(f"\nRotatedMNIST train epoch, indices -> posed batches (batch 2048): {epoch_samples:,} samples in "
          f"{epoch_time:.3f} s = {epoch_samples / epoch_time:,.0f} samples/s (paper MLP trains at ~23,000/s here)")


if __name__ == "__main__":
    main()
