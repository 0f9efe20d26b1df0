"""Infinite-width neural kernels (NTK, NNGP) through neural-tangents, and the RBF kernel of the toy.

neural-tangents pulls in TensorFlow and JAX (seconds of import time), so it is imported only inside
the functions that need it. Kernels are computed in float64 (JAX x64, set by `orbitbench._env`) and
returned as torch float64 tensors: THEORY.md §4 shows float32 destroys the exactly constant orbit
blocks of CNN-GAP kernels.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError

ARCHITECTURES = ("mlp", "cnn_fc", "cnn_gap")
KINDS = ("ntk", "nngp")
BACKENDS = ("neural_tangents", "torch")


@lru_cache(maxsize=32)
def _kernel_fn(arch: str, depth: int, width: int, w_std: float, b_std: float | None, channels: int) -> Callable:
    """stax kernel function of an architecture (THEORY.md §4), jitted once per configuration."""
    import jax

    from orbitbench.reference import neural_tangents

    stax = neural_tangents().stax
    if arch == "mlp":
        hidden = [stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu()] * depth
        layers = [*hidden, stax.Dense(1, W_std=w_std, b_std=b_std)]
    else:
        pool = [stax.GlobalAvgPool()] if arch == "cnn_gap" else []
        layers = [
            stax.Conv(channels, (3, 3), padding="CIRCULAR", W_std=w_std, b_std=b_std),
            stax.Relu(),
            *pool,
            stax.Flatten(),
            stax.Dense(1, W_std=w_std, b_std=b_std),
        ]
    _, _, kernel_fn = stax.serial(*layers)
    return jax.jit(kernel_fn, static_argnames="get")


def _to_jax_input(x: Tensor, arch: str) -> np.ndarray:
    """torch [B, ...] -> float64 numpy: [B, D] for the MLP, NHWC [B, H, W, 1] for the CNNs."""
    x = x.detach().to("cpu", torch.float64)
    if arch == "mlp":
        return x.reshape(x.shape[0], -1).numpy()
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise OrbitbenchError(f"CNN kernel input shape {tuple(x.shape)} is not [B, H, W] or [B, 1, H, W]")
    return x[..., None].numpy()


def infinite_kernel(
    x: Tensor,
    x2: Tensor | None = None,
    *,
    arch: str = "mlp",
    kind: str = "ntk",
    depth: int = 1,
    width: int = 512,
    W_std: float = 1.0,  # noqa: N803 (stax's name)
    b_std: float | None = 1.0,
    channels: int = 64,
    chunk: int | None = None,
    progress: bool = False,
    backend: str = "neural_tangents",
) -> Tensor:
    """Analytic infinite-width kernel between `x` [B, ...] and `x2` [B2, ...] -> float64 [B, B2].

    `arch`: `mlp` ([Dense(width), Relu] x depth, Dense(1)), `cnn_fc` (Conv(channels, 3x3, circular),
    Relu, Flatten, Dense(1)) or `cnn_gap` (the same with GlobalAvgPool); `kind`: `ntk` or `nngp`.
    The paper's CNNs have no biases: pass `b_std=None`. `chunk` rows of `x` are evaluated at a time
    (CNN kernels are memory-hungry: O(chunk * B2 * (H*W)^2) per block); `progress` prints to stderr.
    `depth`/`width` apply to the MLP only; `channels` has no effect on an infinite-width kernel.

    `backend="torch"` (CNNs only) computes the same one-layer CNN kernels in closed form with
    torch, on the device of `x`, an order of magnitude faster than neural-tangents' generic
    convolution of 4-D covariances (checked against it in tests/test_kernels.py).
    """
    _check_options(arch, kind, depth, width, channels, backend)
    if backend == "torch":
        return _cnn_kernel_torch(x, x2, gap=arch == "cnn_gap", kind=kind, w_std=W_std, b_std=b_std,
                                 block=chunk or 16, progress=progress)
    kernel_fn = _kernel_fn(arch, depth, width, float(W_std), None if b_std is None else float(b_std), channels)
    left = _to_jax_input(x, arch)
    right = left if x2 is None else _to_jax_input(x2, arch)
    step = left.shape[0] if chunk is None else max(1, chunk)
    blocks = []
    for start in range(0, left.shape[0], step):
        blocks.append(np.asarray(kernel_fn(left[start : start + step], right, get=kind)))
        if progress:
            done = min(start + step, left.shape[0])
            print(f"\r{arch} {kind}: {done}/{left.shape[0]} rows", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    out = torch.from_numpy(np.concatenate(blocks, axis=0).astype(np.float64))
    if x2 is None:
        out = 0.5 * (out + out.T)  # exact symmetry; blocks are computed independently
    return out


def _check_options(arch: str, kind: str, depth: int, width: int, channels: int, backend: str) -> None:
    if arch not in ARCHITECTURES:
        raise OrbitbenchError(f"arch={arch!r} is unknown: expected one of {', '.join(ARCHITECTURES)}")
    if kind not in KINDS:
        raise OrbitbenchError(f"kind={kind!r} is unknown: expected one of {', '.join(KINDS)}")
    if depth < 1 or width < 1 or channels < 1:
        raise OrbitbenchError(f"depth={depth}, width={width}, channels={channels}: expected positive integers")
    if backend not in BACKENDS or (backend == "torch" and arch == "mlp"):
        raise OrbitbenchError(
            f"backend={backend!r} for arch={arch!r}: expected neural_tangents, or torch for cnn_fc / cnn_gap"
        )


def _patches(images: Tensor) -> Tensor:
    """Circular 3x3 neighbourhoods: [B, H, W] -> [B, H*W, 9] (`x(p + delta)`, delta in {-1,0,1}^2)."""
    shifted = [torch.roll(images, shifts=(-dy, -dx), dims=(-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return torch.stack(shifted, dim=-1).flatten(1, 2)


def _relu_moments(cov: Tensor, var_1: Tensor, var_2: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Means over `dims` of E[relu(u) relu(v)] and of E[relu'(u) relu'(v)] * cov (arc-cosine kernels).

    u, v centred Gaussians with variances var_1, var_2 and covariance cov. In-place steps keep the
    (H*W)^2-sized temporaries of CNN-GAP to three.
    """
    scale = torch.sqrt(var_1 * var_2)
    cos = (cov / scale).clamp_(-1.0, 1.0)
    complement = torch.arccos(cos).neg_().add_(torch.pi)  # pi - angle
    ntk = torch.mul(complement, cov).mean(dims)
    nngp = torch.mul(cos, cos).neg_().add_(1.0).sqrt_()  # sin(angle)
    nngp = nngp.addcmul_(complement, cos).mul_(scale).mean(dims)
    return nngp / (2 * torch.pi), ntk / (2 * torch.pi)


