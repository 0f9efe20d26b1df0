"""Translated MNIST (paper section 3.5): digits under circular shifts of width*k/n_shifts pixels."""

from __future__ import annotations

from orbitbench.orbits import GroupAction, Translation

from .base import OrbitDataModule


class TranslatedMNIST(OrbitDataModule):
    """MNIST orbits under C_n circular translations (the paper uses n_shifts in {2, 4, 7, 14, 28}).

    Args:
        n_shifts: order of the translation group; shifts are whole pixels when it divides 28.
        axis: "x" (along the width, as in the paper) or "y".
        **kwargs: the split, source, normalisation and loader options of `OrbitDataModule`.
    """

    order_argument = "n_shifts"
    order_range = (1, 360)

    def __init__(self, n_shifts: int = 7, axis: str = "x", **kwargs) -> None:
        self.axis = axis
        super().__init__(n_shifts, **kwargs)

    def make_group(self, n_poses: int) -> GroupAction:
        return Translation(n_poses, axis=self.axis)
