"""Spectral theory of kernel regression on orbits (paper Eq. 7, Eq. 12, App. A.1).

Pure torch, batched over leading dimensions, float64 by default: THEORY.md shows that float32
rounding destroys the exactly circulant structure these formulas rely on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def circularize(kernel: Tensor) -> Tensor:
    """Average each wrapped diagonal of `kernel` (Eq. 12): the nearest circulant matrix.

    [..., n, n] -> [..., n, n]; `c_d = mean_i K[i, (i + d) mod n]`, `K_circ[i, j] = c_{(j - i) mod n}`.
    """
    n = kernel.shape[-1]
    i = torch.arange(n, device=kernel.device)
    offsets = (i[None, :] + i[:, None]) % n  # [n (row i), n (offset d)] -> column (i + d) mod n
    wrapped = torch.gather(kernel, -1, offsets.expand(*kernel.shape[:-2], n, n))  # [..., i, d]
    diagonal_means = wrapped.mean(dim=-2)  # [..., d]
    return torch.gather(
        diagonal_means.unsqueeze(-2).expand(*kernel.shape[:-2], n, n),
        -1,
        (i[None, :] - i[:, None]) % n,  # [i, j] -> (j - i) mod n
    )
