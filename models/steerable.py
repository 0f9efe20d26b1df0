"""`steerable_cnn`: a C_n-equivariant CNN (E(2)-steerable CNNs, Weiler & Cesa 2019, library e2cnn).

The built-in-symmetry reference among the challengers (invariance: built-in:C_n). Convolutions
between regular representations of C_n are equivariant to the n rotations of the plane; the last
convolution's 7x7 kernel covers the whole 7x7 map, so its output is one vector of fields per image,
and group pooling (max over each field's n orientations) makes it invariant; a small MLP head
classifies it. Rotations by multiples of 90 degrees are exact on the pixel grid (centred odd
kernels, 'same' padding, 2x2 pooling of 28 -> 14 -> 7), so for n divisible by 4 the logits are
invariant to rot90 up to float rounding; other angles of C_n hold only up to the kernels'
sampling on the grid.
"""

from __future__ import annotations

import functools
import warnings

from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import register_model

_NO_TWIN = "no analytic kernel twin: steerable convolutions have no closed-form NTK here"


@functools.cache
def _e2cnn():
    with warnings.catch_warnings():
        # e2cnn 0.2.3 indexes with uint8 masks while building its kernel bases (torch >= 2 deprecates it).
        warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
        from e2cnn import gspaces, nn as enn
    return gspaces, enn


class SteerableCNN(nn.Module):
    """Three steerable conv stages of `widths` channels (n per regular field), group pooling, MLP head.

    `input_scale` multiplies the input first: the benchmark's unit-norm images have pixels of
    about 1/28, and at that scale this network learns far more slowly than the zoo's CNNs.
    """

    def __init__(
        self, n: int, widths: tuple[int, ...], num_classes: int, input_scale: float = 28.0, hidden_units: int = 64
    ) -> None:
        super().__init__()
        gspaces, enn = _e2cnn()
        self.n, self.input_scale = n, input_scale
        self.invariance = f"built-in:C_{n}"
        space = gspaces.Rot2dOnR2(N=n)
        field = enn.FieldType(space, [space.trivial_repr])
        self.input_type = field
        layers: list[nn.Module] = []
        # (kernel, padding, pool after): 28 -> 28 -> pool 14 -> 14 -> pool 7 -> 7x7 kernel -> 1x1.
        stages = ((5, 2, True), (3, 1, True), (7, 0, False))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
            for width, (kernel, padding, pool) in zip(widths, stages):
                hidden = enn.FieldType(space, max(1, width // n) * [space.regular_repr])
                layers += [enn.R2Conv(field, hidden, kernel, padding=padding), enn.ReLU(hidden, inplace=True)]
                if pool:
                    layers.append(enn.PointwiseMaxPool(hidden, 2))
                field = hidden
        self.features = enn.SequentialModule(*layers)
        self.head = nn.Sequential(nn.Linear(len(field), hidden_units), nn.ReLU(), nn.Linear(hidden_units, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        _, enn = _e2cnn()
        fields = self.features(enn.GeometricTensor(x * self.input_scale, self.input_type)).tensor  # [B, F*n, 1, 1]
        # Group pooling: max over each regular field's n channels (contiguous in e2cnn's layout),
        # written out of place: e2cnn's GroupPooling fills a buffer in place, which torch.func's
        # vmap (the empirical-NTK callback) refuses.
        pooled = fields.flatten(1).unflatten(1, (-1, self.n)).amax(dim=2)  # [B, F]
        return self.head(pooled)  # [B, classes]


@register_model("steerable_cnn", kernel=_NO_TWIN, invariance="built-in:c4", classifier="head.-1")
def steerable_cnn(
    n: int = 4, widths: tuple[int, ...] | list[int] = (24, 32, 64), input_scale: float = 28.0, num_classes: int = 10
) -> nn.Module:
    """C_n-steerable CNN with group pooling; `widths` are channels per stage (fields = width // n)."""
    widths = tuple(int(w) for w in widths)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OrbitbenchError(f"steerable_cnn: n={n!r}; expected a positive integer (the order of C_n)")
    if len(widths) != 3 or min(widths) < 1:
        raise OrbitbenchError(f"steerable_cnn: widths={list(widths)}; expected three positive channel counts")
    return SteerableCNN(n, widths, num_classes, float(input_scale))


def _variant(n: int) -> None:
    """`steerable_cnn_c<n>`: steerable_cnn at a fixed order, a name of its own so that runs,
    sweeps and leaderboard entries say which group is built in (timm-style variants)."""

    def builder(widths: tuple[int, ...] | list[int] = (24, 32, 64), input_scale: float = 28.0,
                num_classes: int = 10) -> nn.Module:  # fmt: skip
        return steerable_cnn(n, widths, input_scale, num_classes)

    builder.__name__ = builder.__qualname__ = f"steerable_cnn_c{n}"
    builder.__doc__ = f"steerable_cnn with n={n}: invariant to the rotations of C_{n} by construction."
    register_model(f"steerable_cnn_c{n}", kernel=_NO_TWIN, invariance=f"built-in:c{n}", classifier="head.-1")(builder)


for _n in (4, 8, 16):
    _variant(_n)
