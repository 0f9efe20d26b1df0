"""`c4_pooled(<name>)`: a backbone made invariant to 90-degree rotations by construction.

Averaging logits over the four rot90 poses of the input is group averaging over C4, so the output
is identical for an image and its rot90 (exactly: rot90 only permutes pixels). It is the
"architecture matches the symmetry" baseline: at n_angles = 4, out-test should equal in-test.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class C4Pooled(nn.Module):
    """Mean of `backbone(rot90(x, k))` over k = 0..3; one batched backbone call."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        poses = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])  # [4,B,C,H,W]
        logits = self.backbone(rearrange(poses, "k b c h w -> (k b) c h w"))  # [4B,classes]
        return rearrange(logits, "(k b) n -> k b n", k=4).mean(dim=0)  # [B,classes]
