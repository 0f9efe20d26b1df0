"""Cubic-spline rotations: orbitbench's batched torch version against scipy and against bilinear.

The paper's kernel code rotates with `scipy.ndimage.rotate(order=3, reshape=False)`. Here the
embedded digits (--images of them, float64 and float32) are rotated by the --angles angles
360 k / n into one [B, n, 28, 28] orbit tensor by (a) `Rotation(n, "cubic").orbit`, (b) scipy,
one `rotate` call per angle on the whole batch (axes (1, 2)), and (c) `Rotation(n,
"bilinear").orbit`; timed in turns (median of --rounds), after a check that (a) equals (b) to
1e-6. Run: `python benchmarks/bench_rotation.py [--images 2000] [--angles 16] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import scipy.ndimage
import torch

from _timing import round_robin
from orbitbench.data import load_digits
from orbitbench.orbits import Rotation


def scipy_orbit(images: np.ndarray, n: int) -> np.ndarray:
    """[B, 28, 28] -> [B, n, 28, 28] with one scipy call per angle."""
    return np.stack([scipy.ndimage.rotate(images, 360 * k / n, axes=(1, 2), reshape=False, order=3)
                     for k in range(n)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--angles", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    digits = load_digits("mnist5k")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{args.threads}, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}; {args.images} digits x "
          f"{args.angles} angles")
    for dtype in (torch.float64, torch.float32):
        images = digits.images[: args.images].to(dtype) / 255
        array = images.numpy()
        cubic, bilinear = Rotation(args.angles, "cubic"), Rotation(args.angles, "bilinear")
        gap = np.abs(cubic.orbit(images).double().numpy() - scipy_orbit(array, args.angles)).max()
        assert gap <= (1e-6 if dtype == torch.float64 else 1e-5), f"cubic differs from scipy by {gap:.1e}"
        times = round_robin({
            "orbitbench cubic": lambda: cubic.orbit(images),
            "scipy rotate order 3": lambda: scipy_orbit(array, args.angles),
            "orbitbench bilinear": lambda: bilinear.orbit(images),
        }, args.rounds, warmup=True)
        count = args.images * args.angles
        print(f"\n{dtype}: max |cubic - scipy| = {gap:.1e}")
        for name, seconds in times.items():
            print(f"  {name:22s} {seconds:7.3f} s  {count / seconds:12,.0f} images/s"
                  f"  scipy time / this time {times['scipy rotate order 3'] / seconds:5.1f}x")


if __name__ == "__main__":
    main()
