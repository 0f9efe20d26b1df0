"""Gram matrices at the network's scale (tens of thousands of points): blocked, in place, float64.

`twin_gram` is the twin's analytic NTK (`orbitbench.theory.twins.twin_kernel`'s recursion) computed
as one float64 matrix product `X X'^T` written straight into the output, then the arc-cosine
recursion applied to it block by block of rows with a few reused row-block buffers: no
[B, B2]-sized temporary exists besides the result. A Gram matrix (`x2=None`) is computed on the
lower block triangle and mirrored, halving the elementwise work.

`EmpiricalFactors` holds the network's per-sample structured factors (`orbitbench.theory.ntk`) of the
centred logits once, so the empirical NTK between any rows is a few matrix products; its Gram is
filled block by block the same way. Linearised and C4-pooled networks are factored through their
kernel view (`kernel_view`), as the probe computes their kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models import KernelTwin
from orbitbench.theory.closed_form import _input_ids
from orbitbench.theory.ntk import NtkFactors, factor_kernel, ntk_factors
from orbitbench.theory.twins import twin_kernel

__all__ = ["EmpiricalFactors", "twin_gram", "block_rows"]

TWO_PI = 2 * math.pi


def block_rows(columns: int, elements: int = 1 << 17) -> int:
    """Rows per block so that one row-block buffer holds about `elements` numbers (cache-sized)."""
    return max(1, elements // max(1, columns))


@dataclass(frozen=True)
class _Layer:
    """Constants of one recursion step (docs/THEORY.md §4, `closed_form._mlp_block`)."""

    gain: float  # g_l: raw parameter variance (1 unless raw_std)
    bias: float  # v_l
    own: float | None  # standard parameterisation: n_l / (2 pi) (the layer's own weights' term); None: ntk
    trained_bias: float  # standard: 1 where layer l has a trained bias


def _layers(twin: KernelTwin) -> tuple[list[_Layer], float]:
    """Per-layer constants of the twin and w = W_std^2."""
    fan_ins = (twin.in_features, *twin.widths)
    present = (*[twin.b_std is not None] * twin.depth, twin.readout_bias and twin.b_std is not None)
    standard = twin.parameterization == "standard"
    gains = (1.0,) * (twin.depth + 1) if twin.raw_std is None else tuple(float(r) ** 2 for r in twin.raw_std)
    out = []
    for n, has, g in zip(fan_ins, present, gains):
        bias = twin.b_std**2 / (n if twin.bias_scale == "fan_in" else 1.0) if has else 0.0
        out.append(_Layer(g, bias, n / TWO_PI if standard else None, float(has) if standard else 0.0))
    return out, float(twin.W_std) ** 2


def _recursion_(dot: Tensor, q1: Tensor, q2: Tensor, same: Tensor, layers: list[_Layer], w: float, n0: float,
                buffers: list[Tensor]) -> None:
    """In place: `dot` [b, B2] (raw inner products) -> the twin's NTK. q1 [b], q2 [B2]: squared norms;
    `same` bool [b, B2]: bitwise-equal inputs (cos = 1 exactly); n0: input features; buffers: four
    of at least b*B2 numbers."""
    shape = dot.shape
    sigma, scale, comp, expect = (buf[: dot.numel()].view(shape) for buf in buffers)
    first = layers[0]
    d0 = first.gain * w / n0
    # Sigma_0 = g0 (w x.x' / n0 + v0); NTK_0 = x.x' + b0 (standard) or Sigma_0 / g0 (ntk)
    torch.mul(dot, d0, out=sigma).add_(first.gain * first.bias)
    if first.own is not None:
        dot.add_(first.trained_bias)
    else:
        dot.mul_(w / n0).add_(first.bias)
    qa = first.gain * (w / n0 * q1 + first.bias)
    qb = first.gain * (w / n0 * q2 + first.bias)
    for layer in layers[1:]:
        torch.outer(qa.sqrt(), qb.sqrt(), out=scale)  # sqrt(q q')
        cos = sigma.div_(scale.clamp_min(torch.finfo(scale.dtype).tiny)).clamp_(-1.0, 1.0).masked_fill_(same, 1.0)
        torch.asin(cos, out=comp).add_(math.pi / 2)  # pi - angle
        torch.mul(cos, cos, out=expect).neg_().add_(1.0).clamp_min_(0.0).sqrt_()  # sine
        expect.addcmul_(comp, cos).mul_(scale)  # 2 pi E[relu(u) relu(v)]
        dot.mul_(comp).mul_(layer.gain * w / TWO_PI)  # g w E'(Sigma) Theta
        # new Sigma = g (w E + v), into `sigma` (cos is no longer needed)
        torch.mul(expect, layer.gain * w / TWO_PI, out=sigma).add_(layer.gain * layer.bias)
        if layer.own is not None:
            dot.add_(expect, alpha=layer.own).add_(layer.trained_bias)
        else:
            dot.add_(sigma, alpha=1.0 / layer.gain)
        qa = layer.gain * (w / 2 * qa + layer.bias)
        qb = layer.gain * (w / 2 * qb + layer.bias)


def twin_gram(twin: KernelTwin, x: Tensor, x2: Tensor | None = None, elements: int = 1 << 17) -> Tensor:
    """The twin's analytic NTK of one output, [B, D] (x) [B2, D] -> float64 [B, B2], computed in place.

    Equal to `twin_kernel(twin, x, x2)` (tests/test_scale.py); `x2=None`: the symmetric Gram matrix.
    Pooled twins (`pool="rot90"`) go through `twin_kernel` block by block.
    """
    flat = lambda t: t.detach().to("cpu", torch.float64).reshape(t.shape[0], -1)  # noqa: E731
    left = flat(x)
    right = left if x2 is None else flat(x2)
    if left.shape[1] != twin.in_features or right.shape[1] != twin.in_features:
        raise OrbitbenchError(f"kernel twin takes {twin.in_features} input features, got {left.shape[1]}, {right.shape[1]}")
    if twin.pool is not None or twin.arch != "mlp" or twin.parameterization not in ("standard", "ntk"):
        rows = block_rows(len(right), 1 << 20)
        out = torch.cat([twin_kernel(twin, x[i : i + rows], x if x2 is None else x2) for i in range(0, len(x), rows)])
        if x2 is None:
            _mirror_(out, rows)
        return out
    layers, w = _layers(twin)
    n0 = float(twin.in_features)
    out = torch.mm(left, right.T)  # [B, B2]: the one matrix product
    q1, q2 = left.square().sum(1), right.square().sum(1)
    ids1, ids2 = _input_ids(left, None if x2 is None else right)
    rows = block_rows(len(right), elements)
    buffers = [torch.empty(rows * len(right), dtype=torch.float64) for _ in range(4)]
    same = torch.empty(rows * len(right), dtype=torch.bool)
    for start in range(0, len(left), rows):
        stop = min(start + rows, len(left))
        cols = stop if x2 is None else len(right)  # Gram: the lower block triangle only
        block = out[start:stop, :cols]
        mask = same[: block.numel()].view(block.shape)
        torch.eq(ids1[start:stop, None], ids2[None, :cols], out=mask)
        _recursion_(block, q1[start:stop], q2[:cols], mask, layers, w, n0, buffers)
    if x2 is None:
        _mirror_(out, rows)
    return out


def _mirror_(out: Tensor, rows: int) -> None:
    """Copy the lower triangle of a square `out` onto its upper one, block by block (exactly symmetric)."""
    for start in range(0, len(out), rows):
        stop = min(start + rows, len(out))
        out[start:stop, stop:] = out[stop:, start:stop].T
        diagonal = out[start:stop, start:stop]
        diagonal.copy_(torch.tril(diagonal) + torch.tril(diagonal, -1).T)


def kernel_view(network: nn.Module) -> tuple[nn.Module, int]:
    """The module whose per-sample empirical NTK gives `network`'s, and the quarter turns it is
    averaged over. A `Linearized` network's kernel is its backbone's at the initial weights, whatever
    its trained weights; a `C4Pooled` one's is `mean_{k,l} K_f(rot90^k x, rot90^l x')` of its backbone
    f. Their own forward passes (a jvp; four poses in one batch) would send every layer to the generic
    per-parameter path, whose per-sample Jacobians do not fit in memory at scale."""
    from orbitbench.models.c4_pooled import C4Pooled
    from orbitbench.models.linearized import Linearized

    unwrap = lambda net: net.tangent_network() if isinstance(net, Linearized) else net  # noqa: E731
    network = unwrap(network)
    if isinstance(network, C4Pooled):
        return unwrap(network.backbone), 4
    return network, 1


class EmpiricalFactors:
    """The network's empirical NTK of its centred logits, class-averaged: `(1/C) sum_k Theta_kk`.

    The per-sample structured factors of a point set are computed once (one forward and C backward
    passes per chunk) on the network's kernel view (`kernel_view`: one set per quarter turn for a
    C4-pooled network); the kernel between any two factor sets is a few matrix products per pair of turns.
    """

    def __init__(self, network: nn.Module, images: Tensor, dtype: torch.dtype = torch.float64,
                 chunk_size: int = 256) -> None:  # fmt: skip
        inner, turns = kernel_view(network)
        device = next(inner.parameters()).device
        self.turns: list[NtkFactors] = [
            ntk_factors(inner, torch.rot90(images, k, dims=(-2, -1)).to(device), "centred", chunk_size=chunk_size, dtype=dtype)
            for k in range(turns)]  # fmt: skip
        self.num_classes = int(self.turns[0].outputs)

    def __len__(self) -> int:
        return self.turns[0].size

    def kernel(self, other: EmpiricalFactors, rows: slice | None = None) -> Tensor:
        """[len(rows), len(other)] float64 CPU: the class-averaged kernel of these rows with `other`
        (for a pooled network the mean over every pair of turns)."""
        lefts = self.turns if rows is None else [f.rows(rows) for f in self.turns]
        total = sum(factor_kernel(left, right) for left in lefts for right in other.turns)
        return (total / (self.num_classes * len(lefts) * len(other.turns))).double().cpu()

    def gram(self, other: EmpiricalFactors | None = None, elements: int = 1 << 20) -> Tensor:
        """The full kernel [len(self), len(other)] (other None: the symmetric Gram), row block by row block."""
        right = self if other is None else other
        out = torch.empty(len(self), len(right), dtype=torch.float64)
        rows = block_rows(len(right), elements)
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            if other is None:
                out[start:stop, :stop] = self.kernel(EmpiricalFactors._view(right, slice(0, stop)), slice(start, stop))
            else:
                out[start:stop] = self.kernel(right, slice(start, stop))
        if other is None:
            _mirror_(out, rows)
        return out

    @staticmethod
    def _view(source: EmpiricalFactors, rows: slice) -> EmpiricalFactors:
        view = object.__new__(EmpiricalFactors)
        view.turns, view.num_classes = [f.rows(rows) for f in source.turns], source.num_classes
        return view
