"""Analytic NTK of a zoo model's kernel twin (`orbitbench.models.KernelTwin`), in closed form.

The twin of `paper_mlp` is a standard-parameterised ReLU MLP with PyTorch's default init and no
read-out bias, which `orbitbench.theory.kernels.infinite_kernel` (NTK parameterisation, one bias scale for
every layer) cannot express; the one arc-cosine recursion (`orbitbench.theory.closed_form`) covers both
parameterisations with per-layer variances. tests/test_twins.py checks it against neural-tangents' `stax` and shows the
empirical NTK of the torch models concentrating on it as their widths grow.

Recursion for one output unit (docs/THEORY.md §4), with `w = W_std**2`, `v_l` the bias variance of
layer l, fan-ins `n_0 = in_features, n_1, ...`, and for the ReLU
`E = E[relu(u) relu(v)]`, `E' = E[relu'(u) relu'(v)]` under the covariance `Sigma_l`:

    Sigma_1 = w x.x' / n_0 + v_1,          Sigma_{l+1} = w E(Sigma_l) + v_{l+1}
    ntk:       Theta_1 = Sigma_1,           Theta_{l+1} = Sigma_{l+1} + w E'(Sigma_l) Theta_l
    standard:  Theta_1 = x.x' + [bias],     Theta_{l+1} = n_l E(Sigma_l) + [bias] + w E'(Sigma_l) Theta_l

([bias] = 1 where the layer has a trained bias: d h / d b = 1.) With `raw_std` (NTK
parameterisation whose trained parameters of layer l have variance `g_l`, not 1) layer l's forward
terms `w E + v_l` are multiplied by `g_l`, its own NTK term is not (d h / d W does not see the
parameter's scale) and the back-propagated factor becomes `w g_l E'`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from orbitbench.theory.closed_form import MlpLayers, cnn_kernels, mlp_kernel
from orbitbench.errors import OrbitbenchError
from orbitbench.theory.regression_cache import tensor_digest
from orbitbench.models import KernelTwin

__all__ = ["relu_expectations", "twin_kernel"]


def relu_expectations(cov: Tensor, var_1: Tensor, var_2: Tensor) -> tuple[Tensor, Tensor]:
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for centred Gaussians (arc-cosine kernels of order 1, 0)."""
    scale = torch.sqrt(var_1 * var_2)
    cos = (cov / scale).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    e = scale * (torch.sqrt(1.0 - cos * cos) + (math.pi - angle) * cos) / (2 * math.pi)
    return e, (math.pi - angle) / (2 * math.pi)


def _mlp_ntk(twin: KernelTwin, x1: Tensor, x2: Tensor) -> Tensor:
    """Closed-form NTK [B1, B2] of one output of the twin MLP on flat float64 inputs (the recursion
    is `orbitbench.theory.closed_form`'s, with this twin's per-layer variances)."""
    fan_ins = (twin.in_features, *twin.widths)
    has_bias = (*[twin.b_std is not None] * twin.depth, twin.readout_bias and twin.b_std is not None)
    bias_vars = tuple(twin.b_std**2 / (n if twin.bias_scale == "fan_in" else 1.0) if present else 0.0
                      for n, present in zip(fan_ins, has_bias))  # fmt: skip
    standard = twin.parameterization == "standard"
    gains = None if twin.raw_std is None else tuple(float(r) ** 2 for r in twin.raw_std)
    layers = MlpLayers(bias_vars, fan_ins if standard else None, has_bias if standard else None, gains)
    return mlp_kernel(x1, x2, kind="ntk", depth=twin.depth, w_std=twin.W_std, b_std=None, layers=layers)


CNN_BLOCK_ELEMENTS = 1 << 20  # one temporary block of the CNN-GAP position pairs (float64)


