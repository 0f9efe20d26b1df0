"""CNN-GAP / CNN-FC orbit-pair kernels: the closed-form torch backend against neural-tangents.

1. One CNN-GAP rotation pair (cubic spline, --poses poses per orbit, n = 2 * poses points): the
   Gram matrix by neural-tangents stax (CPU, jitted and compiled before timing, its default
   chunking) and by `orbitbench.theory.kernels` (torch, --device), timed in turns (median of --rounds);
   both must agree to 1e-8 relative before a time is printed.
2. Exact orbits: one translation pair with the block-circulant path (first block row only)
   against the full Gram matrix, both torch.
3. CNN-FC: one rotation pair at the paper's largest orbit (n = 128), torch.
4. The projected time of the paper's Fig. 5 grid (rotations 2..64, shifts 2..28, 512 pairs,
   CNN-FC and CNN-GAP) from the measured cost per kernel entry, and a GPU estimate from the
   memory traffic of the same code (printed as an estimate: no GPU measurement is involved).
Run: `python benchmarks/bench_cnn_kernels.py [--threads 1] [--poses 16] [--rounds 2] [--device cpu]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from _timing import round_robin
from orbitbench.theory import kernels
from orbitbench.data import load_digits
from orbitbench.orbits import Rotation, Translation
from orbitbench.theory.pairs import make_orbit_pairs

PAPER_ROTATIONS = (2, 4, 8, 16, 32, 64)
PAPER_SHIFTS = (2, 4, 7, 14, 28)
PAPER_PAIRS = 512
# float64 bytes read + written per position pair by one CNN-GAP block (closed_form._gap_means):
# mm 8, clamp 16, eq 1, masked_fill 17, asin 16, mul 24, addcmul 16, sqrt 16, two matvecs 16.
BYTES_PER_POSITION_PAIR = 130
GPU_BANDWIDTH = 3.35e12 * 0.6  # H100 SXM HBM3 peak, at a 60% efficiency typical of elementwise kernels


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


def gram_entries(n: int, exact: bool) -> int:
    """Kernel entries one pair costs: a block row (exact orbits) or the upper triangle."""
    return 2 * n if exact else n * (n + 1) // 2


def grid_entries_per_pair() -> int:
    """Kernel entries of one seed pair over the whole grid (the same for CNN-FC and CNN-GAP)."""
    rotations = sum(gram_entries(2 * k, Rotation(k, "cubic").exact_kind(28, 28) is not None) for k in PAPER_ROTATIONS)
    return rotations + sum(gram_entries(2 * k, Translation(k).exact_kind(28, 28) is not None) for k in PAPER_SHIFTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and XLA alike")
    parser.add_argument("--poses", type=int, default=16, help="poses per orbit of the timed rotation pair (n = 2x)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    digits = load_digits("mnist5k")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}, "
          f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__}, device {args.device}")

    # 1. CNN-GAP rotation pair, both backends
    points = make_orbit_pairs(digits, Rotation(args.poses, "cubic"), 1, 124).points[0]  # [n, 28, 28]
    n = points.shape[0]
    on_device = points.to(args.device)
    options = dict(arch="cnn_gap", b_std=None)
    kernels.infinite_kernel(points[:1], points, **options, backend="neural_tangents", chunk=1)  # jit-compile
    results = {}
    methods = {
        "neural-tangents": lambda: results.__setitem__("nt", kernels.infinite_kernel(
            points, **options, backend="neural_tangents", chunk=max(1, 48 // n))),
        "torch closed form": lambda: results.__setitem__("torch", kernels.infinite_kernel(on_device, **options)),
    }
    times = round_robin(methods, args.rounds)
    gap = relative_gap(results["torch"], results["nt"])
    assert gap < 1e-8, f"backends disagree: {gap:.1e}"
    entries = gram_entries(n, exact=False)
    per_entry = {name: seconds / entries for name, seconds in times.items()}
    print(f"\nCNN-GAP rotation pair, n = {n} ({args.poses} cubic-spline angles), {entries} kernel entries:")
    for name, seconds in times.items():
        print(f"  {name:18s} {seconds:8.2f} s/pair  {1e3 * per_entry[name]:7.2f} ms/entry")
    print(f"  ratio {times['neural-tangents'] / times['torch closed form']:.1f}x; max relative gap {gap:.1e}")

    # 2. exact orbits: block row vs full Gram matrix (torch)
    shift = make_orbit_pairs(digits, Translation(14), 1, 124)
    shift_points = shift.points.to(args.device)
    grams = {}
    shift_times = round_robin({
        "full": lambda: grams.__setitem__("full", kernels.pair_kernels(shift_points, **options)),
        "block row": lambda: grams.__setitem__("row", kernels.pair_kernels(shift_points, **options, group=shift.group)),
    }, args.rounds)
    shift_gap = float((grams["row"] - grams["full"]).abs().max() / grams["full"].abs().max())
    print(f"\nCNN-GAP translation pair, n = 28 (exact shifts): full Gram {shift_times['full']:.2f} s, block row"
          f" {shift_times['block row']:.2f} s ({shift_times['full'] / shift_times['block row']:.1f}x),"
          f" max relative difference {shift_gap:.1e}")

    # 3. CNN-FC at the paper's largest rotation orbit
    fc_points = make_orbit_pairs(digits, Rotation(64, "cubic"), 1, 124).points.to(args.device)
    fc_seconds = round_robin({"fc": lambda: kernels.pair_kernels(fc_points, arch="cnn_fc", b_std=None)}, args.rounds)["fc"]
    print(f"CNN-FC rotation pair, n = 128: {fc_seconds:.3f} s/pair")

    # 4. projections of the paper's Fig. 5 grid
    gap_entries = PAPER_PAIRS * grid_entries_per_pair()
    fc_total = fc_seconds * PAPER_PAIRS * grid_entries_per_pair() / gram_entries(128, False)  # scaled by entries from n = 128
    print(f"\nPaper Fig. 5 grid: {PAPER_PAIRS} pairs x rotations {PAPER_ROTATIONS} x shifts {PAPER_SHIFTS}:"
          f" {gap_entries:,} CNN-GAP kernel entries (exact orbits: one block row per pair)")
    for name in ("torch closed form", "neural-tangents"):
        total = gap_entries * per_entry[name] + fc_total
        print(f"  {name:18s} on this CPU ({args.threads} thread(s)): {total / 3600:7.1f} h")
    position_pairs = gap_entries * (28 * 28) ** 2
    gpu_seconds = position_pairs * BYTES_PER_POSITION_PAIR / GPU_BANDWIDTH
    cpu_bandwidth = BYTES_PER_POSITION_PAIR * (28 * 28) ** 2 / per_entry["torch closed form"]
    print(f"  torch closed form on one H100 (estimate: {BYTES_PER_POSITION_PAIR} B per position pair at"
          f" {GPU_BANDWIDTH / 1e12:.1f} TB/s effective; this CPU run moved {cpu_bandwidth / 1e9:.1f} GB/s):"
          f" {gpu_seconds / 60:.1f} min")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"(benchmark wall time {time.perf_counter() - start:.0f} s)")
