"""A model's kernel twin, read off the model's own layers (as stax gives network and kernel from one declaration).

`KernelTwin` describes an infinite-width ReLU MLP (its analytic NTK: `orbitbench.theory.twins`). A zoo
model does not restate its architecture for it: `twin_from_layers(net)` reads the widths and the
biases from the built network, and a twin declared by hand (a parameterisation the layers cannot
show) is checked against the same layers by `check_twin`, so the two can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["KernelTwin", "check_twin", "twin_from_layers"]


@dataclass(frozen=True)
class KernelTwin:
    """An infinite-width ReLU MLP declared as a zoo model's analytic twin (docs/THEORY.md §4).

    Layer l maps fan_in -> fan_out: `h = W a + b`, with `W` of variance `W_std**2 / fan_in` and
    `b` of variance `b_std**2 / fan_in` (`bias_scale="fan_in"`, PyTorch's default nn.Linear init
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)): W_std = b_std = 1/sqrt(3)) or `b_std**2`
    (`bias_scale="unit"`, neural-tangents' convention). `parameterization="standard"`: those are
    the trained parameters (PyTorch); "ntk": the trained parameters are unit Gaussians scaled in
    the forward pass (neural-tangents). A standard-parameterised NTK grows with the widths, so the
    twin keeps the model's own `widths`: its kernel is the one the model's empirical NTK
    concentrates on as all widths grow together (tests/test_twins.py). Dropout is not part of a
    twin (the kernel is the eval-mode network's), nor are the finite-width fluctuations.
    `pool="rot90"`: the network's outputs are averaged over the four rot90 poses (c4_pooled).
    `raw_std` (NTK parameterisation only): per layer, read-out last, the standard deviation of the
    trained weights and biases when it is not neural-tangents' 1 (paper_mlp(parameterization="ntk")).

    `arch="cnn_fc"` / `"cnn_gap"`: one bias-free circular `kernel_size` x `kernel_size` convolution of
    `channels` channels on the square image of `in_features` pixels, ReLU, then a bias-free dense
    read-out of every position (fc) or of the global average over positions (gap); `widths` is empty.
    The standard parameterisation's NTK grows with the read-out's fan-in, so the twin keeps `channels`.
    """

    widths: tuple[int, ...]  # hidden-layer widths; depth = len(widths)
    in_features: int = 784
    W_std: float = 3**-0.5  # noqa: N815 (neural-tangents' name)
    b_std: float | None = 3**-0.5  # None: no hidden biases
    bias_scale: Literal["fan_in", "unit"] = "fan_in"
    readout_bias: bool = True
    parameterization: Literal["standard", "ntk"] = "standard"
    pool: Literal["rot90"] | None = None
    arch: Literal["mlp", "cnn_fc", "cnn_gap"] = "mlp"
    raw_std: tuple[float, ...] | None = None  # None: unit (neural-tangents' stax init)
    channels: int = 0  # CNN twins: conv channels
    kernel_size: int = 3  # CNN twins: odd conv kernel size
    input_scale: float = 1.0  # CNN twins: a fixed factor on the input (the model's first layer)

    @property
    def readout_fan_in(self) -> int:
        """CNN twins: the dense read-out's fan-in (channels x positions for fc, channels for gap)."""
        return self.channels * (self.in_features if self.arch == "cnn_fc" else 1)

    @property
    def depth(self) -> int:
        return len(self.widths)


# Layers an MLP twin allows between its dense layers: shape-only, identity in eval mode, or the
# per-sample shift of a final LogSoftmax (the paper's models end in one).
_PASSIVE = (nn.Flatten, nn.Dropout, nn.Identity)


def _leaves(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if not list(m.children())]


def _dense_layers(net: nn.Module) -> list[nn.Module]:
    """The layers with a 2-D weight [out, in] (nn.Linear or a re-parameterised linear), in order."""
    return [m for m in _leaves(net) if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2]


def _default_init(layer: nn.Linear) -> bool:
    """PyTorch's default init draws U(+-1/sqrt(fan_in)) for weights and biases: nothing outside it."""
    bound = 1 / math.sqrt(layer.in_features) * (1 + 1e-6)
    return all(p.detach().abs().max() <= bound for p in (layer.weight, layer.bias) if p is not None)


def twin_from_layers(net: nn.Module) -> KernelTwin | str:
    """The twin of a built network made of Flatten, Linear, ReLU and Dropout (eval mode: off), with
    PyTorch's default init; else one line saying which layer has no closed-form kernel here."""
    leaves, widths, biases = _leaves(net), [], []
    for index, layer in enumerate(leaves):
        last = index == len(leaves) - 1
        if isinstance(layer, nn.Linear):
            if widths and layer.in_features != widths[-1]:
                return f"no analytic kernel twin: {type(net).__name__} is not a plain chain of layers"
            if not _default_init(layer):
                return "no analytic kernel twin: the dense layers are not at PyTorch's default init"
            widths += [layer.in_features] if not widths else []
            widths.append(layer.out_features)
            biases.append(layer.bias is not None)
        elif isinstance(layer, nn.ReLU) or isinstance(layer, _PASSIVE) or (last and isinstance(layer, nn.LogSoftmax)):
            continue
        elif isinstance(layer, (nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU)):
            return f"no analytic kernel twin for activation {type(layer).__name__} (ReLU only)"
        else:
            return f"no analytic kernel twin: {type(layer).__name__} layers have no closed-form NTK here"
    if len(widths) < 2:
        return "no analytic kernel twin: the network has no dense layer"
    activations = [m for m in leaves if isinstance(m, nn.ReLU)]
    if len(activations) != len(widths) - 2 or len(set(biases[:-1])) > 1:
        return "no analytic kernel twin: not a ReLU after every hidden dense layer, or mixed hidden biases"
    hidden_bias = biases[0] if len(biases) > 1 else True
    return KernelTwin(widths=tuple(widths[1:-1]), in_features=widths[0], b_std=3**-0.5 if hidden_bias else None,
                      readout_bias=biases[-1])  # fmt: skip


def _check_cnn_twin(twin: KernelTwin, net: nn.Module, name: str) -> str | None:
    """Why a CNN twin disagrees with the network's one conv and one dense layer, or None."""
    convs = [m for m in _leaves(net) if isinstance(m, nn.Conv2d)]
    dense = _dense_layers(net)
    if len(convs) != 1 or len(dense) != 1:
        return f"model {name!r}: its {twin.arch} twin needs one Conv2d and one dense layer"
    conv = convs[0]
    size = twin.kernel_size
    expected = (twin.channels, 1, size, size)
    if (tuple(conv.weight.shape) != expected or conv.padding_mode != "circular" or conv.stride != (1, 1)
            or conv.padding != (size // 2, size // 2) or conv.bias is not None or conv.dilation != (1, 1)):
        return (f"model {name!r}: its declared {twin.arch} twin is a bias-free stride-1 circular conv of weight "
                f"{expected}, its conv is {tuple(conv.weight.shape)} ({conv.padding_mode} padding {conv.padding}, "
                f"stride {conv.stride}, bias {conv.bias is not None})")  # fmt: skip
    scales = [float(m.factor) for m in _leaves(net) if type(m).__name__ == "InputScale"]
    if (scales or [1.0]) != [twin.input_scale]:
        return f"model {name!r}: its declared {twin.arch} twin scales the input by {twin.input_scale}, the model by {scales}"
    if dense[0].weight.shape[1] != twin.readout_fan_in or getattr(dense[0], "bias", None) is not None:
        return f"model {name!r}: its declared {twin.arch} twin's bias-free read-out takes {twin.readout_fan_in} features"
    return None


def check_twin(twin: KernelTwin, net: nn.Module, name: str) -> str | None:
    """Why a declared twin disagrees with the network's own dense layers (widths, biases), or None."""
    if twin.arch != "mlp":
        return _check_cnn_twin(twin, net, name)
    dense = _dense_layers(net)
    found = tuple(int(m.weight.shape[1]) for m in dense[:1]) + tuple(int(m.weight.shape[0]) for m in dense)
    expected = (twin.in_features, *twin.widths)
    if found[:-1] != expected:
        return f"model {name!r}: its declared kernel twin has widths {expected}, its layers {found[:-1]}"
    hidden = {getattr(m, "bias", None) is not None for m in dense[:-1]}
    readout = getattr(dense[-1], "bias", None) is not None
    if (hidden and hidden != {twin.b_std is not None}) or readout != twin.readout_bias:
        return f"model {name!r}: its declared kernel twin's biases differ from its layers'"
    return None