def _roll_table(height: int, width: int) -> Tensor:
    """[HW, HW] long: row r lists the pixels of the image rolled by r = (dy, dx), so `flat[table]` gives every roll."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    dy, dx = y.reshape(-1, 1), x.reshape(-1, 1)
    return (((y.reshape(1, -1) + dy) % height) * width + (x.reshape(1, -1) + dx) % width).long()


def shift_orbits(images: Tensor) -> tuple[Tensor, Tensor]:
    """Images [B, H, W] -> (one representative per class of 2-D circular shifts [U, H, W], index [B]).

    The representative is the lexicographically largest of an image's H*W rolls, so bitwise-equal
    representatives mark exactly the images that are whole-pixel circular shifts of one another.
    """
    height, width = images.shape[-2:]
    table = _roll_table(height, width)
    canonical = []
    for image in images.reshape(len(images), -1):
        rolls = image[table]  # [HW, HW]
        candidates = torch.arange(len(rolls))
        for column in range(rolls.shape[1]):
            values = rolls[candidates, column]
            candidates = candidates[values == values.max()]
            if len(candidates) == 1:
                break
        canonical.append(rolls[candidates[0]])
    flat = torch.stack(canonical) if canonical else images.reshape(0, height * width)
    unique, index = torch.unique(flat, dim=0, return_inverse=True)
    return unique.view(-1, height, width), index


_LAST_GAP: list = [None, None]  # (key, kernel) of the last CNN-GAP evaluation


def _cnn_ntk(twin: KernelTwin, x1: Tensor, x2: Tensor | None) -> Tensor:
    """Closed-form NTK of one output of a circular CNN twin on float64 images [B, H, W] (x2 None: Gram).

    The forward pass (so the NNGP) is the same in both parameterisations at equal init variances.
    NTK parameterisation: the stax kernel. Standard (the trained parameters are the weights
    themselves, of variance w / fan_in): d f / d V over the read-out gives `fan_in_readout / w` times
    the NNGP, and d f / d W over the conv gives `k^2 / w` times the NTK-parameterised conv term
    `ntk - nngp` (each layer's own-parameter term loses the 1 / fan_in the NTK parameterisation puts
    in the forward pass), as for the MLP's `n_l E` (docs/THEORY.md §4).
    """
    if twin.arch == "cnn_gap":  # invariant to circular shifts of either input: one evaluation per shift class
        left, index_left = shift_orbits(x1)
        right, index_right = (left, index_left) if x2 is None else shift_orbits(x2)
        key = (twin, x2 is None, tensor_digest(left), tensor_digest(right))
        if _LAST_GAP[0] != key:  # the orbit solve asks for one set against each pose of another: one evaluation
            _LAST_GAP[:] = [key, _cnn_ntk_once(twin, left, None if x2 is None else right)]
        return _LAST_GAP[1][index_left][:, index_right]
    return _cnn_ntk_once(twin, x1, x2)


def _cnn_ntk_once(twin: KernelTwin, x1: Tensor, x2: Tensor | None) -> Tensor:
    """`_cnn_ntk` on the images as given."""
    nngp, ntk = cnn_kernels(x1, x2, gap=twin.arch == "cnn_gap", w_std=twin.W_std, b_std=None,
                            block_elements=CNN_BLOCK_ELEMENTS, size=twin.kernel_size)  # fmt: skip
    if twin.parameterization == "ntk":
        return ntk
    w = float(twin.W_std) ** 2
    return nngp * (twin.readout_fan_in / w) + (ntk - nngp) * (twin.kernel_size**2 / w)


def twin_kernel(twin: KernelTwin, x: Tensor, x2: Tensor | None = None) -> Tensor:
    """The twin's analytic NTK of one output between images x [B, ...] and x2 [B2, ...] -> float64 [B, B2], CPU.

    Independent output units make the kernel of a logit difference twice this one and that of
    centred logits `(1 - 1/C)` times it: the same predictions, so one kernel serves every output.
    `pool="rot90"` averages the kernel over the four rot90 poses of both inputs; rot90 permutes
    pixels, which leaves dot products and norms (all an MLP kernel depends on) unchanged, so
    `mean_{k,l} K(r^k x, r^l x') = mean_d K(x, r^d x')`.
    """
    if twin.arch not in ("mlp", "cnn_fc", "cnn_gap"):
        raise OrbitbenchError(f"kernel twin arch={twin.arch!r}; accepted: 'mlp', 'cnn_fc', 'cnn_gap'")
    if twin.parameterization not in ("standard", "ntk"):
        raise OrbitbenchError(f"kernel twin parameterization={twin.parameterization!r}; accepted: standard, ntk")
    if twin.raw_std is not None and (twin.parameterization != "ntk" or len(twin.raw_std) != twin.depth + 1):
        raise OrbitbenchError(f"kernel twin raw_std={twin.raw_std}: NTK parameterisation only, one value per layer "
                              f"({twin.depth + 1}, read-out last)")
    other = x if x2 is None else x2
    flat = lambda t: t.detach().to("cpu", torch.float64).reshape(t.shape[0], -1)  # noqa: E731
    for t in (x, other):
        if flat(t).shape[1] != twin.in_features:
            raise OrbitbenchError(f"kernel twin takes {twin.in_features} input features, got shape {tuple(t.shape)}")
    if twin.arch != "mlp":
        if twin.pool is not None or twin.raw_std is not None or twin.b_std is not None:
            raise OrbitbenchError("a CNN kernel twin is bias-free, unpooled and of unit raw_std")
        side = math.isqrt(twin.in_features)
        image = lambda t: flat(t).view(-1, side, side) * twin.input_scale  # noqa: E731
        return _cnn_ntk(twin, image(x), None if x2 is None else image(x2))
    if twin.pool is None:
        out = _mlp_ntk(twin, flat(x), flat(other))
    elif twin.pool == "rot90":
        out = torch.stack([_mlp_ntk(twin, flat(x), flat(torch.rot90(other, d, dims=(-2, -1)))) for d in range(4)]).mean(0)
    else:
        raise OrbitbenchError(f"kernel twin pool={twin.pool!r}; accepted: None, 'rot90'")
    return 0.5 * (out + out.T) if x2 is None else out
