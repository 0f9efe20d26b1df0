"""`orbitbench theory toy`: paper Fig. 2-3, the RBF kernel on two interleaved circles.

Orbit a is N points on a unit circle at height +d/2, orbit b the same circle at -d/2 rotated by
pi/N; the RBF kernel of such points is exactly circulant, so Eq. 7 must equal exact regression.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from orbitbench.theory import spectral
from orbitbench.errors import OrbitbenchError
from orbitbench.theory.kernels import rbf_kernel
from orbitbench.experiments._run import RunFolder, execute, ridge_note


def toy(
    distances: Sequence[float] = tuple(float(d) for d in np.round(np.linspace(0.1, 2.0, 20), 3)),
    orbit_sizes: Sequence[int] = (4, 8, 12, 16, 24, 32, 48),
    length: float = 1.4,
    reg: float = 1e-5,
    out: Path | None = None,
) -> Path:
    """Fig. 2-3: the RBF kernel on two interleaved circles, Eq. 7 against exact regression.

    Args:
        distances: distances d between the two circles' planes.
        orbit_sizes: points per circle N (paper 4..48).
        length: RBF inverse length scale L.
        reg: ridge as a fraction of the trace (paper 1e-5); Eq. 7 and exact regression are equal at 0.
        out: run folder (default runs/theory/toy-<time>).
    """
    if not distances or not length > 0 or not all(0 <= d < float("inf") for d in distances):
        raise OrbitbenchError(f"--length {length} / --distances {list(distances)}: expected L > 0 and a non-empty "
                              "list of finite distances d >= 0")
    if not orbit_sizes or not all(n >= 1 for n in orbit_sizes):
        raise OrbitbenchError(f"--orbit_sizes {list(orbit_sizes)}: expected a non-empty list of orbit sizes N >= 1")
    return execute("toy", run, dict(distances=list(distances), orbit_sizes=list(orbit_sizes), length=length, reg=reg,
                                    out=out))


def circle_orbits(n_per_orbit: int, distance: float) -> torch.Tensor:
    """Interleaved points of the two circles: float64 [2N, 3]."""
    angles = 2 * torch.pi * torch.arange(n_per_orbit, dtype=torch.float64) / n_per_orbit
    points = torch.empty(2 * n_per_orbit, 3, dtype=torch.float64)
    points[0::2] = torch.stack([angles.cos(), angles.sin(), torch.full_like(angles, distance / 2)], 1)
    shifted = angles + torch.pi / n_per_orbit
    points[1::2] = torch.stack([shifted.cos(), shifted.sin(), torch.full_like(angles, -distance / 2)], 1)
    return points


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, distances = args.orbit_sizes, args.distances
    rows, inverse_spectra = [], {}
    for n in sizes:
        gram = torch.stack([rbf_kernel(circle_orbits(n, d), length=args.length) for d in distances])  # [D, 2N, 2N]
        predicted = spectral.spectral_error(gram, reg=args.reg)
        exact = spectral.symmetrized_error(gram, reg=args.reg)
        inverse_spectra[n] = spectral.spectrum(gram, reg=args.reg).reciprocal()  # [D, 2N]
        for j, d in enumerate(distances):
            rows.append({"n_per_orbit": n, "distance": d, "spectral_error": predicted[j].item(),
                         "exact_error": exact[j].item()})
    folder.write_csv("results.csv", rows)
    np.savez(folder.path / "inverse_spectra.npz", **{f"N{n}": v.numpy() for n, v in inverse_spectra.items()},
             distances=np.asarray(distances))

    spectral_values = np.array([r["spectral_error"] for r in rows])
    exact_values = np.array([r["exact_error"] for r in rows])
    max_gap = float(np.max(np.abs(spectral_values - exact_values)))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for n in sizes:
        sel = [r for r in rows if r["n_per_orbit"] == n]
        line, = axes[0].plot([r["distance"] for r in sel], [r["spectral_error"] for r in sel], label=f"N={n}")
        axes[0].plot([r["distance"] for r in sel], [r["exact_error"] for r in sel], "o", ms=3, color=line.get_color())
    axes[0].set(xlabel="distance d between the planes", ylabel="error", yscale="log", title="A  error vs d (line: Eq. 7, dots: exact)")
    axes[0].legend(fontsize=7)
    mid = len(distances) // 2
    for j in sorted({0, mid, len(distances) - 1}):
        sel = [r for r in rows if r["distance"] == distances[j]]
        line, = axes[1].plot([r["n_per_orbit"] for r in sel], [r["spectral_error"] for r in sel], label=f"d={distances[j]:g}")
        axes[1].plot([r["n_per_orbit"] for r in sel], [r["exact_error"] for r in sel], "o", ms=3, color=line.get_color())
    axes[1].set(xlabel="points per orbit N", ylabel="error", yscale="log", title="B  error vs N")
    axes[1].legend(fontsize=7)
    for n in sizes[:: max(1, len(sizes) // 3)]:
        inv = inverse_spectra[n][mid].numpy()
        freq = np.arange(inv.size) / inv.size
        axes[2].semilogy(freq, inv, ".-", label=f"N={n}")
    axes[2].axvline(0.5, color="k", lw=0.5)
    axes[2].set(xlabel="frequency k / n (Nyquist at 0.5)", ylabel="1 / lambda_k",
                title=f"C  inverse spectrum, d={distances[mid]:g}")
    axes[2].legend(fontsize=7)
    figure.tight_layout()
    folder.save_figure(figure)
    for n in sizes:
        sel = [r for r in rows if r["n_per_orbit"] == n]
        for step, r in enumerate(sel):
            folder.writer.add_scalars(f"toy/N{n}", {"spectral": r["spectral_error"], "exact": r["exact_error"]}, step)
    print(f"toy: {len(rows)} (N, d) settings; max |Eq. 7 - exact| = {max_gap:.2e} (Eq. 7's ridge is reg * trace(K),"
          f" the exact side's reg * trace(K[O, O]) as in docs/THEORY.md §2; equal at --reg 0)")
    for n in sizes:
        sel = [r for r in rows if r["n_per_orbit"] == n]
        print(f"  N={n:3d}: spectral error {sel[0]['spectral_error']:.3g} (d={sel[0]['distance']:g})"
              f" -> {sel[-1]['spectral_error']:.3g} (d={sel[-1]['distance']:g})")
    return {"experiment": "toy", "settings": len(rows), "max_abs_gap_spectral_exact": max_gap,
            "ridge": ridge_note(args.reg)}
