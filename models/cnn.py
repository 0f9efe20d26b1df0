"""One-layer circular CNNs of the paper's §3.5: CNN-FC (flatten) and CNN-GAP (global average pool).

Circular padding makes the convolution exactly equivariant to circular translations, so CNN-GAP
is translation invariant by construction (Prop. 2) while CNN-FC's dense read-out is not (Prop. 1).
"""

from __future__ import annotations

from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import register_model

# orbitbench.theory.kernels' CNN kernels are NTK-parameterised and bias-free; these models use PyTorch's
# default init with biases, so those kernels are not their twins.
_TWIN = "no analytic kernel twin: the standard-parameterised conv kernel with biases is not implemented"


def _circular_conv(channels: int) -> nn.Module:
    if channels < 1:
        raise OrbitbenchError(f"cnn: channels={channels}; expected >= 1")
    # [B,1,28,28] -> [B,C,28,28]; padding 1 keeps the size so the conv commutes with circular shifts.
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, padding_mode="circular"), nn.ReLU())


@register_model("cnn_fc", kernel=_TWIN, classifier="-1")
def cnn_fc(channels: int = 64, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """3x3 circular conv, ReLU, flatten, dense read-out."""
    return nn.Sequential(
        _circular_conv(channels),
        nn.Flatten(),  # [B,C,28,28] -> [B,C*784]
        nn.Linear(channels * image_size * image_size, num_classes),
    )


@register_model("cnn_gap", kernel=_TWIN, classifier="-1")
def cnn_gap(channels: int = 64, num_classes: int = 10) -> nn.Module:
    """3x3 circular conv, ReLU, global average pool, dense read-out."""
    return nn.Sequential(
        _circular_conv(channels),
        nn.AdaptiveAvgPool2d(1),  # [B,C,28,28] -> [B,C,1,1]
        nn.Flatten(),  # -> [B,C]
        nn.Linear(channels, num_classes),
    )
