"""Infinite-width neural kernels (NTK, NNGP) in closed form, and the RBF kernel of the toy.

The default `backend="torch"` evaluates the arc-cosine recursions of the ReLU MLP and of the
one-layer circular CNNs (docs/THEORY.md §4) with torch in float64, on the device of the input:
float32 would destroy the exactly constant orbit blocks of CNN-GAP kernels. `backend=
"neural_tangents"` is the independent reference the tests and benchmarks compare against; it is
an optional install, imported only by `neural_tangents_stax`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import GroupAction

ARCHITECTURES = ("mlp", "cnn_fc", "cnn_gap")
KINDS = ("ntk", "nngp")
BACKENDS = ("torch", "neural_tangents")
# Exact pixel permutations under which each kernel is invariant when applied to both inputs:
# the MLP sees only dot products and norms; the circular 3x3 CNNs sum over positions of a torus
# whose neighbourhoods whole-pixel circular shifts and quarter turns map onto each other.
JOINT_INVARIANCES = {
    "mlp": frozenset({"circular_shift", "rot90"}),
    "cnn_fc": frozenset({"circular_shift", "rot90"}),
    "cnn_gap": frozenset({"circular_shift", "rot90"}),
}
# Elements of one temporary [rows, cols] block of the CNN kernels: cache-sized on a CPU, large on
# an accelerator (about four such float64 buffers are alive at once).
BLOCK_ELEMENTS = {"cpu": 1 << 18}
DEFAULT_BLOCK_ELEMENTS = 1 << 25


def neural_tangents_stax():
    """The `neural_tangents.stax` module, with JAX in float64 (`orbitbench.theory.reference`)."""
    from orbitbench.theory.reference import neural_tangents

    return neural_tangents().stax


@lru_cache(maxsize=32)
def _kernel_fn(arch: str, depth: int, width: int, w_std: float, b_std: float | None, channels: int) -> Callable:
    """stax kernel function of an architecture (docs/THEORY.md §4), jitted once per configuration."""
    stax = neural_tangents_stax()
    import jax

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
    backend: str = "torch",
    block_elements: int | None = None,
) -> Tensor:
    """Analytic infinite-width kernel between `x` [B, ...] and `x2` [B2, ...] -> CPU float64 [B, B2].

    `arch`: `mlp` ([Dense(width), Relu] x depth, Dense(1)), `cnn_fc` (Conv(channels, 3x3, circular),
    Relu, Flatten, Dense(1)) or `cnn_gap` (the same with GlobalAvgPool); `kind`: `ntk` or `nngp`;
    NTK parameterisation. The paper's CNNs have no biases: pass `b_std=None`. `depth`/`width` apply
    to the MLP only; `channels` has no effect on an infinite-width kernel.

    torch backend: runs on the device of `x`; `chunk` rows of an MLP kernel per step, and
    `block_elements` caps one temporary block of the CNN kernels (memory ~ 4 * 8 bytes per element;
    default cache-sized on a CPU, 2^25 elsewhere). neural_tangents backend: `chunk` rows per call.
    """
    _check_options(arch, kind, depth, width, channels, backend)
    if backend == "neural_tangents":
        return _neural_tangents_kernel(x, x2, arch, kind, depth, width, W_std, b_std, channels, chunk, progress)
    from orbitbench.theory import closed_form

    left = torch.as_tensor(x).to(torch.float64)
    right = None if x2 is None else torch.as_tensor(x2).to(left.device, torch.float64)
    if arch == "mlp":
        out = closed_form.mlp_kernel(left.flatten(1), None if right is None else right.flatten(1), kind=kind,
                                     depth=depth, w_std=W_std, b_std=b_std, rows=chunk or 4096)
    else:
        block = block_elements or BLOCK_ELEMENTS.get(left.device.type, DEFAULT_BLOCK_ELEMENTS)
        out = closed_form.cnn_kernel(_images(left), None if right is None else _images(right), gap=arch == "cnn_gap",
                                     kind=kind, w_std=W_std, b_std=b_std, block_elements=block, progress=progress)
    return out.cpu()


def _images(x: Tensor) -> Tensor:
    """[B, H, W] or [B, 1, H, W] -> [B, H, W]."""
    x = x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x
    if x.ndim != 3:
        raise OrbitbenchError(f"CNN kernel input shape {tuple(x.shape)} is not [B, H, W] or [B, 1, H, W]")
    return x


def _neural_tangents_kernel(x, x2, arch, kind, depth, width, w_std, b_std, channels, chunk, progress) -> Tensor:
    kernel_fn = _kernel_fn(arch, depth, width, float(w_std), None if b_std is None else float(b_std), channels)
    left = _to_jax_input(x, arch)
    right = left if x2 is None else _to_jax_input(x2, arch)
    step = left.shape[0] if chunk is None else max(1, chunk)
    from tqdm.auto import tqdm

    blocks = [np.asarray(kernel_fn(left[start : start + step], right, get=kind))
              for start in tqdm(range(0, left.shape[0], step), desc=f"{arch} {kind} (neural-tangents)",
                                disable=not progress, leave=False)]
    out = torch.from_numpy(np.concatenate(blocks, axis=0).astype(np.float64))
    return 0.5 * (out + out.T) if x2 is None else out  # exact symmetry; blocks are computed independently


def _to_jax_input(x: Tensor, arch: str) -> np.ndarray:
    """torch [B, ...] -> float64 numpy: [B, D] for the MLP, NHWC [B, H, W, 1] for the CNNs."""
    x = x.detach().to("cpu", torch.float64)
    if arch == "mlp":
        return x.reshape(x.shape[0], -1).numpy()
    return _images(x)[..., None].numpy()


def _check_options(arch: str, kind: str, depth: int, width: int, channels: int, backend: str) -> None:
    if arch not in ARCHITECTURES:
        raise OrbitbenchError(f"arch={arch!r} is unknown: expected one of {', '.join(ARCHITECTURES)}")
    if kind not in KINDS:
        raise OrbitbenchError(f"kind={kind!r} is unknown: expected one of {', '.join(KINDS)}")
    if depth < 1 or width < 1 or channels < 1:
        raise OrbitbenchError(f"depth={depth}, width={width}, channels={channels}: expected positive integers")
    if backend not in BACKENDS:
        raise OrbitbenchError(f"backend={backend!r} is unknown: expected one of {', '.join(BACKENDS)}")


def block_circulant(arch: str, group: GroupAction | None, image_shape: tuple[int, ...]) -> bool:
    """Whether interleaved orbit-pair Gram matrices of `group` are block-circulant for `arch`.

    Decided from declarations only: the group's poses must be exact pixel permutations of a kind
    (`GroupAction.exact_kind`) under whose joint action the kernel is invariant
    (`JOINT_INVARIANCES`); then K[g^k x, g^l y] = K[x, g^(l-k) y] (docs/THEORY.md §2).
    """
    if group is None or len(image_shape) != 2:
        return False
    return group.exact_kind(*image_shape) in JOINT_INVARIANCES[arch]


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
    backend: str = "torch",
    group: GroupAction | None = None,
    block_elements: int | None = None,
) -> Tensor:
    """Gram matrices of many small point sets (orbit pairs): [P, n, ...] -> CPU float64 [P, n, n].

    With `group` (the points are interleaved orbit pairs of it, `pairs.OrbitPairs`) and a kernel
    invariant to its exact poses (`block_circulant`), only the first block row K[{a, b}, all] is
    computed and the rest follows by circular shifts: n/2 times fewer kernel entries.
    MLP pairs are batched (`chunk` pairs per call, default 256); CNN pairs go one at a time.
    """
    if points.ndim < 3:
        raise OrbitbenchError(f"pair points shape {tuple(points.shape)} is not [P, n, ...]")
    n_pairs, n = points.shape[:2]
    _check_options(arch, kind, depth, width, channels, backend)
    options = dict(arch=arch, kind=kind, depth=depth, width=width, W_std=W_std, b_std=b_std, channels=channels,
                   backend=backend, block_elements=block_elements)
    shape = tuple(points.shape[2:]) if arch != "mlp" else tuple(points.shape[-2:]) if points.ndim == 4 else ()
    if block_circulant(arch, group, shape) and n % 2 == 0:
        if arch == "mlp" and backend == "torch":
            from orbitbench.theory import closed_form

            flat = points.to(torch.float64).flatten(2)  # [P, n, D]
            rows = torch.cat([closed_form.mlp_pair_rows(part, kind=kind, depth=depth, w_std=W_std, b_std=b_std)
                              for part in flat.split(chunk or 256)]).cpu()
        else:
            rows = torch.stack([infinite_kernel(points[p, :2], points[p], **options)
                                for p in _pair_range(n_pairs, progress, arch)])
        return expand_block_circulant(rows)  # [P, 2, n] -> [P, n, n]
    if arch == "mlp" and backend == "neural_tangents":
        return _neural_tangents_pairs(points, arch, kind, depth, width, W_std, b_std, channels, chunk)
    if arch == "mlp":
        from orbitbench.theory import closed_form

        flat = points.to(torch.float64).flatten(2)  # [P, n, D]
        out = torch.cat([closed_form.mlp_pair_kernels(part, kind=kind, depth=depth, w_std=W_std, b_std=b_std)
                         for part in flat.split(chunk or 256)])
        return out.cpu()
    return torch.stack([infinite_kernel(points[p], **options, chunk=chunk)
                        for p in _pair_range(n_pairs, progress, arch)])


def _pair_range(n_pairs: int, progress: bool, arch: str):
    from tqdm.auto import tqdm

    return tqdm(range(n_pairs), desc=f"{arch} orbit pairs", unit="pair", disable=not progress, leave=False)


def expand_block_circulant(first_rows: Tensor) -> Tensor:
    """Interleaved two-orbit Gram matrices from their first block row: [P, 2, 2N] -> [P, 2N, 2N].

    Row 2k + s is row s shifted right by k blocks of two (pose k of orbit s against pose l is pose
    0 against pose l - k); the result is symmetrised, as a directly computed Gram matrix is.
    """
    n_pairs, _, n = first_rows.shape
    half = n // 2
    k = torch.arange(half)
    blocks = first_rows.reshape(n_pairs, 2, half, 2)  # [P, s, l, t]
    source = (k[None, :] - k[:, None]) % half  # [k, l] -> (l - k) mod N
    expanded = blocks[:, :, source]  # [P, s, k, l, t]
    out = expanded.permute(0, 2, 1, 3, 4).reshape(n_pairs, n, n)  # rows 2k + s, columns 2l + t
    return 0.5 * (out + out.transpose(-1, -2))


def _neural_tangents_pairs(points, arch, kind, depth, width, w_std, b_std, channels, chunk) -> Tensor:
    kernel_fn = _kernel_fn(arch, depth, width, float(w_std), None if b_std is None else float(b_std), channels)
    batched = _vmapped(kernel_fn, kind)
    flat = points.detach().to("cpu", torch.float64).flatten(2).numpy()  # [P, n, D]
    step = chunk or 256
    grams = [np.asarray(batched(flat[start : start + step])) for start in range(0, flat.shape[0], step)]
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
    """Infinite-width NTK of the ReLU MLP of docs/THEORY.md §4 on flattened inputs -> float64 [B, B2]."""
    return infinite_kernel(x, x2, arch="mlp", kind="ntk", depth=depth, W_std=W_std, b_std=b_std)


def rbf_kernel(x: Tensor, x2: Tensor | None = None, length: float = 1.4) -> Tensor:
    """`exp(-length^2 |x - x'|^2)` on flattened inputs (the paper's toy kernel) -> [B, B2]."""
    left = x.reshape(x.shape[0], -1)
    right = left if x2 is None else x2.reshape(x2.shape[0], -1)
    sq = (left.square().sum(-1)[:, None] + right.square().sum(-1)[None, :] - 2 * left @ right.T).clamp_min(0)
    return torch.exp(-(length**2) * sq)

