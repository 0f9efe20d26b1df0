"""`orbitbench theory seeds`: paper Fig. 6A, several seed digits per class (docs/THEORY.md §5).

Per trial two random classes A and B with S seed digits each: the spectral side averages Eq. 7
over all S x S orbit pairs; the exact side is one regression over all 2S orbits with the upright
pose of every orbit of A left out (then of B), error = 1 - mean prediction, symmetrized.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from orbitbench.theory import spectral
from orbitbench.theory.kernels import infinite_kernel
from orbitbench.orbits import make_group
from orbitbench.theory.pairs import class_orbits
from orbitbench.experiments._run import DigitData, RunFolder, documents_data_arguments, execute, pearson, resolve_group, ridge_note


@documents_data_arguments
def seeds(
    n_angles: Sequence[int] = (4, 8, 16),
    seeds_per_class: int = 4,
    trials: int = 12,
    depth: int = 1,
    reg: float = 1e-10,
    group: str = "rotation",
    data: DigitData = DigitData(),
    device: str = "cpu",
    out: Path | None = None,
) -> Path:
    """Fig. 6A: S seed digits per class, pair-averaged Eq. 7 against one exact regression per trial.

    Args:
        n_angles: rotation orbit sizes (paper 2..64).
        seeds_per_class: seed digits per class S (paper 13); prefix-stable in S.
        trials: random class pairs (paper 50); prefix-stable in trials.
        depth: MLP hidden layers.
        reg: one ridge for both sides, a fraction of the trace; summary.json states it.
        group: the group action: rotation (the paper's), translation or the import path of a
            GroupAction class; n_angles are then its orders.
    """
    resolve_group(group)  # a bad name fails before the run folder exists
    return execute("seeds", run, dict(locals(), n_angles=list(n_angles)))


def orbit_major_gram(orbits: torch.Tensor, depth: int, device: str = "cpu") -> torch.Tensor:
    """MLP NTK of all orbit points, orbit-major: [M, N, H, W] -> [M*N, M*N]."""
    return infinite_kernel(orbits.reshape(-1, *orbits.shape[2:]).to(device), arch="mlp", depth=depth)


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orbitbench.data import load_digits

    digits = load_digits(args.source, args.data_dir)
    generator = torch.Generator().manual_seed(args.seed)
    class_pairs = [torch.randperm(10, generator=generator)[:2].tolist() for _ in range(args.trials)]
    rows = []
    for n in args.n_angles:
        group = make_group(resolve_group(args.group), n, interpolation=args.interpolation)
        for trial, (class_a, class_b) in enumerate(class_pairs):
            orbits, _ = class_orbits(digits, group, [class_a, class_b], args.seeds_per_class, args.seed + trial)
            gram = orbit_major_gram(orbits.reshape(-1, *orbits.shape[2:]), args.depth, args.device)  # [2S*N, 2S*N]
            rows.append({
                "n_angles": n, "trial": trial, "class_a": class_a, "class_b": class_b,
                "spectral_error": float(spectral.pair_averaged_spectral_error(gram, n, args.seeds_per_class, args.reg)),
                "exact_error": float(spectral.seeds_exact_error(gram, n, args.seeds_per_class, args.reg)),
            })
    folder.write_csv("results.csv", rows)

    summary: dict = {"experiment": "seeds", "group": args.group, "seeds_per_class": args.seeds_per_class, "trials": args.trials,
                     "interpolation": args.interpolation, "ridge": ridge_note(args.reg)}
    spectral_all = np.array([r["spectral_error"] for r in rows])
    exact_all = np.array([r["exact_error"] for r in rows])
    summary["r_spectral_exact"] = pearson(spectral_all, exact_all)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(args.n_angles)))
    for n, color in zip(args.n_angles, colors):
        sel = [r for r in rows if r["n_angles"] == n]
        s_n, e_n = np.array([r["spectral_error"] for r in sel]), np.array([r["exact_error"] for r in sel])
        summary[f"n{n}"] = {"mean_spectral": s_n.mean(), "mean_exact": e_n.mean(), "r": pearson(s_n, e_n)}
        folder.writer.add_scalar("seeds/mean_spectral_error", s_n.mean(), n)
        folder.writer.add_scalar("seeds/mean_exact_error", e_n.mean(), n)
        print(f"seeds n_angles={n:3d}: mean pair-averaged spectral {s_n.mean():.3f}, mean exact {e_n.mean():.3f},"
              f" r = {summary[f'n{n}']['r']:.3f}")
        axes[0].scatter(e_n, s_n, s=12, color=color, label=f"n={n}")
    top = max(spectral_all.max(), exact_all.max())
    axes[0].plot([0, top], [0, top], "k--", lw=0.7)
    axes[0].set(xlabel="exact error (all orbits, upright poses left out)", ylabel="pair-averaged spectral error",
                title=f"A  S={args.seeds_per_class} seeds per class: r = {summary['r_spectral_exact']:.3f}")
    axes[0].legend(fontsize=7)
    means = [(summary[f"n{n}"]["mean_spectral"], summary[f"n{n}"]["mean_exact"]) for n in args.n_angles]
    axes[1].plot(args.n_angles, [m[0] for m in means], "o-", label="spectral (pair-averaged)")
    axes[1].plot(args.n_angles, [m[1] for m in means], "s--", label="exact")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(args.n_angles, [str(n) for n in args.n_angles])
    axes[1].set(xlabel="n_angles", ylabel="mean error", title="B  mean over trials")
    axes[1].legend()
    figure.suptitle(f"MLP depth {args.depth} NTK, {args.trials} random class pairs")
    figure.tight_layout()
    folder.save_figure(figure)
    print(f"seeds: r(spectral, exact) over all trials and n_angles = {summary['r_spectral_exact']:.3f}")
    return summary
