"""The exact fast path of the at-scale regression (docs/THEORY.md §10): whole orbits, an FFT over poses.

When every pose is an exact pixel permutation (rotations by multiples of 90 degrees, cyclic
whole-pixel shifts) and the kernel is invariant under it, `k(g^p x, g^q y) = k(x, g^(q-p) y)`: the
kernel over M whole orbits, pose-major (row p*M + i is pose p of digit i), is block-circulant,
`K[p, q] = C_{(q-p) mod n}` with `C_d = K(X_0, X_d)` [M, M]. Only `C_0 .. C_{n/2}` are computed
(`C_{n-d} = C_d^T`), and the DFT over poses splits `K + r I` into n/2 + 1 independent systems
`Lambda_k = sum_d C_d exp(2 pi i d k / n) + r I` (Hermitian; real at k = 0 and n/2).

The sample is drawn among digits without an in-test pair, so the orbits hold only one kind of pose
the network never trained on, the held-out poses of the leave-out class (none of whose orbits is
whole): they are removed exactly with the block leave-out formula. With `A = K + r I`
over all orbit points and S the removed points, `w = A^-1 y - A^-1 E_S [(A^-1)_SS]^-1 (A^-1 y)_S`
vanishes on S and solves `A_OO w_O = y_O` on the training points O, so `K(x*, all) w` is the
regression on O alone, whatever y_S is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError
from orbitbench.splits import PartialOrbits

__all__ = ["invariance_defect", "orbit_digits", "orbit_regression", "orbits_for_points"]

# (images [A, ...], images [B, ...] or None) -> float64 [A, B] (None: the symmetric Gram matrix)
Gram = Callable[[Tensor, Tensor | None], Tensor]
INVARIANCE_TOLERANCE = 1e-9


def _poses(dm: PartialOrbits, digits: Tensor, pose: int) -> Tensor:
    with torch.no_grad():
        return dm.materialize(digits, torch.full_like(digits, pose)).detach().cpu()


def invariance_defect(gram: Gram, dm: PartialOrbits, digits: Tensor) -> float:
    """max over p, q of |K(g^p X, g^q X) - K(X, g^(q-p) X)| / max |K| on a few digits (0: exact)."""
    n = int(dm.n_poses)
    posed = [_poses(dm, digits, p) for p in range(n)]
    base = [gram(posed[0], posed[d]) for d in range(n)]
    scale = max(float(b.abs().max()) for b in base)
    worst = 0.0
    for p in range(1, n):
        for q in range(n):
            worst = max(worst, float((gram(posed[p], posed[q]) - base[(q - p) % n]).abs().max()) / scale)
    return worst


def check_exact(gram: Gram, dm: PartialOrbits, digits: Tensor) -> str | None:
    """None when the orbit solve is exact here, else one line saying why not."""
    defect = invariance_defect(gram, dm, digits[:8])
    if defect > INVARIANCE_TOLERANCE:
        return (f"the kernel is not invariant under the poses (relative change {defect:.1e} > "
                f"{INVARIANCE_TOLERANCE:g}): the poses are not exact pixel permutations, or the kernel "
                "is not invariant")  # fmt: skip
    return None


def orbit_digits(dm: PartialOrbits, seed: int, draw: int = 0) -> Tensor:
    """A seeded permutation of the digits whose orbits are whole training orbits but for the held-out
    poses (no in-test pair): the sample is nested (the first M of it), and the leave-out formula has
    only the held-out poses of the leave-out class to remove."""
    with_test = torch.zeros(len(dm.digits.labels), dtype=torch.bool)
    with_test[dm.splits["in_test"][:, 0]] = True
    digits = torch.unique(dm.splits["train"][:, 0])
    digits = digits[~with_test[digits]]
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(digits), generator=generator) for _ in range(draw + 1)]
    return digits[orders[draw]]


def orbits_for_points(dm: PartialOrbits, digits: Tensor, points: int) -> int:
    """The fewest leading digits of `digits` whose orbits hold at least `points` training pairs (all of
    them where they hold fewer): m is then never below the size asked for."""
    counts = torch.bincount(dm.splits["train"][:, 0], minlength=len(dm.digits.labels))[digits]
    held = torch.cumsum(counts, 0)  # held[i]: training pairs of the first i + 1 digits
    return min(len(digits), int(torch.searchsorted(held, points)) + 1)


def _factor(blocks: list[Tensor], n: int, ridge: float) -> list[tuple[Tensor, bool]]:
    """Cholesky factors of Lambda_k + r I for k = 0 .. n // 2 (real where the imaginary part vanishes)."""
    block = lambda d: blocks[d] if d <= n // 2 else blocks[n - d].T  # noqa: E731  C_d [M, M]
    out = []
    for k in range(n // 2 + 1):
        real = k == 0 or 2 * k == n
        lam = sum((block(d) * math.cos(2 * math.pi * d * k / n) for d in range(1, n)), blocks[0].clone())
        if not real:  # imaginary part: sum_d C_d sin(2 pi d k / n), antisymmetric
            lam = torch.complex(lam, sum(block(d) * math.sin(2 * math.pi * d * k / n) for d in range(1, n)))
        lam.diagonal().add_(ridge)
        factor, info = torch.linalg.cholesky_ex(lam)
        if int(info) != 0:
            raise OrbitbenchError(f"orbit solve: the kernel plus ridge is not positive definite (frequency {k})")
        out.append((factor, real))
    return out


def _solve(factors: list[tuple[Tensor, bool]], rhs: Tensor) -> Tensor:
    """A^-1 rhs for rhs [n, M, R] (pose-major), through the DFT over poses."""
    n = rhs.shape[0]
    spectrum = torch.fft.rfft(rhs, dim=0)  # [n//2+1, M, R] complex
    solved = []
    for k, (factor, real) in enumerate(factors):
        if real:
            solved.append(torch.cholesky_solve(spectrum[k].real.contiguous(), factor).to(spectrum.dtype))
        else:
            solved.append(torch.cholesky_solve(spectrum[k], factor))
    return torch.fft.irfft(torch.stack(solved), n=n, dim=0)  # [n, M, R]


def orbit_regression(gram: Gram, dm: PartialOrbits, digits: Tensor, sizes: Sequence[int], test_images: Tensor,
                     reg: float) -> dict[int, Tensor]:  # fmt: skip
    """Outputs [U, C] at `test_images` of the ridge regression on the training pairs of the first M
    digits, for each M in `sizes` (nested): training-point count -> outputs."""
    n, top = int(dm.n_poses), max(sizes)
    digits = digits[:top]
    posed = [_poses(dm, digits, p) for p in range(n)]  # n x [M, 1, H, W]
    blocks = [gram(posed[0], None)] + [gram(posed[0], posed[d]) for d in range(1, n // 2 + 1)]  # C_0 .. C_{n/2}
    k_test = torch.stack([gram(test_images, posed[p]) for p in range(n)])  # [n, U, M]
    table = torch.zeros(len(dm.digits.labels), n, dtype=torch.bool)
    train = dm.splits["train"]
    table[train[:, 0], train[:, 1]] = True
    observed = table[digits].T  # bool [n, M]: pose p of digit i is a training pair
    labels = dm.digits.labels[digits]
    targets = torch.nn.functional.one_hot(labels, int(dm.num_classes)).double()  # [M, C]
    out = {}
    for size in sorted(sizes):
        cut = [c[:size, :size] for c in blocks]
        seen = observed[:, :size]
        ridge = reg * float((torch.diagonal(cut[0])[None, :] * seen).sum())  # reg * trace(K_OO)
        factors = _factor(cut, n, ridge)
        y = (targets[:size][None] * seen[..., None]).expand(n, size, -1).contiguous()  # [n, M, C], 0 on S
        v = _solve(factors, y).reshape(n * size, -1)  # A^-1 y
        held = torch.nonzero(~seen.reshape(-1)).squeeze(1)  # S, flat pose-major indices
        if len(held):
            unit = torch.zeros(n * size, len(held), dtype=torch.float64)
            unit[held, torch.arange(len(held))] = 1.0
            z = _solve(factors, unit.view(n, size, -1)).reshape(n * size, -1)  # A^-1 E_S
            v = v - z @ torch.linalg.solve(z[held], v[held])
        w = v.view(n, size, -1)
        out[int(seen.sum())] = torch.einsum("pum,pmc->uc", k_test[:, :, :size], w)
    return out
