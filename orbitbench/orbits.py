"""Cyclic group actions on images: the orbits whose poses a network sees only in part.

Every action is batched over images and per-sample poses and runs on the device of its input, so
poses can be generated per training batch instead of stored. Lookup tables (sampling grids, pixel
permutations, shift matrices) are built once per (n, size, options, device, dtype) and reused.

Exactness matters for the theory (the kernel of an exact orbit is circulant): rotations by
multiples of 90 degrees and translations by whole pixels are exact pixel permutations; other poses
are interpolated, and `circulant_defect` shows what that costs.
"""

from __future__ import annotations

import inspect
import math
import warnings
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from orbitbench.errors import OrbitbenchError

INTERPOLATIONS = ("bilinear", "nearest", "cubic")
NORMALIZATIONS = ("unit_norm", "sphere", "none")
MAX_ORDER = 360


class GroupAction:
    """The cyclic group C_n acting on [B, H, W] images; pose k is the generator applied k times.

    A new action: a subclass with its `kind`, `_pose_all` and (if some orders are pixel
    permutations) `exact_kind`, registered with `@register_group`; its constructor takes the order
    and keyword options. The experiments take it by kind (`--group flip`) or import path.
    """

    kind: str = ""
    default_orders: ClassVar[tuple[int, ...]] = ()  # the orders an experiment uses when given none

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ORDER:
            raise OrbitbenchError(f"group order n={n!r} is invalid: expected an integer in 1..{MAX_ORDER}")
        self.n = n

    def apply(self, images: Tensor, poses: Tensor) -> Tensor:
        """Pose `poses[b]` of `images[b]`: [B, H, W], int64 [B] -> [B, H, W].

        Images are grouped by pose so each pose is one batched call (at most n calls), which
        keeps memory traffic at the size of the batch instead of per-sample lookup tables.
        """
        out = torch.empty_like(images)
        for k in torch.unique(poses).tolist():
            members = torch.nonzero(poses == k).squeeze(1)
            out[members] = self._pose_all(images[members], k)
        return out

    def pose(self, images: Tensor, k: int) -> Tensor:
        """Pose k of every image: [B, H, W] -> [B, H, W]."""
        if not 0 <= k < self.n:
            raise OrbitbenchError(f"pose index {k} is out of range for a group of order {self.n}: expected 0..{self.n - 1}")
        return self._pose_all(images, k)

    def orbit(self, images: Tensor) -> Tensor:
        """All n poses of every image: [B, H, W] -> [B, n, H, W]."""
        return torch.stack([self._pose_all(images, k) for k in range(self.n)], dim=1)

    def _pose_all(self, images: Tensor, k: int) -> Tensor:
        """Pose k (a valid index) of a whole batch: [B, H, W] -> [B, H, W]."""
        raise NotImplementedError

    def exact_kind(self, height: int, width: int) -> str | None:
        """The kind of pixel permutation every pose is on [H, W] images, or None if some pose is not one.

        "circular_shift" (whole-pixel rolls) or "rot90" (quarter and half turns): what kernels
        declare invariances against (`kernels.JOINT_INVARIANCES`), decided without looking at data.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


GROUPS: dict[str, type[GroupAction]] = {}


def register_group(cls: type[GroupAction]) -> type[GroupAction]:
    """Class decorator: make an action known by its `kind` (`make_group`, the experiments' `--group`)."""
    if not cls.kind or GROUPS.get(cls.kind, cls) is not cls:
        raise OrbitbenchError(f"group action {cls.__name__}: kind {cls.kind!r} is empty or already registered")
    GROUPS[cls.kind] = cls
    return cls


@register_group
class Rotation(GroupAction):
    """Counter-clockwise rotations by 360*k/n degrees about the image centre, zero padding.

    The direction matches `torch.rot90(x, k, dims=(-2, -1))` and torchvision's `rotate`.
    Multiples of 90 degrees are exact permutations; other angles use `interpolation`: bilinear
    (default), nearest (the paper's training script) or cubic, the paper's kernel code's
    `scipy.ndimage.rotate(order=3, reshape=False)` (B-spline prefilter with mirror boundaries,
    cubic B-spline sampling, zero outside the image), batched in torch.
    """

    kind = "rotation"
    default_orders = (2, 4, 8, 16)

    def __init__(self, n: int, interpolation: str = "bilinear") -> None:
        super().__init__(n)
        if interpolation not in INTERPOLATIONS:
            raise OrbitbenchError(f"interpolation={interpolation!r} is invalid: expected one of {', '.join(INTERPOLATIONS)}")
        self.interpolation = interpolation

    def apply(self, images: Tensor, poses: Tensor) -> Tensor:
        batch, height, width = images.shape
        tables = _rotation_tables(self.n, height, width, images.device, images.dtype)
        exact = tables.exact[poses]
        if self.interpolation == "cubic" and not exact.all():
            return super().apply(images, poses)  # one sparse product per pose present
        if self.interpolation == "nearest" or exact.all():
            return _zero_padded(images).gather(1, tables.nearest[poses]).view_as(images)
        out = F.grid_sample(
            images.unsqueeze(1), tables.grids[poses], mode="bilinear", padding_mode="zeros", align_corners=False
        ).view_as(images)  # [B, 1, H, W] -> [B, H, W]
        if exact.any():  # bilinear weights in float32 are not exactly 0/1 at pixel centres
            out[exact] = images[exact].flatten(1).gather(1, tables.nearest[poses[exact]]).view(-1, height, width)
        return out

    def orbit(self, images: Tensor) -> Tensor:
        # One sampling call for all poses: the n grids stacked along the height, [1, n*H, W, 2].
        batch, height, width = images.shape
        tables = _rotation_tables(self.n, height, width, images.device, images.dtype)
        if self.interpolation == "nearest" or tables.exact.all():
            return _zero_padded(images).index_select(1, tables.nearest.flatten()).view(batch, self.n, height, width)
        if self.interpolation == "cubic":
            return self._cubic(images, torch.arange(self.n, device=images.device), tables)
        tall_grid = tables.grids.reshape(1, self.n * height, width, 2).expand(batch, -1, -1, -1)
        out = F.grid_sample(images.unsqueeze(1), tall_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.view(batch, self.n, height, width)
        exact = torch.nonzero(tables.exact).squeeze(1)
        if exact.numel():
            out[:, exact] = images.flatten(1).index_select(1, tables.nearest[exact].flatten()).view(batch, -1, height, width)
        return out

    def _pose_all(self, images: Tensor, k: int) -> Tensor:
        if self.interpolation == "cubic":
            tables = _rotation_tables(self.n, *images.shape[1:], images.device, images.dtype)
            if not tables.exact[k]:
                return self._cubic(images, torch.tensor([k], device=images.device), tables)[:, 0]
        return self.apply(images, torch.full((images.shape[0],), k, dtype=torch.long, device=images.device))

    def _cubic(self, images: Tensor, poses: Tensor, tables: RotationTables) -> Tensor:
        """Cubic-spline poses `poses` [m] of every image: [B, H, W] -> [B, m, H, W] (exact ones permuted)."""
        batch, height, width = images.shape
        rows, cols, operators = _cubic_tables(self.n, height, width, images.device, images.dtype)
        coefficients = (rows @ images @ cols.T).flatten(1)  # [B, H*W]: mirror-boundary B-spline coefficients
        out = torch.stack([(operators[k] @ coefficients.T).T for k in poses.tolist()], dim=1)  # [B, m, H*W]
        exact = tables.exact[poses]
        if exact.any():
            out[:, exact] = images.flatten(1).index_select(1, tables.nearest[poses[exact]].flatten()).view(batch, -1, height * width)
        return out.view(batch, -1, height, width)

    def exact_kind(self, height: int, width: int) -> str | None:
        return "rot90" if bool(_rotation_tables(self.n, height, width, torch.device("cpu"), torch.float32).exact.all()) else None

    def __repr__(self) -> str:
        return f"Rotation(n={self.n}, interpolation={self.interpolation!r})"


@register_group
class Translation(GroupAction):
    """Circular shifts by size*k/n pixels along `axis` ("x": rightwards, "y": downwards).

    Whole-pixel shifts are exact permutations; fractional shifts (n not dividing the size) are
    band-limited Fourier shifts, the unitary interpolation that keeps shifts commuting.
    """

    kind = "translation"
    default_orders = (2, 4, 7, 14)

    def __init__(self, n: int, axis: str = "x") -> None:
        super().__init__(n)
        if axis not in ("x", "y"):
            raise OrbitbenchError(f"axis={axis!r} is invalid: expected 'x' or 'y'")
        self.axis = axis

    def _pose_all(self, images: Tensor, k: int) -> Tensor:
        dim = -1 if self.axis == "x" else -2
        size = images.shape[dim]
        if (size * k) % self.n == 0:
            return torch.roll(images, size * k // self.n, dims=dim)  # whole pixels: exact
        shift = _fourier_shift_matrix(size * k / self.n, size, images.device, images.dtype)  # [size, size]
        if self.axis == "x":
            return images @ shift.T  # rows of pixels along the width
        return shift @ images

    def exact_kind(self, height: int, width: int) -> str | None:
        return "circular_shift" if (width if self.axis == "x" else height) % self.n == 0 else None

    def __repr__(self) -> str:
        return f"Translation(n={self.n}, axis={self.axis!r})"


def make_group(kind: str | type[GroupAction], n: int, **options: Any) -> GroupAction:
    """`make_group("rotation", 8, interpolation="nearest")` -> Rotation(8, "nearest").

    `kind`: a registered kind or the class itself. Options the action does not take are left out,
    so one set of options (an experiment's interpolation, say) serves every action.
    """
    if isinstance(kind, str):
        if kind not in GROUPS:
            raise OrbitbenchError(f"group kind {kind!r} is unknown: expected one of {', '.join(GROUPS)}")
        kind = GROUPS[kind]
    accepted = inspect.signature(kind.__init__).parameters
    return kind(n, **{k: v for k, v in options.items() if k in accepted})


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
        ((i[None, :] - i[:, None]) % n).expand(*kernel.shape[:-2], n, n),  # [i, j] -> (j - i) mod n
    )


def circulant_defect(gram: Tensor) -> Tensor:
    """Relative Frobenius distance of a Gram matrix to its circularization: [..., n, n] -> [...].

    0 for the orbit of an exact action (the kernel theory assumes it); interpolation makes it
    positive, and this says by how much.
    """
    residual = torch.linalg.matrix_norm(gram - circularize(gram))
    return residual / torch.linalg.matrix_norm(gram).clamp_min(torch.finfo(gram.dtype).tiny)


class RotationTables(NamedTuple):
    grids: Tensor  # [n, H, W, 2] grid_sample coordinates of the source of every output pixel
    nearest: Tensor  # int64 [n, H*W] flat index of the nearest source pixel; H*W = outside (zero)
    exact: Tensor  # bool [n]: the pose is a pixel permutation (multiples of 90 degrees)


def _source_coordinates(n: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """float64 [n, H, W] row and column an output pixel of each pose reads (inverse rotation).

    The same map as `scipy.ndimage.rotate(image, 360 * k / n)`: input = R (output - centre) + centre.
    """
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    row, col = torch.meshgrid(rows, cols, indexing="ij")  # [H, W] each
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    x, y = col - centre_col, centre_row - row  # y points up, so positive angles turn counter-clockwise
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]  # [n, 1, 1]
    return centre_row - (-sin * x + cos * y), cos * x + sin * y + centre_col  # [n, H, W] each


@lru_cache(maxsize=64)
def _rotation_tables(n: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> RotationTables:
    """Lookup tables of the C_n rotations, built once per (n, size, device, dtype).

    An output pixel of pose k reads the input at the inversely rotated position (computed in
    float64). Nearest indices are rounded from the float32 coordinates exactly as `grid_sample`
    rounds them, so nearest poses equal torchvision's `rotate`; poses whose sources all land on
    pixel centres are flagged exact.
    """
    source_row, source_col = _source_coordinates(n, height, width)
    exact = (
        ((source_row - source_row.round()).abs() < 1e-6) & ((source_col - source_col.round()).abs() < 1e-6)
    ).flatten(1).all(dim=1)  # [n]
    grids = torch.stack(  # align_corners=False: pixel centre i sits at (2i + 1) / size - 1
        ((2 * source_col + 1) / width - 1, (2 * source_row + 1) / height - 1), dim=-1
    ).to(torch.float32)
    # grid_sample's own unnormalisation and round-half-to-even, in float32.
    nearest_col = torch.round(((grids[..., 0] + 1) * width - 1) / 2)
    nearest_row = torch.round(((grids[..., 1] + 1) * height - 1) / 2)
    inside = (nearest_row >= 0) & (nearest_row < height) & (nearest_col >= 0) & (nearest_col < width)
    nearest = torch.where(inside, nearest_row * width + nearest_col, height * width).long().flatten(1)
    exact &= inside.flatten(1).all(dim=1)
    return RotationTables(grids.to(device, dtype), nearest.to(device), exact.to(device))


def _mirror_prefilter(size: int) -> Tensor:
    """[L, L] float64 matrix mapping samples to cubic B-spline coefficients, mirror boundaries.

    Inverts y_i = (c_(i-1) + 4 c_i + c_(i+1)) / 6 with c_(-i) = c_i and c_(L-1+i) = c_(L-1-i), the
    system scipy's `spline_filter` solves recursively for mode "constant" and "mirror".
    """
    system = torch.zeros(size, size, dtype=torch.float64)
    i = torch.arange(size)
    for offset, weight in ((-1, 1 / 6), (0, 4 / 6), (1, 1 / 6)):
        system.index_put_((i, _mirror(i + offset, size)), torch.full((size,), weight, dtype=torch.float64), accumulate=True)
    return torch.linalg.inv(system)


def _mirror(index: Tensor, size: int) -> Tensor:
    """Whole-sample mirror of int64 indices into 0..size-1 (-1 -> 1, size -> size - 2)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


@lru_cache(maxsize=16)
def _cubic_tables(n: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Prefilters [H, H], [W, W] and per-pose sparse CSR sampling operators [H*W, H*W].

    An output pixel whose source lies outside [0, H-1] x [0, W-1] is zero (scipy's mode
    "constant"); inside, it weighs 4 x 4 coefficients by cubic B-splines, mirrored at the edges.
    """
    source_row, source_col = _source_coordinates(n, height, width)  # [n, H, W]
    operators = []
    for k in range(n):
        r, c = source_row[k].flatten(), source_col[k].flatten()  # [H*W]
        inside = (r >= 0) & (r <= height - 1) & (c >= 0) & (c <= width - 1)
        r0, c0 = torch.floor(r), torch.floor(c)
        weight_r, weight_c = _bspline_weights(r - r0), _bspline_weights(c - c0)  # [H*W, 4]
        taps = torch.arange(-1, 3, dtype=torch.float64)
        index_r = _mirror((r0[:, None] + taps).long(), height)  # [H*W, 4]
        index_c = _mirror((c0[:, None] + taps).long(), width)
        weights = (weight_r[:, :, None] * weight_c[:, None, :]).flatten(1)  # [H*W, 16]
        columns = (index_r[:, :, None] * width + index_c[:, None, :]).flatten(1)  # [H*W, 16]
        pixel = torch.arange(height * width)[:, None].expand(-1, 16)
        keep = inside[:, None].expand(-1, 16)
        dense = torch.zeros(height * width, height * width, dtype=torch.float64)
        dense.index_put_((pixel[keep], columns[keep]), weights[keep], accumulate=True)  # mirrored taps may coincide
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matrix products are all we use
            warnings.simplefilter("ignore", UserWarning)
            operators.append(dense.to(dtype).to_sparse_csr().to(device))
    rows, cols = _mirror_prefilter(height), _mirror_prefilter(width)
    return rows.to(device, dtype), cols.to(device, dtype), operators


def _bspline_weights(t: Tensor) -> Tensor:
    """Cubic B-spline weights of the taps floor - 1 .. floor + 2 at fractions t [M] -> [M, 4]."""
    return torch.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], dim=-1) / 6


def _zero_padded(images: Tensor) -> Tensor:
    """[B, H, W] -> [B, H*W + 1]: flat pixels and one zero that outside-the-image indices read."""
    return F.pad(images.flatten(1), (0, 1))


@lru_cache(maxsize=256)
def _fourier_shift_matrix(shift: float, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[size, size] real matrix S with S @ v = v shifted circularly by a fractional `shift` pixels.

    The real part of the band-limited Fourier shift operator, built in float64: a circulant matrix,
    so fractional shifts commute with each other and with whole-pixel rolls.
    """
    frequencies = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)  # integer frequencies
    phase = torch.exp(-2j * math.pi * frequencies * shift / size)
    identity = torch.eye(size, dtype=torch.float64)
    operator = torch.fft.ifft(phase[:, None] * torch.fft.fft(identity, dim=0), dim=0)
    return operator.real.to(device, dtype)
