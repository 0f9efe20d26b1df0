"""Builders of the example plug-in: each maps [B, 1, 28, 28] images to [B, num_classes] logits."""

from __future__ import annotations

from torch import nn


def tiny_orbit_mlp(num_classes: int = 10, width: int = 64) -> nn.Module:
    """A one-hidden-layer MLP: small enough for a test to train it in seconds."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, num_classes))
