"""Rotated MNIST (paper Fig. 1): digits under the rotations by 360*k/n_angles degrees."""

from __future__ import annotations

from orbitbench.orbits import GroupAction, Rotation

from .base import OrbitDataModule


class RotatedMNIST(OrbitDataModule):
    """MNIST orbits under C_n rotations; the paper's training script uses `interpolation="nearest"`.

    Args:
        n_angles: order of the rotation group (1..360); multiples of 90 degrees are exact.
        interpolation: "bilinear" (default), "nearest" or "cubic" (scipy's order-3 spline rotation, as
            the paper's kernel code) for angles that are not multiples of 90.
        **kwargs: the split, source, normalisation and loader options of `OrbitDataModule`.
    """

    order_argument = "n_angles"
    order_range = (1, 360)

    def __init__(self, n_angles: int = 8, interpolation: str = "bilinear", **kwargs) -> None:
        self.interpolation = interpolation
        super().__init__(n_angles, **kwargs)

    def make_group(self, n_poses: int) -> GroupAction:
        return Rotation(n_poses, interpolation=self.interpolation)