def _cnn_kernel_torch(
    x: Tensor, x2: Tensor | None, *, gap: bool, kind: str, w_std: float, b_std: float | None, block: int,
    progress: bool,
) -> Tensor:
    """Conv(3x3, circular) -> Relu -> [GlobalAvgPool] -> Flatten -> Dense(1), NTK parameterisation.

    First layer: Sigma(x, x')[p, p'] = w^2 / 9 <patch_x(p), patch_x'(p')> + b^2 (= its NTK).
    After the ReLU, CNN-FC keeps the positions p = p' (Flatten + Dense averages them); CNN-GAP
    averages over all (p, p'), which is why it costs (H*W)^2 per entry. Readout: nngp = w^2 * mean
    + b^2, ntk = w^2 * mean(relu' relu' Sigma) + nngp.
    """
    bias = 0.0 if b_std is None else float(b_std) ** 2
    gain = float(w_std) ** 2
    left = torch.as_tensor(x).to(torch.float64)
    left = left[:, 0] if left.ndim == 4 and left.shape[1] == 1 else left
    right = left if x2 is None else torch.as_tensor(x2).to(left.device, torch.float64)
    right = right[:, 0] if right.ndim == 4 and right.shape[1] == 1 else right
    if left.ndim != 3 or right.ndim != 3:
        raise OrbitbenchError(f"CNN kernel input shape {tuple(x.shape)} is not [B, H, W] or [B, 1, H, W]")
    patches_1, patches_2 = _patches(left), _patches(right)  # [B, HW, 9], [B2, HW, 9]
    var_1 = gain / 9 * patches_1.square().sum(-1) + bias  # [B, HW]
    var_2 = gain / 9 * patches_2.square().sum(-1) + bias  # [B2, HW]
    if not gap:
        cov = gain / 9 * torch.einsum("iqk,jqk->ijq", patches_1, patches_2) + bias  # [B, B2, HW]
        nngp_hidden, ntk_hidden = _relu_moments(cov, var_1[:, None, :], var_2[None, :, :], (-1,))
    else:
        nngp_hidden = torch.zeros(left.shape[0], right.shape[0], dtype=torch.float64, device=left.device)
        ntk_hidden = torch.zeros_like(nngp_hidden)
        for i in range(left.shape[0]):
            first = i if x2 is None else 0  # a Gram matrix needs only its upper triangle
            for start in range(first, right.shape[0], block):
                cols = slice(start, min(start + block, right.shape[0]))
                cov = gain / 9 * torch.einsum("qk,jrk->jqr", patches_1[i], patches_2[cols]) + bias  # [c, HW, HW]
                nngp_hidden[i, cols], ntk_hidden[i, cols] = _relu_moments(
                    cov, var_1[i, :, None], var_2[cols, None, :], (-2, -1)
                )
            if progress:
                print(f"\rcnn_gap {kind} (torch): {i + 1}/{left.shape[0]} rows", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        if x2 is None:
            upper = torch.ones_like(nngp_hidden, dtype=torch.bool).triu()
            nngp_hidden = torch.where(upper, nngp_hidden, nngp_hidden.T)
            ntk_hidden = torch.where(upper, ntk_hidden, ntk_hidden.T)
    nngp_out = gain * nngp_hidden + bias
    out = nngp_out if kind == "nngp" else gain * ntk_hidden + nngp_out
    if x2 is None:
        out = 0.5 * (out + out.T)
    return out.cpu()


def pair_kernels(
    points: Tensor,
    *,
    arch: str = "mlp",
    kind: str = "ntk",
    depth: int = 1,
    width: int = 512,
    W_std: float = 1.0,  # noqa: N803
    b_std: float | None = 1.0,
    channels: int = 64,
    chunk: int | None = None,
    progress: bool = False,
    backend: str = "neural_tangents",
) -> Tensor:
    """Gram matrices of many small point sets (orbit pairs): [P, n, ...] -> float64 [P, n, n].

    MLP kernels are cheap: `chunk` pairs (default 256) go through one vmapped, jitted call. CNN
    kernels hold an (H*W)^2 covariance per entry, so they go one pair at a time, `chunk` rows
    (default: about 48 / n entries) per call, keeping memory near 48 * (H*W)^2 * 8 bytes (~250 MB
    for 28x28). `backend="torch"` uses the closed-form CNN kernels (see `infinite_kernel`).
    """
    if points.ndim < 3:
        raise OrbitbenchError(f"pair points shape {tuple(points.shape)} is not [P, n, ...]")
    n_pairs, n = points.shape[:2]
    _check_options(arch, kind, depth, width, channels, backend)
    options = dict(arch=arch, kind=kind, depth=depth, width=width, W_std=W_std, b_std=b_std, channels=channels,
                   backend=backend)
    if arch != "mlp":
        rows = chunk or (16 if backend == "torch" else max(1, 48 // n))
        grams = []
        for p in range(n_pairs):
            grams.append(infinite_kernel(points[p], **options, chunk=rows))
            if progress:
                print(f"\r{arch} {kind}: pair {p + 1}/{n_pairs}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        return torch.stack(grams)
    kernel_fn = _kernel_fn(arch, depth, width, float(W_std), None if b_std is None else float(b_std), channels)
    batched = _vmapped(kernel_fn, kind)
    flat = points.detach().to("cpu", torch.float64).reshape(n_pairs, n, -1).numpy()  # [P, n, D]
    step = chunk or 256
    grams = [np.asarray(batched(flat[start : start + step])) for start in range(0, n_pairs, step)]
    out = torch.from_numpy(np.concatenate(grams, axis=0))
    return 0.5 * (out + out.transpose(-1, -2))


@lru_cache(maxsize=32)
def _vmapped(kernel_fn: Callable, kind: str) -> Callable:
    import jax

    return jax.jit(jax.vmap(lambda x: kernel_fn(x, None, get=kind)))


def mlp_ntk(
    x: Tensor,
    x2: Tensor | None = None,
    depth: int = 1,
    W_std: float = 1.0,  # noqa: N803
    b_std: float | None = 1.0,
) -> Tensor:
    """Infinite-width NTK of the ReLU MLP of THEORY.md §4 on flattened inputs -> float64 [B, B2]."""
    return infinite_kernel(x, x2, arch="mlp", kind="ntk", depth=depth, W_std=W_std, b_std=b_std)


def rbf_kernel(x: Tensor, x2: Tensor | None = None, length: float = 1.4) -> Tensor:
    """`exp(-length^2 |x - x'|^2)` on flattened inputs (the paper's toy kernel) -> [B, B2]."""
    left = x.reshape(x.shape[0], -1)
    right = left if x2 is None else x2.reshape(x2.shape[0], -1)
    sq = (left.square().sum(-1)[:, None] + right.square().sum(-1)[None, :] - 2 * left @ right.T).clamp_min(0)
    return torch.exp(-(length**2) * sq)
