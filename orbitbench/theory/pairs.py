"""Interleaved two-orbit datasets for kernel experiments (docs/THEORY.md §2).

A pair of seed digits `a`, `b` of different classes becomes `x_{2k} = g^k a`, `x_{2k+1} = g^k b`
(k = 0..N-1), every pose demeaned and put on the unit sphere *after* the group action, so that the
labels `(+1, -1, ...)` are the Nyquist mode of the (near-)circulant kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from orbitbench.data import Digits, sample_per_class
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import GroupAction


@dataclass(frozen=True)
class OrbitPairs:
    """P interleaved orbit pairs and where their seeds came from."""

    points: Tensor  # float64 [P, 2N, H, W]: orbit a at even, orbit b at odd indices
    index_a: Tensor  # int64 [P], indices into the source Digits
    index_b: Tensor  # int64 [P]
    label_a: Tensor  # int64 [P], digit classes (always != label_b)
    label_b: Tensor  # int64 [P]
    group: GroupAction

    def __len__(self) -> int:
        return self.points.shape[0]

    def orbits(self) -> tuple[Tensor, Tensor]:
        """The two orbits, flattened for `spectral.orbit_geometry`: each [P, N, H*W]."""
        flat = self.points.flatten(2)  # [P, 2N, H*W]
        return flat[:, 0::2], flat[:, 1::2]


def pose_orbits(images: Tensor, group: GroupAction) -> Tensor:
    """Orbits of digit images, sphere-normalised after the action: [B, H, W] -> float64 [B, N, H, W].

    Means and norms sum sorted values, so an exact pose (a pixel permutation) of a seed is bitwise
    the same permutation of the normalised seed: exact orbits stay exactly circulant.
    """
    pixels = images.to(torch.float64) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float64)
    posed = group.orbit(pixels)  # [B, N, H, W]
    flat = posed.flatten(-2)
    centred = flat - flat.sort(dim=-1).values.sum(-1, keepdim=True) / flat.shape[-1]
    norm = centred.square().sort(dim=-1).values.sum(-1, keepdim=True).sqrt()
    return (centred / norm.clamp_min(torch.finfo(norm.dtype).tiny)).view_as(posed)


def interleave(orbit_a: Tensor, orbit_b: Tensor) -> Tensor:
    """`[B, N, *F]` twice -> `[B, 2N, *F]` with orbit a at even and orbit b at odd indices."""
    if orbit_a.shape != orbit_b.shape or orbit_a.ndim < 2:
        raise OrbitbenchError(f"orbit shapes {tuple(orbit_a.shape)} and {tuple(orbit_b.shape)} differ or are not [B, N, ...]")
    batch, n = orbit_a.shape[:2]
    return torch.stack([orbit_a, orbit_b], dim=2).reshape(batch, 2 * n, *orbit_a.shape[2:])  # [B, N, 2, *F] -> [B, 2N, *F]


def sample_pairs(labels: Tensor, n_pairs: int, seed: int = 124) -> tuple[Tensor, Tensor]:
    """`n_pairs` random (a, b) index pairs with `labels[a] != labels[b]`, reproducible from `seed`.

    Pair p comes from its own generator, seeded by (seed, p): the first k pairs of any run are the
    pairs of a k-pair run. a is uniform over all digits, b uniform over the digits of other classes.
    """
    if n_pairs < 1:
        raise OrbitbenchError(f"n_pairs={n_pairs}: expected a positive integer")
    if labels.unique().numel() < 2:
        raise OrbitbenchError("the digits hold a single class; pairs need two different classes")
    labels = labels.cpu()
    index_a, index_b = torch.empty(n_pairs, dtype=torch.long), torch.empty(n_pairs, dtype=torch.long)
    for p in range(n_pairs):
        generator = np.random.default_rng([seed, p])
        index_a[p] = int(generator.integers(len(labels)))
        others = torch.nonzero(labels != labels[index_a[p]]).squeeze(1)
        index_b[p] = others[int(generator.integers(len(others)))]
    return index_a, index_b


def make_orbit_pairs(digits: Digits, group: GroupAction, n_pairs: int, seed: int = 124) -> OrbitPairs:
    """Random different-class seed pairs from `digits` and their interleaved orbits under `group`."""
    index_a, index_b = sample_pairs(digits.labels, n_pairs, seed)
    points = interleave(pose_orbits(digits.images[index_a], group), pose_orbits(digits.images[index_b], group))
    return OrbitPairs(points, index_a, index_b, digits.labels[index_a], digits.labels[index_b], group)


def class_orbits(
    digits: Digits, group: GroupAction, classes: Sequence[int], per_class: int, seed: int = 124
) -> tuple[Tensor, Tensor]:
    """`per_class` random seed digits of each class and their orbits (several seeds, docs/THEORY.md §5).

    Returns orbits float64 [C, S, N, H, W] (sphere-normalised after the action) and the digit
    indices int64 [C, S].
    """
    chosen = sample_per_class(digits.labels, {label: per_class for label in classes}, seed, "seed digits")
    index = torch.stack([chosen[label] for label in classes])  # [C, S]
    orbits = pose_orbits(digits.images[index.reshape(-1)], group)  # [C*S, N, H, W]
    return orbits.reshape(len(classes), per_class, *orbits.shape[1:]), index
