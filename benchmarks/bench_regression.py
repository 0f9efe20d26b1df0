"""Kernel regression at scale: the twin's Gram matrix against its limit, the float64 matmul `X X^T`.

One run, timed in turns (`_timing.round_robin`), on the same posed MNIST points:

- `matmul`: `X @ X.T` in float64 (the yardstick: the twin's Gram reduces to it plus elementwise work);
- `twin_gram`: `orbitbench.theory.scale_kernels.twin_gram` (in place, blocked);
- `twin_kernel`: today's `orbitbench.theory.twins.twin_kernel`;
- `neural_tangents`: neural-tangents' `kernel_fn(x, None, "ntk")` of the same stax network (jitted once).

Then (`--whole`) one whole prediction at `--m` points (train Gram, in-place Cholesky solve, test Gram)
with its peak memory, and (`--exact`) the exact orbit solve at n_angles 4 against the direct path:
how many training points each reaches in about the same time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_regression.py [--n 4096] [--rounds 3]
        [--whole --m 16000 --threads 2] [--exact --direct-m 2000 --orbit-m 8000] [--source mnist]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time

import numpy as np
import torch

import orbitbench  # noqa: F401  (JAX x64 before neural-tangents)
from orbitbench.datamodules import RotatedMNIST
from orbitbench.models import model_info
from orbitbench.theory.at_scale import twin_kernels
from orbitbench.theory.orbit_solve import orbit_digits, orbit_regression, orbits_for_points
from orbitbench.theory.regression import ScaleOptions, draw_scale, regress, ridge_solve_
from orbitbench.theory.scale_kernels import twin_gram
from orbitbench.theory.twins import twin_kernel

from _timing import round_robin  # benchmarks/ is on sys.path when a script here runs


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def nt_kernel_fn():
    from orbitbench.theory.kernels import neural_tangents_stax

    stax = neural_tangents_stax()
    w = 3**-0.5
    _, _, fn = stax.serial(stax.Dense(512, W_std=w, b_std=math.sqrt(1 / (3 * 784)), parameterization="standard"),
                           stax.Relu(), stax.Dense(128, W_std=w, b_std=math.sqrt(1 / (3 * 512)), parameterization="standard"),
                           stax.Relu(), stax.Dense(1, W_std=w, b_std=None, parameterization="standard"))  # fmt: skip
    import jax

    return jax.jit(lambda x: fn(x, None, "ntk"))


def gram_table(dm: RotatedMNIST, n: int, rounds: int, with_nt: bool) -> None:
    twin = model_info("paper_mlp").kernel_twin()
    pairs = dm.splits["train"][torch.randperm(len(dm.splits["train"]), generator=torch.Generator().manual_seed(0))[:n]]
    images = dm.materialize(pairs[:, 0], pairs[:, 1]).double()
    flat = images.reshape(n, -1).contiguous()
    ours, old = twin_gram(twin, images), twin_kernel(twin, images)
    print(f"twin_gram vs twin_kernel: max relative difference {float((ours - old).abs().max() / old.abs().max()):.1e}")
    methods = {"matmul": lambda: flat @ flat.T, "twin_gram": lambda: twin_gram(twin, images),
               "twin_kernel": lambda: twin_kernel(twin, images)}  # fmt: skip
    if with_nt:
        fn = nt_kernel_fn()
        x = flat.numpy()
        reference = np.asarray(fn(x))
        print(f"twin_gram vs neural-tangents: max relative difference "
              f"{float(np.abs(ours.numpy() - reference).max() / np.abs(reference).max()):.1e}")  # fmt: skip
        methods["neural_tangents"] = lambda: np.asarray(fn(x))
    before = load()
    times = round_robin(methods, rounds)
    flops = 2 * n * n * flat.shape[1]
    print(f"\n{n} points, float64, {torch.get_num_threads()} torch thread(s); {before} -> {load()}")
    print("| method | median s | / matmul | GFLOP/s of X X^T |\n|---|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {seconds / times['matmul']:.2f} | {flops / seconds / 1e9:.1f} |")
    print(f"twin_kernel / twin_gram = {times['twin_kernel'] / times['twin_gram']:.2f}"
          + (f"; neural_tangents / twin_gram = {times['neural_tangents'] / times['twin_gram']:.2f}" if with_nt else ""))


def whole(dm: RotatedMNIST, m: int) -> None:
    twin = model_info("paper_mlp").kernel_twin()
    options = ScaleOptions(points=m, curve=(m,), in_test_points=2000)
    sample = draw_scale(dm, options)
    train, test = sample.train_images(m), sample.test_images
    flat = train.reshape(m, -1).double()
    before = load()
    start = time.perf_counter()
    flat @ flat.T
    matmul = time.perf_counter() - start
    marks = [time.perf_counter()]
    k = twin_gram(twin, train)
    marks.append(time.perf_counter())
    k_test = twin_gram(twin, test, train)
    marks.append(time.perf_counter())
    outputs = k_test @ ridge_solve_(k, sample.train_targets(m), options.reg)
    marks.append(time.perf_counter())
    del outputs, k, k_test
    train_s, test_s, solve_s = (b - a for a, b in zip(marks, marks[1:]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nwhole prediction at m = {m} ({len(test)} test points), {torch.get_num_threads()} thread(s): "
          f"{marks[-1] - marks[0]:.1f} s = train Gram {train_s:.1f} + test Gram {test_s:.1f} + Cholesky solve "
          f"{solve_s:.1f}; X X^T alone {matmul:.1f} s (train Gram / X X^T = {train_s / matmul:.2f}); peak RSS "
          f"{peak:.2f} GB (K itself {m * m * 8 / 2**30:.2f} GB); {before} -> {load()}")  # fmt: skip


def exact(direct_m: int, orbit_ms: list[int], source: str) -> None:
    """n_angles 4: the direct path at `direct_m` and the orbit path at each of `orbit_ms` training
    points (the orbit path alone scores the same points), timed in turns; both predictions compared."""
    dm = RotatedMNIST(n_angles=4, leave_out_class=5, source=source)
    dm.setup("fit")
    twin = model_info("paper_mlp").kernel_twin()
    options = ScaleOptions(points=direct_m, curve=(direct_m,), in_test_points=2000, out_test_points=2000)
    sample = draw_scale(dm, options)
    kernels, gram = twin_kernels(twin)
    digits = orbit_digits(dm, 0)
    methods = {f"direct {direct_m}": lambda: regress(kernels, sample, [direct_m], options.reg)}
    for m in orbit_ms:
        orbits = orbits_for_points(dm, digits, m)
        methods[f"orbit {m} ({orbits} orbits)"] = (
            lambda orbits=orbits: orbit_regression(gram, dm, digits, [orbits], sample.test_images, options.reg))
    before = load()
    times = round_robin(methods, 1)
    print(f"\nn_angles 4, {len(sample.test_images)} test points, {torch.get_num_threads()} thread(s); {before} -> {load()}")
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--source", default="mnist")
    parser.add_argument("--no-nt", action="store_true")
    parser.add_argument("--whole", action="store_true")
    parser.add_argument("--m", type=int, default=16000)
    parser.add_argument("--exact", action="store_true")
    parser.add_argument("--direct-m", type=int, default=2000)
    parser.add_argument("--orbit-m", default="8000", help="comma-separated training-point counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {load()}")
    dm = RotatedMNIST(n_angles=8, leave_out_class=5, source=args.source)
    dm.setup("fit")
    if args.n:
        gram_table(dm, args.n, args.rounds, not args.no_nt)
    if args.exact:
        exact(args.direct_m, [int(m) for m in args.orbit_m.split(",")], args.source)
    if args.whole:
        whole(dm, args.m)


if __name__ == "__main__":
    main()
