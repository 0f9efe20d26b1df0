"""`orbitbench theory cnn`: paper Fig. 5 and App. G, circular CNN NTKs on rotation and shift orbits.

CNN-GAP's kernel is constant on translation orbits (Prop. 2), so its error there is 0 to numerical
precision; CNN-FC is not invariant and fails on translations like an MLP (Prop. 1). On rotations
both are approximate and the spectral error tracks the exact one more loosely for GAP.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orbitbench.errors import OrbitbenchError
from orbitbench.theory.kernels import block_circulant
from orbitbench.orbits import make_group
from orbitbench.experiments._run import DigitData, RunFolder, documents_data_arguments, execute, pearson, resolve_ridges
from orbitbench.experiments.pairs import pair_rows, ridge_summary

ARCHS = ("cnn_fc", "cnn_gap")


@documents_data_arguments
def cnn(
    rotations: Sequence[int] = (4,),
    shifts: Sequence[int] = (4, 7),
    n_pairs: int = 4,
    channels: int = 64,
    ridge: str = "orbitbench",
    reg: float | None = None,
    spectral_reg: float | None = None,
    exact_reg: float | None = None,
    spectral_scale: str | None = None,
    exact_scale: str | None = None,
    backend: str = "torch",
    block_elements: int | None = None,
    data: DigitData = DigitData(),
    device: str = "cpu",
    out: Path | None = None,
) -> Path:
    """Fig. 5 / App. G: CNN-FC and CNN-GAP NTKs (no biases) on rotation and translation orbit pairs.

    Exact orbits (quarter turns, whole-pixel shifts) cost one block row of each pair kernel; the
    paper's grid is rotations 2,4,8,16,32,64, shifts 2,4,7,14,28 and 512 pairs (benchmarks/RESULTS.md
    gives its projected time).

    Args:
        rotations: rotation orbit sizes.
        shifts: translation orbit sizes.
        n_pairs: random different-class pairs (paper 512); prefix-stable in n_pairs.
        channels: conv channels (no effect on an infinite-width kernel).
        ridge: named (spectral, exact) ridges: orbitbench (1e-10 * trace on both sides) or authors
            (1e-5 * K00 * n spectral, 1e-10 * trace exact); summary.json states them.
        reg: one value for both sides (overrides the preset's values).
        spectral_reg: the spectral side's value (overrides reg).
        exact_reg: the exact side's value (overrides reg).
        spectral_scale: relative (value * trace) or absolute (value) on the spectral side.
        exact_scale: relative (value * trace(K[O, O])) or absolute (value) on the exact side.
        backend: torch (closed form, on `device`) or neural_tangents (the reference install, CPU).
        block_elements: elements of one CNN-GAP block (memory ~ 32 bytes each).
    """
    if backend not in ("torch", "neural_tangents"):
        raise OrbitbenchError(f"backend={backend!r}: expected torch or neural_tangents")
    options = dict(locals(), rotations=list(rotations), shifts=list(shifts))
    options["ridges"] = resolve_ridges(options)
    return execute("cnn", run, options)


def kernel_entries(args: types.SimpleNamespace) -> int:
    """Kernel entries of one architecture over the grid: a block row per pair for exact orbits."""
    total = 0
    for kind, sizes in (("rotation", args.rotations), ("translation", args.shifts)):
        options = {"interpolation": args.interpolation}  # make_group passes an action only what it takes
        for n in sizes:
            exact = block_circulant("cnn_gap", make_group(kind, n, **options), (28, 28))
            total += 2 * (2 * n) if exact else n * (2 * n + 1)
    return total * args.n_pairs


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orbitbench.data import load_digits

    digits = load_digits(args.source, args.data_dir)
    configs = [
        {"columns": {"arch": arch},
         "kernel": {"arch": arch, "b_std": None, "channels": args.channels, "block_elements": args.block_elements,
                    "backend": args.backend}}
        for arch in ARCHS
    ]
    print(f"cnn: {kernel_entries(args):,} CNN-GAP kernel entries on {args.device} (benchmarks/RESULTS.md: cost per"
          " entry and the paper grid's time); progress bars show each configuration's ETA")
    rows = []
    for group, sizes in (("rotation", args.rotations), ("translation", args.shifts)):
        for config in configs:
            rows += pair_rows(args, digits, group, sizes, [config])
    folder.write_csv("results.csv", rows)

    summary: dict = {"experiment": "cnn", "n_pairs": args.n_pairs, "interpolation": args.interpolation,
                     "ridge": ridge_summary(args), "results": {}}
    figure, axes = plt.subplots(2, 2, figsize=(10, 9), squeeze=False)
    for i, (group, sizes) in enumerate((("rotation", args.rotations), ("translation", args.shifts))):
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
        for j, arch in enumerate(ARCHS):
            ax = axes[i, j]
            for n, color in zip(sizes, colors):
                sel = [r for r in rows if r["group"] == group and r["arch"] == arch and r["n_poses"] == n]
                exact = np.array([r["exact_error"] for r in sel])
                predicted = np.array([r["spectral_error"] for r in sel])
                key = f"{group}/{arch}/n{n}"
                summary["results"][key] = {"mean_exact": exact.mean(), "max_exact": exact.max(),
                                           "mean_spectral": predicted.mean(), "r": pearson(predicted, exact)}
                folder.writer.add_scalar(f"cnn/{group}/{arch}/mean_exact_error", exact.mean(), n)
                folder.writer.add_scalar(f"cnn/{group}/{arch}/mean_spectral_error", predicted.mean(), n)
                print(f"cnn {group:11s} {arch:7s} n={n:3d}: mean exact {exact.mean():.3g} (max {exact.max():.2g}),"
                      f" mean spectral {predicted.mean():.3g}")
                ax.scatter(exact, predicted, s=10, color=color, label=f"n={n}")
            top = max(max(r["exact_error"], r["spectral_error"]) for r in rows if r["group"] == group and r["arch"] == arch)
            ax.plot([0, top], [0, top], "k--", lw=0.7)
            ax.set(xlabel="symmetrized exact error", ylabel="spectral error (Eq. 7)", title=f"{arch.upper()} on {group}s")
            ax.legend(fontsize=7)
    gap_shift = [r["exact_error"] for r in rows if r["group"] == "translation" and r["arch"] == "cnn_gap"]
    fc_shift = [r["exact_error"] for r in rows if r["group"] == "translation" and r["arch"] == "cnn_fc"]
    summary["gap_translation_max_exact_error"] = max(gap_shift)
    summary["fc_translation_mean_exact_error"] = float(np.mean(fc_shift))
    print(f"cnn: CNN-GAP on translations: max exact error {max(gap_shift):.2e} (Prop. 2: 0);"
          f" CNN-FC on translations: mean exact error {np.mean(fc_shift):.3f} (Prop. 1: fails like an MLP)")
    figure.suptitle(f"Infinite-width circular CNN NTKs, {args.n_pairs} orbit pairs")
    figure.tight_layout()
    folder.save_figure(figure)
    return summary
