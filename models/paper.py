"""The three networks of the paper's Fig. 1 (docs/THEORY.md §1), layer for layer, PyTorch default init.

They end in LogSoftmax as in the public code; cross-entropy on log-probabilities equals
cross-entropy on the logits because log_softmax is idempotent.
"""

from __future__ import annotations

from torch import nn

from orbitbench.models._registry import KernelTwin, register_model

_CONV_TWIN = "no analytic kernel twin: max-pooling has no closed-form NTK here"


# PyTorch default init (U(+-1/sqrt(fan_in)) weights and biases), standard parameterisation, the
# widths of the network itself; no read-out bias. Dropout is off in the kernel (eval mode).
@register_model("paper_mlp", kernel=KernelTwin(widths=(512, 128), readout_bias=False), classifier="-2")
def paper_mlp(num_classes: int = 10, dropout: float = 0.5) -> nn.Module:
    """784-512-128-10 ReLU MLP with dropout 0.5 and a bias-free read-out."""
    return nn.Sequential(
        nn.Flatten(),  # [B,1,28,28] -> [B,784]
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(512, 128),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(128, num_classes, bias=False),
        nn.LogSoftmax(dim=1),
    )


@register_model("paper_convnet", kernel=_CONV_TWIN, classifier="-2")
def paper_convnet(num_classes: int = 10) -> nn.Module:
    """Two conv/max-pool stages (24 and 32 channels) and a 256-unit hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 5),  # [B,1,28,28] -> [B,24,24,24]
        nn.MaxPool2d(2),  # -> [B,24,12,12]
        nn.ReLU(),
        nn.Conv2d(24, 32, 3),  # -> [B,32,10,10]
        nn.MaxPool2d(2),  # -> [B,32,5,5]
        nn.ReLU(),
        nn.Flatten(),  # -> [B,800]
        nn.Linear(800, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
        nn.LogSoftmax(dim=1),
    )


@register_model("paper_vit", kernel="no analytic kernel twin: attention NTKs are not implemented here", classifier="linear_head")
def paper_vit(num_classes: int = 10) -> nn.Module:
    """vit-pytorch SimpleViT with the paper's settings: 4x4 patches, dim 256, depth 2, 4 heads."""
    from vit_pytorch import SimpleViT

    return SimpleViT(
        image_size=28, patch_size=4, num_classes=num_classes, dim=256, depth=2, heads=4, mlp_dim=256, channels=1
    )
