"""`orbitbench theory cnn`: paper Fig. 5 and App. G, circular CNN NTKs on rotation and shift orbits.

CNN-GAP's kernel is constant on translation orbits (Prop. 2), so its error there is 0 to numerical
precision; CNN-FC is not invariant and fails on translations like an MLP (Prop. 1). On rotations
both are approximate and the spectral error tracks the exact one more loosely for GAP.
"""

from __future__ import annotations

import argparse

import numpy as np

from orbitbench.theory._run import RunFolder, non_negative_float, add_data_arguments, int_list, pearson, positive_int
from orbitbench.theory.pairs import pair_rows

ARCHS = ("cnn_fc", "cnn_gap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--rotations", type=int_list, default=[4], help="rotation orbit sizes (paper 2,4,8,16,32,64)")
    parser.add_argument("--shifts", type=int_list, default=[4, 7], help="translation orbit sizes (paper 2,4,7,14,28)")
    parser.add_argument("--n-pairs", type=positive_int, default=4, help="random different-class pairs (paper 512)")
    parser.add_argument("--channels", type=positive_int, default=64, help="conv channels (infinite-width limit: no effect)")
    parser.add_argument("--reg", type=non_negative_float, default=1e-10, help="ridge of the exact regression (fraction of trace)")
    parser.add_argument("--backend", default="neural_tangents", choices=("neural_tangents", "torch"),
                        help="kernel code: neural-tangents stax, or the closed-form torch kernels (faster, same values)")
    parser.add_argument("--rows-per-call", type=positive_int, default=None,
                        help="kernel rows per neural-tangents call (memory ~ rows * 2N * (H*W)^2 * 8 bytes)")


def run(args: argparse.Namespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orbitbench.data import load_digits

    digits = load_digits(args.source, args.data_dir)
    configs = [
        {"columns": {"arch": arch},
         "kernel": {"arch": arch, "b_std": None, "channels": args.channels, "chunk": args.rows_per_call,
                    "backend": args.backend}}
        for arch in ARCHS
    ]
    rows = []
    for group, sizes in (("rotation", args.rotations), ("translation", args.shifts)):
        for config in configs:
            rows += pair_rows(args, digits, group, sizes, [config])
    folder.write_csv("results.csv", rows)

    summary: dict = {"experiment": "cnn", "n_pairs": args.n_pairs, "results": {}}
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
