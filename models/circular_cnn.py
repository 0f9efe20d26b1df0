"""Circularly padded stride-1 CNNs with an analytic twin: the translation track's Props. 1 and 2.

The paper's §3.5 CNNs, bias-free so that their kernels have a closed form
(`orbitbench.theory.closed_form.cnn_kernels`): one circular conv, ReLU, then a dense read-out
of every position (`circ_cnn_fc`, Prop. 1: a circulant, full-rank kernel over a translation orbit,
so it fails like an MLP) or of the global average over positions (`circ_cnn_gap`, Prop. 2: the
circular conv commutes with whole-pixel circular shifts and the average forgets where a feature
was, so the network is exactly invariant to them). Standard parameterisation at PyTorch's
default init (weights U(+-1/sqrt(fan_in)), W_std^2 = 1/3), so that they train like the zoo's other
models; the twin is the closed form of that parameterisation (`orbitbench.theory.twins`). The
track's images have unit norm, so a pixel's RMS is 1/28; a fixed `input_scale` (28: unit RMS, the
scale PyTorch's init is made for) multiplies them first, and the twin sees the same scaled input.
"""

from __future__ import annotations

from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._registry import KernelTwin, register_model

_W_STD = 3**-0.5  # PyTorch's default U(+-1/sqrt(fan_in)) has variance 1 / (3 fan_in)


class InputScale(nn.Module):
    """Multiplies the input by a fixed `factor` (no parameter): part of the network and of its twin."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        if not factor > 0:
            raise OrbitbenchError(f"circular cnn: input_scale={factor}; expected > 0")
        self.factor = float(factor)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _conv(channels: int, kernel_size: int) -> nn.Conv2d:
    if channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise OrbitbenchError(f"circular cnn: channels={channels}, kernel_size={kernel_size}; "
                              "expected channels >= 1 and an odd kernel_size")  # fmt: skip
    # [B,1,H,W] -> [B,C,H,W]; padding k//2 keeps the size, so the conv commutes with circular shifts.
    return nn.Conv2d(1, channels, kernel_size, padding=kernel_size // 2, padding_mode="circular", bias=False)


def _twin(arch: str):
    def twin(channels: int = 16, kernel_size: int = 3, image_size: int = 28, input_scale: float = 28.0,
             **_: object) -> KernelTwin:  # fmt: skip
        return KernelTwin(widths=(), in_features=image_size * image_size, W_std=_W_STD, b_std=None,
                          readout_bias=False, arch=arch, channels=channels, kernel_size=kernel_size,
                          input_scale=float(input_scale))  # fmt: skip

    twin.__doc__ = f"The {arch} closed form at the model's channels and kernel size (standard parameterisation)."
    return twin


@register_model("circ_cnn_fc", kernel=_twin("cnn_fc"), classifier="-1")
def circ_cnn_fc(channels: int = 16, kernel_size: int = 3, num_classes: int = 10, image_size: int = 28,
                input_scale: float = 28.0) -> nn.Module:  # fmt: skip
    """Bias-free circular conv, ReLU, flatten, bias-free dense read-out of every position."""
    return nn.Sequential(
        InputScale(input_scale),
        _conv(channels, kernel_size),
        nn.ReLU(),
        nn.Flatten(),  # [B,C,H,W] -> [B,C*H*W]
        nn.Linear(channels * image_size * image_size, num_classes, bias=False),
    )


@register_model("circ_cnn_gap", kernel=_twin("cnn_gap"), invariance="built-in:circular-shift", classifier="-1")
def circ_cnn_gap(channels: int = 16, kernel_size: int = 3, num_classes: int = 10, image_size: int = 28,
                 input_scale: float = 28.0) -> nn.Module:  # fmt: skip
    """Bias-free circular conv, ReLU, global average pool, bias-free dense read-out."""
    del image_size  # the pool makes the read-out independent of it (the twin reads it)
    return nn.Sequential(
        InputScale(input_scale),
        _conv(channels, kernel_size),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),  # [B,C,H,W] -> [B,C,1,1]
        nn.Flatten(),  # -> [B,C]
        nn.Linear(channels, num_classes, bias=False),
    )
