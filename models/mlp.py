"""Fully connected networks of any depth and width: the architecture family of Prop. 1."""

from __future__ import annotations

from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import register_model

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


# The kernel twin is read off the built layers (ReLU only): nothing to declare twice.
@register_model("mlp", classifier="-1")
def mlp(
    depth: int = 2,
    width: int = 512,
    dropout: float = 0.0,
    activation: str = "relu",
    num_classes: int = 10,
    in_features: int = 784,
) -> nn.Module:
    """`depth` hidden layers of `width` units (Linear, activation, optional dropout), then a linear read-out."""
    if depth < 0 or width < 1:
        raise OrbitbenchError(f"mlp: depth={depth}, width={width}; expected depth >= 0 and width >= 1")
    if not 0.0 <= dropout < 1.0:
        raise OrbitbenchError(f"mlp: dropout={dropout}; expected 0 <= dropout < 1")
    if activation not in _ACTIVATIONS:
        raise OrbitbenchError(f"mlp: activation={activation!r}; expected one of {', '.join(_ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Flatten()]  # [B,1,28,28] -> [B,784]
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
