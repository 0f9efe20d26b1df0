"""Cyclic group actions on images: the orbits whose poses a network sees only in part.

Every action is batched over images and per-sample poses and runs on the device of its input, so
poses can be generated per training batch instead of stored. Lookup tables (sampling grids, pixel
permutations, shift matrices) are built once per (n, size, options, device, dtype) and reused.

Exactness matters for the theory (the kernel of an exact orbit is circulant): rotations by
multiples of 90 degrees and translations by whole pixels are exact pixel permutations; other poses
are interpolated, and `circulant_defect` shows what that costs.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from orbitbench.errors import OrbitbenchError

INTERPOLATIONS = ("bilinear", "nearest")
NORMALIZATIONS = ("unit_norm", "sphere", "none")
MAX_ORDER = 360


class GroupAction:
    """The cyclic group C_n acting on [B, H, W] images; pose k is the generator applied k times."""

    kind: str = ""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ORDER:
            raise OrbitbenchError(f"group order n={n!r} is invalid: expected an integer in 1..{MAX_ORDER}")
        self.n = n

    def apply(self, images: Tensor, poses: Tensor) -> Tensor:
        """Pose `poses[b]` of `images[b]`: [B, H, W], int64 [B] -> [B, H, W]."""
        raise NotImplementedError

    def pose(self, images: Tensor, k: int) -> Tensor:
        """Pose k of every image: [B, H, W] -> [B, H, W]."""
        if not 0 <= k < self.n:
            raise OrbitbenchError(f"pose index {k} is out of range for a group of order {self.n}: expected 0..{self.n - 1}")
        return self.apply(images, torch.full((images.shape[0],), k, dtype=torch.long, device=images.device))

    def orbit(self, images: Tensor) -> Tensor:
        """All n poses of every image: [B, H, W] -> [B, n, H, W]."""
        batch = images.shape[0]
        poses = torch.arange(self.n, device=images.device).repeat(batch)  # [B*n], pose-major within image
        posed = self.apply(images.repeat_interleave(self.n, dim=0), poses)  # [B*n, H, W]
        return posed.reshape(batch, self.n, *images.shape[1:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


class Rotation(GroupAction):
    """Counter-clockwise rotations by 360*k/n degrees about the image centre, zero padding.

    The direction matches `torch.rot90(x, k, dims=(-2, -1))` and torchvision's `rotate`.
    Multiples of 90 degrees are exact permutations; other angles use `interpolation`
    (bilinear by default; nearest as in the paper's training script).
    """

    kind = "rotation"

    def __init__(self, n: int, interpolation: str = "bilinear") -> None:
        super().__init__(n)
        if interpolation not in INTERPOLATIONS:
            raise OrbitbenchError(f"interpolation={interpolation!r} is invalid: expected one of {', '.join(INTERPOLATIONS)}")
        self.interpolation = interpolation

    def apply(self, images: Tensor, poses: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        grids, permutations, exact = _rotation_tables(self.n, height, width, images.device, images.dtype)
        out = torch.empty_like(images)
        is_exact = exact[poses]
        if is_exact.any():
            flat = images[is_exact].flatten(1)  # [b, H*W]
            out[is_exact] = torch.gather(flat, 1, permutations[poses[is_exact]]).view(-1, height, width)
        if not is_exact.all():
            rest = ~is_exact
            sampled = F.grid_sample(
                images[rest].unsqueeze(1),  # [b, 1, H, W]
                grids[poses[rest]],  # [b, H, W, 2]
                mode=self.interpolation,
                padding_mode="zeros",
                align_corners=False,
            )
            out[rest] = sampled.squeeze(1)
        return out

    def __repr__(self) -> str:
        return f"Rotation(n={self.n}, interpolation={self.interpolation!r})"


class Translation(GroupAction):
    """Circular shifts by size*k/n pixels along `axis` ("x": rightwards, "y": downwards).

    Whole-pixel shifts are exact permutations; fractional shifts (n not dividing the size) are
    band-limited Fourier shifts, the unitary interpolation that keeps shifts commuting.
    """

    kind = "translation"

    def __init__(self, n: int, axis: str = "x") -> None:
        super().__init__(n)
        if axis not in ("x", "y"):
            raise OrbitbenchError(f"axis={axis!r} is invalid: expected 'x' or 'y'")
        self.axis = axis

    def apply(self, images: Tensor, poses: Tensor) -> Tensor:
        size = images.shape[-1] if self.axis == "x" else images.shape[-2]
        shifts = _shift_matrices(self.n, size, images.device, images.dtype)[poses]  # [B, size, size]
        if self.axis == "x":
            return torch.einsum("bhw,bvw->bhv", images, shifts)
        return torch.einsum("bhw,bvh->bvw", images, shifts)

    def __repr__(self) -> str:
        return f"Translation(n={self.n}, axis={self.axis!r})"


GROUPS = {"rotation": Rotation, "translation": Translation}


def make_group(kind: str, n: int, **options) -> GroupAction:
    """`make_group("rotation", 8, interpolation="nearest")` -> Rotation(8, "nearest")."""
    if kind not in GROUPS:
        raise OrbitbenchError(f"group kind {kind!r} is unknown: expected one of {', '.join(GROUPS)}")
    return GROUPS[kind](n, **options)


def orbit(images: Tensor, group: GroupAction) -> Tensor:
    """All poses of every image under `group`: [B, H, W] -> [B, n, H, W]."""
    return group.orbit(images)


def normalize(images: Tensor, mode: str) -> Tensor:
    """Per-image normalisation over the last two dims.

    `unit_norm` scales to unit L2 norm (the paper's training data, applied before the action);
    `sphere` removes the mean then scales to unit norm (its kernel experiments, after the action).
    """
    if mode not in NORMALIZATIONS:
        raise OrbitbenchError(f"normalize={mode!r} is invalid: expected one of {', '.join(NORMALIZATIONS)}")
    if mode == "none":
        return images
    if mode == "sphere":
        images = images - images.mean(dim=(-2, -1), keepdim=True)
    norms = torch.linalg.vector_norm(images, dim=(-2, -1), keepdim=True)
    return images / norms.clamp_min(torch.finfo(images.dtype).tiny)


def orbit_gram(images: Tensor, group: GroupAction) -> Tensor:
    """Gram matrix of each image's orbit: [B, H, W] -> [B, n, n] (inner products of poses)."""
    poses = group.orbit(images).flatten(2)  # [B, n, H*W]
    return poses @ poses.transpose(1, 2)


def circulant_defect(gram: Tensor) -> Tensor:
    """Relative Frobenius distance of a Gram matrix to its circularization: [..., n, n] -> [...].

    0 for the orbit of an exact action (the kernel theory assumes it); interpolation makes it
    positive, and this says by how much.
    """
    from orbitbench.spectral import circularize

    residual = torch.linalg.matrix_norm(gram - circularize(gram))
    return residual / torch.linalg.matrix_norm(gram).clamp_min(torch.finfo(gram.dtype).tiny)


@lru_cache(maxsize=64)
def _rotation_tables(
    n: int, height: int, width: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Sampling grids [n, H, W, 2], permutations [n, H*W] and exactness flags [n] of C_n rotations.

    Computed in float64: an output pixel of pose k reads the input at the inversely rotated
    position. Poses whose source positions all land on pixel centres (multiples of 90 degrees on
    a square image) become exact permutations.
    """
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    row, col = torch.meshgrid(rows, cols, indexing="ij")  # [H, W] each
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    x, y = col - centre_col, centre_row - row  # y points up, so positive angles turn counter-clockwise
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]  # [n, 1, 1]
    source_col = cos * x + sin * y + centre_col  # [n, H, W]
    source_row = centre_row - (-sin * x + cos * y)
    grids = torch.stack(  # align_corners=False: pixel centre i sits at (2i + 1) / size - 1
        ((2 * source_col + 1) / width - 1, (2 * source_row + 1) / height - 1), dim=-1
    )
    nearest_row, nearest_col = source_row.round(), source_col.round()
    on_centres = ((source_row - nearest_row).abs() < 1e-6) & ((source_col - nearest_col).abs() < 1e-6)
    inside = (nearest_row >= 0) & (nearest_row < height) & (nearest_col >= 0) & (nearest_col < width)
    exact = (on_centres & inside).flatten(1).all(dim=1)  # [n]
    permutations = (nearest_row.clamp(0, height - 1) * width + nearest_col.clamp(0, width - 1)).long()
    return grids.to(device, dtype), permutations.flatten(1).to(device), exact.to(device)


@lru_cache(maxsize=64)
def _shift_matrices(n: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[n, size, size] matrices S_k with (S_k v)[i] = v shifted circularly by size*k/n at i.

    Whole-pixel shifts are built as permutation matrices (exact 0/1 entries); fractional ones as
    the real part of the Fourier shift operator, computed in float64.
    """
    matrices = torch.empty(n, size, size, dtype=torch.float64)
    index = torch.arange(size)
    frequencies = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)  # integer frequencies
    for k in range(n):
        shift = size * k / n
        if (size * k) % n == 0:
            permutation = torch.zeros(size, size, dtype=torch.float64)
            permutation[index, (index - int(shift)) % size] = 1.0  # out[i] = in[i - shift]
            matrices[k] = permutation
        else:
            phase = torch.exp(-2j * math.pi * frequencies * shift / size)
            operator = torch.fft.ifft(phase[:, None] * torch.fft.fft(torch.eye(size, dtype=torch.float64), dim=0), dim=0)
            matrices[k] = operator.real
    return matrices.to(device, dtype)
