"""Throughput of the `theory pairs` pipeline and cost of the CNN kernels per orbit pair.

1. Pairs/s of the whole MLP pipeline (orbits + NTK + circularize + Eq. 7 + symmetrized exact
   regression) as `orbitbench theory pairs` runs it (batched over pairs), against a straightforward
   per-pair numpy/scipy loop doing the same work: the same orbit tensors (posed by
   orbitbench.orbits one pair at a time), the arc-cosine NTK recursion in numpy, circularization
   by a loop over diagonals, Eq. 7 with numpy.fft, two leave-one-out solves with scipy. Both sides
   must agree (checked before timing is reported).
2. CNN-FC / CNN-GAP seconds per pair and per kernel entry at the default chunking, for both
   backends side by side (neural-tangents stax; the closed-form torch kernels, on --device), with
   the peak resident memory of the process and the largest relative gap between the backends.
Run: `python benchmarks/bench_pairs.py [--pairs 128] [--n-poses 8] [--cnn-pairs 2] [--cnn-poses 4]
[--device cpu|cuda]`.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import scipy.linalg
import torch

from orbitbench.theory import kernels, spectral
from orbitbench.data import load_digits
from orbitbench.orbits import Rotation
from orbitbench.theory.pairs import make_orbit_pairs, pose_orbits, sample_pairs


def ours(digits, group, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    orbit_pairs = make_orbit_pairs(digits, group, n_pairs, seed)
    gram = kernels.pair_kernels(orbit_pairs.points, arch="mlp", depth=1)
    predicted = spectral.spectral_error(spectral.circularize(gram))
    exact = spectral.symmetrized_error(gram)
    return predicted.numpy(), exact.numpy()


def numpy_ntk(x: np.ndarray) -> np.ndarray:
    """Depth-1 ReLU MLP NTK, W_std = b_std = 1, NTK parameterisation (arc-cosine recursion)."""
    sigma = x @ x.T / x.shape[1] + 1.0
    q = np.sqrt(np.diag(sigma))
    cos = np.clip(sigma / np.outer(q, q), -1.0, 1.0)
    angle = np.arccos(cos)
    hidden = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi) + 1.0
    return hidden + (np.pi - angle) / (2 * np.pi) * sigma


def baseline(digits, group, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    index_a, index_b = sample_pairs(digits.labels, n_pairs, seed)
    predicted, exact = np.empty(n_pairs), np.empty(n_pairs)
    for p in range(n_pairs):
        orbit_a = pose_orbits(digits.images[index_a[p : p + 1]], group)[0].numpy().reshape(group.n, -1)
        orbit_b = pose_orbits(digits.images[index_b[p : p + 1]], group)[0].numpy().reshape(group.n, -1)
        x = np.empty((2 * group.n, orbit_a.shape[1]))
        x[0::2], x[1::2] = orbit_a, orbit_b
        gram = numpy_ntk(x)
        n = gram.shape[0]
        first_row = np.array([np.mean([gram[i, (i + d) % n] for i in range(n)]) for d in range(n)])
        inverse = 1.0 / np.abs(np.fft.fft(first_row).real)
        predicted[p] = inverse[n // 2] / inverse.mean()
        y = np.array([(-1.0) ** i for i in range(n)])
        errors = []
        for left_out in (0, 1):
            keep = np.arange(n) != left_out
            k_oo = gram[np.ix_(keep, keep)]
            alpha = scipy.linalg.solve(k_oo + 1e-10 * np.trace(k_oo) * np.eye(n - 1), y[keep], assume_a="pos")
            errors.append(abs(y[left_out] - gram[left_out, keep] @ alpha))
        exact[p] = np.mean(errors)
    return predicted, exact


def timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--n-poses", type=int, default=8)
    parser.add_argument("--cnn-pairs", type=int, default=2)
    parser.add_argument("--cnn-poses", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="device of the torch CNN kernels")
    args = parser.parse_args()
    digits = load_digits("mnist5k")
    group = Rotation(args.n_poses)
    ours(digits, group, 4, 0)  # jit-compile and build rotation tables outside the timing
    baseline(digits, group, 2, 0)
    t_ours, (p_ours, e_ours) = timed(lambda: ours(digits, group, args.pairs, 124))
    t_base, (p_base, e_base) = timed(lambda: baseline(digits, group, args.pairs, 124))
    gap = max(np.abs(p_ours - p_base).max() / np.abs(p_base).max(), np.abs(e_ours - e_base).max() / np.abs(e_base).max())
    assert gap < 1e-6, f"pipelines disagree: max relative gap {gap:.2e}"
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"load average {', '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}")
    print(f"MLP pairs pipeline, {args.pairs} pairs, N = {args.n_poses} rotations (n = {2 * args.n_poses}):")
    print(f"  orbitbench (batched)     {args.pairs / t_ours:9.1f} pairs/s  ({t_ours:.2f} s)")
    print(f"  per-pair numpy/scipy     {args.pairs / t_base:9.1f} pairs/s  ({t_base:.2f} s)")
    print(f"  speed-up {t_base / t_ours:.1f}x; max relative gap between them {gap:.1e}")

    orbit_pairs = make_orbit_pairs(digits, Rotation(args.cnn_poses), args.cnn_pairs + 1, 124)
    entries = args.cnn_pairs * (2 * args.cnn_poses) ** 2
    for arch in ("cnn_fc", "cnn_gap"):
        grams = {}
        for backend, device in (("neural_tangents", "cpu"), ("torch", args.device)):
            points = orbit_pairs.points.to(device)
            kernels.pair_kernels(points[:1], arch=arch, b_std=None, backend=backend)  # compile / warm up
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            seconds, grams[backend] = timed(lambda: kernels.pair_kernels(points[1:], arch=arch, b_std=None, backend=backend))
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(f"{arch} {backend:15s} ({device}): {seconds / args.cnn_pairs:7.3f} s/pair at n = {2 * args.cnn_poses}"
                  f" ({1e3 * seconds / entries:6.2f} ms per kernel entry); peak RSS {rss_after / 1024:.0f} MiB"
                  f" (+{(rss_after - rss_before) / 1024:.0f} MiB)")
        gap = ((grams["torch"] - grams["neural_tangents"]).abs() / grams["neural_tangents"].abs()).max()
        print(f"{arch}: max relative gap torch vs neural-tangents {gap:.1e}")

if __name__ == "__main__":
    main()
