"""`steerable_cnn`: a C_n-equivariant CNN (E(2)-steerable CNNs, Weiler & Cesa 2019, library e2cnn).

The built-in-symmetry reference among the challengers (invariance: built-in:C_n). Convolutions
between regular representations of C_n are equivariant to the n rotations of the plane; group
pooling (max over the n orientations of each field) and a spatial mean make the features
invariant, and a linear read-out classifies them. Rotations by multiples of 90 degrees are exact
on the pixel grid (odd kernels, 'same' padding, 2x2 pooling of 28 -> 14 -> 7), so for n divisible
by 4 the logits are invariant to rot90 up to float rounding; other angles of C_n hold only up to
the kernels' sampling on the grid.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import register_model


def _e2cnn():
    with warnings.catch_warnings():
        # e2cnn 0.2.3 indexes with uint8 masks while building its kernel bases (torch >= 2 deprecates it).
        warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
        from e2cnn import gspaces, nn as enn
    return gspaces, enn


class SteerableCNN(nn.Module):
    """Three steerable conv stages of `widths` channels (n channels per regular field), group pooling, read-out."""

    def __init__(self, n: int, widths: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        gspaces, enn = _e2cnn()
        self.n = n
        self.invariance = f"built-in:C_{n}"
        space = gspaces.Rot2dOnR2(N=n)
        field = enn.FieldType(space, [space.trivial_repr])
        self.input_type = field
        layers: list[nn.Module] = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
            for i, width in enumerate(widths):
                hidden = enn.FieldType(space, max(1, width // n) * [space.regular_repr])
                kernel = 5 if i == 0 else 3
                layers += [enn.R2Conv(field, hidden, kernel, padding=kernel // 2), enn.ReLU(hidden, inplace=True)]
                if i < 2:
                    layers.append(enn.PointwiseMaxPool(hidden, 2))  # [B,C,28,28] -> 14 -> 7
                field = hidden
            layers.append(enn.GroupPooling(field))  # one invariant channel per field
        self.features = enn.SequentialModule(*layers)
        self.readout = nn.Linear(len(field), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        _, enn = _e2cnn()
        pooled = self.features(enn.GeometricTensor(x, self.input_type)).tensor  # [B, fields, 7, 7]
        return self.readout(pooled.mean(dim=(2, 3)))  # [B, fields] -> [B, classes]


@register_model("steerable_cnn")
def steerable_cnn(n: int = 4, widths: tuple[int, ...] | list[int] = (24, 32, 64), num_classes: int = 10) -> nn.Module:
    """C_n-steerable CNN with group pooling; `widths` are channels per stage (fields = width // n)."""
    widths = tuple(int(w) for w in widths)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OrbitbenchError(f"steerable_cnn: n={n!r}; expected a positive integer (the order of C_n)")
    if len(widths) != 3 or min(widths) < 1:
        raise OrbitbenchError(f"steerable_cnn: widths={list(widths)}; expected three positive channel counts")
    return SteerableCNN(n, widths, num_classes)
