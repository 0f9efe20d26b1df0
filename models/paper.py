"""The three networks of the paper's Fig. 1 (docs/THEORY.md §1), layer for layer, PyTorch default init;
`paper_mlp(parameterization="ntk")` is the MLP as the authors train it for Fig. 6B (docs/THEORY.md §8).

They end in LogSoftmax as in the public code; cross-entropy on log-probabilities equals
cross-entropy on the logits because log_softmax is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import KernelTwin, register_model

_CONV_TWIN = "no analytic kernel twin: max-pooling has no closed-form NTK here"


PARAMETERIZATIONS = ("standard", "ntk")


class NTKLinear(nn.Module):
    """`h = W_std / sqrt(fan_in) * W a + b_std * b`: a dense layer in NTK parameterisation (neural-tangents'
    `stax.Dense`), so the trained parameters are `W` and `b` themselves, not the products.

    Init: the fan-out "Kaiming uniform" of the authors' Fig. 6B code, `W` and `b` both
    U(-1/sqrt(fan_out), 1/sqrt(fan_out)) (their helper read a `[fan_in, fan_out]` weight's second
    dimension as its fan-in). With W_std = b_std = 1 the biases dominate the pre-activations at
    init, and an Adam step moves an effective weight by lr / sqrt(fan_in), not lr (docs/THEORY.md §8).
    """

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True, W_std: float = 1.0, b_std: float = 1.0) -> None:  # noqa: N803
        super().__init__()
        self.fan_in, self.W_std, self.b_std = fan_in, W_std, b_std
        bound = fan_out**-0.5
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(fan_out).uniform_(-bound, bound)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight * (self.W_std / self.fan_in**0.5)
        return F.linear(x, weight, None if self.bias is None else self.bias * self.b_std)


def ntk_mlp(widths: Sequence[int] = (512, 128), num_classes: int = 10, dropout: float = 0.5,
            in_features: int = 784) -> nn.Sequential:
    """paper_mlp's layers in NTK parameterisation (W_std = b_std = 1, the authors' stax network) at any widths."""
    layers: list[nn.Module] = [nn.Flatten()]  # [B,1,28,28] -> [B,784]
    for fan_in, fan_out in zip((in_features, *widths), widths):
        layers += [NTKLinear(fan_in, fan_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers, NTKLinear(widths[-1], num_classes, bias=False), nn.LogSoftmax(dim=1))


def ntk_twin(widths: Sequence[int] = (512, 128), num_classes: int = 10) -> KernelTwin:
    """The twin of `ntk_mlp`: NTK parameterisation, unit W_std and b_std, and raw parameters of
    standard deviation 1/sqrt(3 fan_out) per layer (the fan-out uniform init), the read-out's fan-out
    being `num_classes`."""
    raw = tuple((3 * fan_out) ** -0.5 for fan_out in (*widths, num_classes))
    return KernelTwin(widths=tuple(widths), W_std=1.0, b_std=1.0, bias_scale="unit", readout_bias=False,
                      parameterization="ntk", raw_std=raw)


def _paper_mlp_twin(num_classes: int = 10, parameterization: str = "standard", **_: object) -> KernelTwin | str:
    """Standard: PyTorch default init (U(+-1/sqrt(fan_in)) weights and biases), the widths of the
    network itself, no read-out bias. NTK: `ntk_twin`. Dropout is off in the kernel (eval mode)."""
    if parameterization not in PARAMETERIZATIONS:
        return f"no twin for parameterization={parameterization!r} (standard or ntk)"
    if parameterization == "ntk":
        return ntk_twin((512, 128), num_classes)
    return KernelTwin(widths=(512, 128), readout_bias=False)


class UniformDropout(nn.Dropout):
    """Dropout whose mask compares float32 uniforms with `p` (`torch.rand`): the same distribution as
    `nn.Dropout`, drawn by a vectorised kernel instead of CPU `bernoulli_`, whose large draws are slow;
    another random stream, so other weights than `nn.Dropout` for one seed (off until a re-seed)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * (keep * (1.0 / (1.0 - self.p))).to(x.dtype)


DROPOUT_MASKS = {"bernoulli": nn.Dropout, "uniform": UniformDropout}


@register_model("paper_mlp", kernel=_paper_mlp_twin, classifier="-2")
def paper_mlp(num_classes: int = 10, dropout: float = 0.5, parameterization: str = "standard",
              dropout_mask: str = "bernoulli") -> nn.Module:
    """784-512-128-10 ReLU MLP with dropout 0.5 and a bias-free read-out.

    `parameterization`: `standard` (PyTorch's nn.Linear and default init, the paper's Fig. 1) or `ntk`
    (the network the authors train for Fig. 6B: `NTKLinear` layers, see `ntk_mlp`).
    `dropout_mask`: `bernoulli` (`nn.Dropout`, the seeded entries') or `uniform` (`UniformDropout`).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise OrbitbenchError(f"paper_mlp: parameterization={parameterization!r}; expected standard or ntk")
    if dropout_mask not in DROPOUT_MASKS:
        raise OrbitbenchError(f"paper_mlp: dropout_mask={dropout_mask!r}; expected {' or '.join(DROPOUT_MASKS)}")
    if parameterization == "ntk":
        return ntk_mlp((512, 128), num_classes, dropout)
    drop = DROPOUT_MASKS[dropout_mask]
    return nn.Sequential(
        nn.Flatten(),  # [B,1,28,28] -> [B,784]
        nn.Linear(784, 512),
        nn.ReLU(),
        drop(dropout),
        nn.Linear(512, 128),
        nn.ReLU(),
        drop(dropout),
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
