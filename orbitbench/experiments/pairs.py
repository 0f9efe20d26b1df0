"""`orbitbench theory pairs`: paper Fig. 4, infinite-width MLP NTK on random MNIST orbit pairs.

For each orbit size and depth: Eq. 7 on the circularized pair kernel vs the symmetrized exact
leave-one-out error on the raw kernel, and the two spectral factors vs their input-space correlates
(lambda_N vs squared centroid distance, mean(1/lambda) vs inverse orbit radius).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orbitbench.theory import spectral
from orbitbench.theory.kernels import pair_kernels
from orbitbench.orbits import make_group
from orbitbench.theory.pairs import make_orbit_pairs
from orbitbench.errors import OrbitbenchError
from orbitbench.experiments._run import DigitData, RunFolder, documents_data_arguments, execute, pearson, resolve_group, resolve_ridges

@documents_data_arguments
def pairs(
    n_pairs: int = 64,
    n_poses: Sequence[int] | None = None,
    group: str = "rotation",
    depths: Sequence[int] = (1, 5),
    ridge: str = "orbitbench",
    reg: float | None = None,
    spectral_reg: float | None = None,
    exact_reg: float | None = None,
    spectral_scale: str | None = None,
    exact_scale: str | None = None,
    data: DigitData = DigitData(),
    device: str = "cpu",
    out: Path | None = None,
) -> Path:
    """Fig. 4: infinite-width MLP NTK on random different-class MNIST orbit pairs.

    Args:
        n_pairs: random different-class seed pairs (paper 512); prefix-stable in n_pairs.
        n_poses: orbit sizes (default: the action's own, rotation 2,4,8,16; translation 2,4,7,14;
            paper up to 64 / 28).
        group: the group action: rotation, translation or the import path of a GroupAction class.
        depths: MLP hidden layers (paper 1 and 5).
        ridge: named (spectral, exact) ridges: orbitbench (1e-10 * trace on both sides) or authors
            (the authors' code: 1e-5 * K00 * n spectral, 1e-10 * trace exact); summary.json states them.
        reg: one value for both sides (overrides the preset's values).
        spectral_reg: the spectral side's value (overrides reg).
        exact_reg: the exact side's value (overrides reg).
        spectral_scale: relative (value * trace) or absolute (value) on the spectral side.
        exact_scale: relative (value * trace(K[O, O])) or absolute (value) on the exact side.
    """
    action = resolve_group(group)
    if not n_poses and not action.default_orders:
        raise OrbitbenchError(f"group {group!r} declares no default orders: give --n_poses")
    options = dict(locals(), n_poses=list(n_poses or action.default_orders), depths=list(depths))
    options.pop("action")
    options["ridges"] = resolve_ridges(options)
    return execute("pairs", run, options)


def pair_rows(
    args: types.SimpleNamespace, digits, group: str, n_poses: list[int], configs: list[dict]
) -> list[dict]:
    """One row per (n, config, pair): spectral and exact errors plus the spectral factors.

    `configs`: dicts of `columns` (written to each row) and `kernel` (keyword arguments of
    `kernels.pair_kernels`); `args` gives n_pairs, seed, interpolation and the (spectral, exact) `ridges`.
    """
    ridge_s, ridge_e = args.ridges
    action = resolve_group(group)
    rows = []
    for n in n_poses:
        orbit_pairs = make_orbit_pairs(digits, make_group(action, n, interpolation=args.interpolation), args.n_pairs, args.seed)
        distance_sq, radius = spectral.orbit_geometry(*orbit_pairs.orbits())
        points = orbit_pairs.points.to(args.device)
        for config in configs:
            slow = config["kernel"].get("arch", "mlp") != "mlp"
            gram = pair_kernels(points, progress=slow, group=orbit_pairs.group, **config["kernel"])  # [P, 2N, 2N]
            circular = spectral.circularize(gram)
            predicted = spectral.spectral_error(circular, ridge_s.value, ridge_s.relative)
            exact = spectral.symmetrized_error(gram, ridge_e.value, ridge_e.relative)
            inverse = (spectral.spectrum(circular, ridge_s.value, ridge_s.relative) / (2 * n)).reciprocal()  # [P, 2N], of K / n
            for p in range(len(orbit_pairs)):
                rows.append({
                    **config["columns"], "group": group, "n_poses": n, "pair": p,
                    "index_a": int(orbit_pairs.index_a[p]), "index_b": int(orbit_pairs.index_b[p]),
                    "label_a": int(orbit_pairs.label_a[p]), "label_b": int(orbit_pairs.label_b[p]),
                    "spectral_error": float(predicted[p]), "exact_error": float(exact[p]),
                    "lambda_nyquist": float(1 / inverse[p, n]), "mean_inverse_lambda": float(inverse[p].mean()),
                    "centroid_distance_sq": float(distance_sq[p]), "orbit_radius": float(radius[p]),
                })
    return rows


def ridge_summary(args: types.SimpleNamespace) -> dict:
    """summary.json's statement of the two ridges."""
    spectral_ridge, exact_ridge = args.ridges
    return {"preset": args.ridge, "spectral": spectral_ridge.note("spectral"), "exact": exact_ridge.note("exact")}


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orbitbench.data import load_digits

    digits = load_digits(args.source, args.data_dir)
    configs = [{"columns": {"depth": d}, "kernel": {"arch": "mlp", "depth": d}} for d in args.depths]
    rows = pair_rows(args, digits, args.group, args.n_poses, configs)
    folder.write_csv("results.csv", rows)

    summary = {"experiment": "pairs", "group": args.group, "n_pairs": args.n_pairs, "interpolation": args.interpolation,
               "ridge": ridge_summary(args), "correlations": {}}
    figure, axes = plt.subplots(len(args.depths), 3, figsize=(14, 4 * len(args.depths)), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(args.n_poses)))
    for i, depth in enumerate(args.depths):
        mine = [r for r in rows if r["depth"] == depth]
        col = {k: np.array([r[k] for r in mine]) for k in mine[0]}
        r_error = pearson(col["spectral_error"], col["exact_error"])
        per_n = summary["correlations"][f"depth{depth}"] = {"spectral_vs_exact_all": r_error}
        print(f"pairs depth {depth}: r(spectral, exact) = {r_error:.3f} over all orbit sizes; per orbit size:")
        for n, color in zip(args.n_poses, colors):
            sel = col["n_poses"] == n
            r_n = {
                "spectral_vs_exact": pearson(col["spectral_error"][sel], col["exact_error"][sel]),
                "lambdaN_vs_centroid_dist_sq": pearson(col["lambda_nyquist"][sel], col["centroid_distance_sq"][sel]),
                "mean_inv_lambda_vs_inv_radius": pearson(col["mean_inverse_lambda"][sel], 1 / col["orbit_radius"][sel]),
            }
            per_n[f"n{n}"] = r_n
            for name, value in r_n.items():
                folder.writer.add_scalar(f"pairs/depth{depth}/r_{name}", value, n)
            folder.writer.add_scalar(f"pairs/depth{depth}/mean_exact_error", col["exact_error"][sel].mean(), n)
            folder.writer.add_scalar(f"pairs/depth{depth}/mean_spectral_error", col["spectral_error"][sel].mean(), n)
            folder.writer.add_scalar(f"pairs/depth{depth}/mean_spectral_minus_exact",
                                     col["spectral_error"][sel].mean() - col["exact_error"][sel].mean(), n)
            print(f"  n={n:3d}: mean exact {col['exact_error'][sel].mean():.3f}, "
                  f"mean spectral {col['spectral_error'][sel].mean():.3f}, r(spectral, exact) = "
                  f"{r_n['spectral_vs_exact']:.3f}, r(lambda_N, centroid dist^2) = {r_n['lambdaN_vs_centroid_dist_sq']:.3f}, "
                  f"r(mean 1/lambda, 1/radius) = {r_n['mean_inv_lambda_vs_inv_radius']:.3f}")
            axes[i, 0].scatter(col["exact_error"][sel], col["spectral_error"][sel], s=6, color=color, label=f"n={n}")
            axes[i, 1].scatter(col["centroid_distance_sq"][sel], col["lambda_nyquist"][sel], s=6, color=color)
            axes[i, 2].scatter(1 / col["orbit_radius"][sel], col["mean_inverse_lambda"][sel], s=6, color=color)
        top = max(col["exact_error"].max(), col["spectral_error"].max())
        axes[i, 0].plot([0, top], [0, top], "k--", lw=0.7)
        axes[i, 0].set(xlabel="symmetrized exact error", ylabel="spectral error (Eq. 7)",
                       title=f"MLP depth {depth}: r = {r_error:.3f}")
        axes[i, 0].legend(fontsize=7)
        axes[i, 1].set(xlabel="squared distance of orbit centroids", ylabel="lambda_N of K / n",
                       title="numerator: separation of the orbits")
        axes[i, 2].set(xlabel="1 / orbit radius", ylabel="mean(1 / lambda) of K / n", yscale="log",
                       title="denominator: density of the orbits")
    figure.suptitle(f"Infinite-width MLP NTK, {args.n_pairs} {args.group} orbit pairs")
    figure.tight_layout()
    folder.save_figure(figure)
    return summary
