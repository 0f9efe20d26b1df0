"""Spectral theory of kernel regression on orbits (paper Eq. 7, Eq. 12, App. A.1, section 3.4).

Pure torch, batched over leading dimensions, float64 by default: docs/THEORY.md shows that float32
rounding destroys the exactly circulant structure these formulas rely on.

Conventions: an *interleaved two-orbit kernel* is the Gram matrix of `x_{2k} = g^k a`,
`x_{2k+1} = g^k b` (k = 0..N-1, n = 2N) with labels `y = (+1, -1, +1, ...)`; the label vector is
then the Nyquist Fourier mode, which is why Eq. 7 needs only two numbers of the spectrum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import circularize  # Eq. 12: the nearest circulant matrix, a fact of cyclic orbits

__all__ = [
    "circularize",
    "spectrum",
    "spectral_error",
    "spectral_prediction",
    "missing_errors",
    "interleaved_labels",
    "kernel_regression",
    "symmetrized_error",
    "orbit_geometry",
    "orbit_pair_kernels",
    "pair_averaged_spectral_error",
    "seeds_exact_error",
    "one_vs_many_accuracy",
]


def _check_square(kernel: Tensor, even: bool = False) -> int:
    if kernel.ndim < 2 or kernel.shape[-1] != kernel.shape[-2]:
        raise OrbitbenchError(f"kernel shape {tuple(kernel.shape)} is not [..., n, n]")
    n = kernel.shape[-1]
    if even and n % 2:
        raise OrbitbenchError(
            f"kernel size n={n} is odd; interleaved two-orbit kernels have even n = 2N (Nyquist mode)"
        )
    return n


def spectrum(kernel: Tensor, reg: float = 0.0, relative: bool = True) -> Tensor:
    """Eigenvalues of a symmetric circulant kernel, ordered by frequency: [..., n, n] -> [..., n].

    `lambda = |fft(K[0]) + reg * n * K[0, 0]|` as in the paper's public code (a ridge of
    `reg * trace(K)`; the absolute value only guards against rounding below zero); with
    `relative=False`, `|fft(K[0]) + reg|` (an absolute ridge).
    """
    n = _check_square(kernel)
    first_row = kernel[..., 0, :]
    eig = torch.fft.fft(first_row, dim=-1).real
    return (eig + (reg * n * first_row[..., :1] if relative else reg)).abs()


def spectral_error(kernel: Tensor, reg: float = 0.0, relative: bool = True) -> Tensor:
    """Eq. 7: `(1 / lambda_N) / mean_k(1 / lambda_k)` for circulant kernels, [..., n, n] -> [...].

    The exact leave-one-out error of kernel regression on interleaved orbits when `kernel` is
    circulant; circularize real kernels first. The held-out point is misclassified iff > 1.
    """
    n = _check_square(kernel, even=True)
    inverse = spectrum(kernel, reg, relative).reciprocal()  # [..., n]
    return inverse[..., n // 2] / inverse.mean(dim=-1)


def spectral_prediction(kernel: Tensor, reg: float = 0.0) -> Tensor:
    """`1 - spectral_error`: the predicted label (+1 correct) at the held-out point, [...]."""
    return 1.0 - spectral_error(kernel, reg)


def _as_index(index: int | Sequence[int] | Tensor, n: int, device: torch.device) -> tuple[Tensor, bool]:
    """Index tensor [m] and whether the caller passed a scalar (so results drop that dim)."""
    scalar = isinstance(index, int) or (isinstance(index, Tensor) and index.ndim == 0)
    idx = torch.as_tensor(index, dtype=torch.long, device=device).reshape(-1)
    if idx.numel() == 0:
        raise OrbitbenchError("no test/missing index given; expected at least one index in 0..n-1")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.numel():
        raise OrbitbenchError(f"index {bad[0].item()} out of range; expected 0..{n - 1}")
    if idx.unique().numel() != idx.numel():
        raise OrbitbenchError(f"indices {idx.tolist()} repeat; expected distinct indices")
    return idx, scalar


def interleaved_labels(n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """`(+1, -1, +1, -1, ...)` of length n: orbit a at even, orbit b at odd indices."""
    signs = torch.ones(n, dtype=dtype, device=device)
    signs[1::2] = -1.0
    return signs


def missing_errors(kernel: Tensor, missing: int | Sequence[int] | Tensor, reg: float = 0.0) -> Tensor:
    """Signed errors `y_M - y_hat_M` at several missing points of a circulant kernel (App. A.1).

    `(1 / lambda_N) P_MM^{-1} y_M` with `P = K^{-1}` (circulant, built from the spectrum) and the
    interleaved labels; [..., n, n] -> [..., m] (or [...] for a single int index, which is Eq. 7
    with the label's sign).
    """
    n = _check_square(kernel, even=True)
    idx, scalar = _as_index(missing, n, kernel.device)
    inverse = spectrum(kernel, reg).reciprocal()  # [..., n]
    k = torch.arange(n, device=kernel.device, dtype=kernel.dtype)
    lag = (idx[:, None] - idx[None, :]).to(kernel.dtype)  # [m, m] offsets m - m'
    phases = torch.cos(2 * torch.pi * k[:, None, None] * lag / n)  # [n, m, m]
    p_mm = torch.einsum("...k,kij->...ij", inverse, phases) / n  # [..., m, m]
    y_m = interleaved_labels(n, kernel.dtype, kernel.device)[idx]  # [m]
    rhs = y_m.expand(*p_mm.shape[:-1]).unsqueeze(-1)  # [..., m, 1]
    errors = torch.linalg.solve(p_mm, rhs).squeeze(-1) * inverse[..., n // 2, None]
    return errors[..., 0] if scalar else errors


def kernel_regression(
    kernel: Tensor,
    labels: Tensor,
    test_index: int | Sequence[int] | Tensor,
    reg: float = 1e-10,
    relative: bool = True,
) -> Tensor:
    """Exact GP-mean prediction at the left-out point(s) from all other points (docs/THEORY.md §2).

    `y_hat_T = K[T, O] (K[O, O] + r I)^{-1} y_O` with `r = reg * trace(K[O, O])` (`relative=False`:
    `r = reg`), O the complement of T. kernel [..., n, n], labels [n] or [..., n] -> [..., m] (or [...] for an int index).
    """
    n = _check_square(kernel)
    idx, scalar = _as_index(test_index, n, kernel.device)
    keep = torch.ones(n, dtype=torch.bool, device=kernel.device)
    keep[idx] = False
    observed = keep.nonzero().squeeze(-1)
    labels = labels.to(kernel.device, kernel.dtype)
    k_oo = kernel[..., observed[:, None], observed[None, :]]  # [..., n-m, n-m]
    k_to = kernel[..., idx[:, None], observed[None, :]]  # [..., m, n-m]
    y_o = labels[..., observed].expand(*k_oo.shape[:-1])  # [..., n-m]
    trace = torch.diagonal(k_oo, dim1=-2, dim2=-1).sum(-1)  # [...]
    ridge = reg * trace if relative else torch.full_like(trace, reg)
    eye = torch.eye(observed.numel(), dtype=kernel.dtype, device=kernel.device)
    system = k_oo + ridge[..., None, None] * eye
    alpha = torch.linalg.solve(system, y_o.unsqueeze(-1))  # [..., n-m, 1]
    prediction = (k_to @ alpha).squeeze(-1)  # [..., m]
    return prediction[..., 0] if scalar else prediction


def symmetrized_error(kernel: Tensor, reg: float = 1e-10, relative: bool = True) -> Tensor:
    """Mean of `|y_0 - y_hat_0|` and `|y_1 - y_hat_1|` on an interleaved two-orbit kernel, [...].

    Leaving out one point of each orbit in turn removes the asymmetry of real (non-circulant)
    kernels, so this is what the spectral error of the circularized kernel is compared with.
    """
    n = _check_square(kernel, even=True)
    labels = interleaved_labels(n, kernel.dtype, kernel.device)
    errors = [(labels[i] - kernel_regression(kernel, labels, i, reg, relative)).abs() for i in (0, 1)]
    return 0.5 * (errors[0] + errors[1])


def orbit_geometry(orbit_a: Tensor, orbit_b: Tensor) -> tuple[Tensor, Tensor]:
    """Input-space correlates of Eq. 7's two factors for orbits [..., N, D] (flatten images first).

    Returns `(centroid_distance_sq, radius)`, each [...]: the squared distance between the orbit
    centroids (tracks lambda_N) and the mean distance of an orbit point to its own centroid,
    averaged over both orbits (its inverse tracks mean(1/lambda)).
    """
    if orbit_a.shape != orbit_b.shape or orbit_a.ndim < 2:
        raise OrbitbenchError(
            f"orbit shapes {tuple(orbit_a.shape)} and {tuple(orbit_b.shape)} differ or are not [..., N, D]"
        )
    centroid_a, centroid_b = orbit_a.mean(-2), orbit_b.mean(-2)  # [..., D]
    distance_sq = (centroid_a - centroid_b).square().sum(-1)
    radius_a = (orbit_a - centroid_a.unsqueeze(-2)).norm(dim=-1).mean(-1)
    radius_b = (orbit_b - centroid_b.unsqueeze(-2)).norm(dim=-1).mean(-1)
    return distance_sq, 0.5 * (radius_a + radius_b)


def orbit_pair_kernels(kernel: Tensor, n_poses: int, orbits_a: Tensor, orbits_b: Tensor) -> Tensor:
    """Interleaved two-orbit kernels of orbit pairs, cut out of one Gram matrix of many orbits.

    kernel [M*N, M*N] over M orbits of N = n_poses points, orbit-major (orbit o, pose k at row
    o*N + k); orbits_a, orbits_b int [P] -> [P, 2N, 2N] with orbit a at even, b at odd indices.
    Cutting pairs out of one Gram matrix costs one kernel evaluation per point, not per pair.
    """
    n = _check_square(kernel)
    if n % n_poses:
        raise OrbitbenchError(f"kernel size {n} is not a multiple of n_poses={n_poses}")
    m = n // n_poses
    blocks = kernel.reshape(m, n_poses, m, n_poses).permute(0, 2, 1, 3)  # [M, M, N, N]
    a, b = orbits_a.long(), orbits_b.long()
    top = torch.stack([blocks[a, a], blocks[a, b]], dim=-1)  # [P, N, N, 2] rows of orbit a
    bottom = torch.stack([blocks[b, a], blocks[b, b]], dim=-1)  # rows of orbit b
    interleaved = torch.stack([top, bottom], dim=2)  # [P, N (k), 2 (row orbit), N (l), 2 (col orbit)]
    return interleaved.reshape(a.numel(), 2 * n_poses, 2 * n_poses)


def _class_block_pairs(n_a: int, n_b: int, device) -> tuple[Tensor, Tensor]:
    grid_a, grid_b = torch.meshgrid(
        torch.arange(n_a, device=device), n_a + torch.arange(n_b, device=device), indexing="ij"
    )
    return grid_a.reshape(-1), grid_b.reshape(-1)


def pair_averaged_spectral_error(
    kernel: Tensor, n_poses: int, n_orbits_a: int, reg: float = 0.0, chunk: int = 4096
) -> Tensor:
    """Several seeds per class (paper section 3.4): spectral error of every (orbit of A, orbit of B)
    pair of the circularized pair kernels, averaged; a scalar.

    kernel [M*N, M*N] orbit-major with the first `n_orbits_a` orbits of class A, the rest class B.
    """
    m = kernel.shape[-1] // n_poses
    pairs_a, pairs_b = _class_block_pairs(n_orbits_a, m - n_orbits_a, kernel.device)
    errors = [
        spectral_error(circularize(orbit_pair_kernels(kernel, n_poses, pa, pb)), reg)
        for pa, pb in zip(pairs_a.split(chunk), pairs_b.split(chunk))
    ]
    return torch.cat(errors).mean()


def seeds_exact_error(kernel: Tensor, n_poses: int, n_orbits_a: int, reg: float = 1e-10) -> Tensor:
    """Exact side of the several-seeds experiment (docs/THEORY.md §5); a scalar.

    One regression over all orbits (class A labelled +1, class B -1) with pose 0 of every orbit of
    A left out: error `1 - mean prediction`; symmetrized by doing the same for class B.
    """
    n = _check_square(kernel)
    m = n // n_poses
    labels = torch.ones(n, dtype=kernel.dtype, device=kernel.device)
    labels[n_orbits_a * n_poses :] = -1.0
    upright = torch.arange(m, device=kernel.device) * n_poses  # pose 0 of every orbit
    upright_a, upright_b = upright[:n_orbits_a], upright[n_orbits_a:]
    error_a = 1.0 - kernel_regression(kernel, labels, upright_a, reg).mean()
    error_b = 1.0 + kernel_regression(kernel, labels, upright_b, reg).mean()
    return 0.5 * (error_a + error_b)


def one_vs_many_accuracy(pair_predictions: Tensor) -> Tensor:
    """Ten-class spectral accuracy (docs/THEORY.md §5) from pair predictions [C, S, C, S] -> [C].

    `pair_predictions[A, s, B, t]` is `1 - spectral_error` of orbit s of class A (label +1) against
    orbit t of class B. An orbit of A counts as correct iff, for every B != A, the mean over t is
    > 0; the result is the fraction of correct orbits per leave-out class A.
    """
    if pair_predictions.ndim != 4 or pair_predictions.shape[0] != pair_predictions.shape[2]:
        raise OrbitbenchError(f"pair predictions shape {tuple(pair_predictions.shape)} is not [C, S, C, S]")
    n_classes = pair_predictions.shape[0]
    mean_over_b = pair_predictions.mean(-1)  # [C (A), S, C (B)]
    other = ~torch.eye(n_classes, dtype=torch.bool, device=pair_predictions.device)  # [A, B]
    correct = ((mean_over_b > 0) | ~other[:, None, :]).all(-1)  # [C, S]
    return correct.to(pair_predictions.dtype).mean(-1)
