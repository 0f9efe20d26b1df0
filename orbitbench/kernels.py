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


@lru_cache(maxsize=32)
def _kernel_fn(arch: str, depth: int, width: int, w_std: float, b_std: float | None, channels: int) -> Callable:
    """stax kernel function of an architecture (THEORY.md §4), jitted once per configuration."""
    import jax
    from neural_tangents import stax

    jax.config.update("jax_enable_x64", True)
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
) -> Tensor:
    """Analytic infinite-width kernel between `x` [B, ...] and `x2` [B2, ...] -> float64 [B, B2].

    `arch`: `mlp` ([Dense(width), Relu] x depth, Dense(1)), `cnn_fc` (Conv(channels, 3x3, circular),
    Relu, Flatten, Dense(1)) or `cnn_gap` (the same with GlobalAvgPool); `kind`: `ntk` or `nngp`.
    The paper's CNNs have no biases: pass `b_std=None`. `chunk` rows of `x` are evaluated at a time
    (CNN kernels are memory-hungry: O(chunk * B2 * (H*W)^2) per block); `progress` prints to stderr.
    """
    if arch not in ARCHITECTURES:
        raise OrbitbenchError(f"arch={arch!r} is unknown: expected one of {', '.join(ARCHITECTURES)}")
    if kind not in KINDS:
        raise OrbitbenchError(f"kind={kind!r} is unknown: expected one of {', '.join(KINDS)}")
    if depth < 1 or width < 1 or channels < 1:
        raise OrbitbenchError(f"depth={depth}, width={width}, channels={channels}: expected positive integers")
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
) -> Tensor:
    """Gram matrices of many small point sets (orbit pairs): [P, n, ...] -> float64 [P, n, n].

    MLP kernels are cheap: `chunk` pairs (default 256) go through one vmapped, jitted call. CNN
    kernels hold an (H*W)^2 covariance per entry, so they go one pair at a time, `chunk` rows
    (default: about 48 / n entries) per call, keeping memory near 48 * (H*W)^2 * 8 bytes (~250 MB
    for 28x28).
    """
    if points.ndim < 3:
        raise OrbitbenchError(f"pair points shape {tuple(points.shape)} is not [P, n, ...]")
    n_pairs, n = points.shape[:2]
    options = dict(arch=arch, kind=kind, depth=depth, width=width, W_std=W_std, b_std=b_std, channels=channels)
    if arch != "mlp":
        rows = chunk or max(1, 48 // n)
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
