"""Closed-form infinite-width ReLU kernels in torch (docs/THEORY.md §4): float64, on any device.

A ReLU maps centred Gaussians of variances q, q' and covariance c, with cos = c / sqrt(q q'), to
E[relu relu] = sqrt(q q') (sqrt(1 - cos^2) + (pi/2 + asin cos) cos) / (2 pi) and
E[relu' relu'] = (pi/2 + asin cos) / (2 pi) (the arc-cosine kernels; pi/2 + asin = pi - arccos).
Inputs that are bitwise equal, and patches whose directions agree (or are opposite) to ~1e-12, get
cos = 1 (or -1) exactly: rounding would otherwise leave 1 - 1e-16, which the infinite slope of
asin at +-1 turns into errors of ~1e-8 (MNIST is full of parallel constant background patches).

Conventions are neural-tangents' stax ones (NTK parameterisation, the first layer's variance
W_std^2 <x, x'> / fan_in + b_std^2), so that `backend="neural_tangents"` is an independent check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError

HALF_PI = math.pi / 2


def row_ids(keys: Tensor, multipliers: Tensor | None = None) -> Tensor:
    """int64 ids of the distinct rows of int64 `keys` [M, K]: equal ids iff equal rows.

    Rows are hashed to one int64 (random odd multipliers, wrapping) and numbered by a 1-D unique;
    if a check finds two different rows under one id, `torch.unique(dim=0)` (exact, much slower:
    it unbinds the rows) numbers them instead.
    """
    if multipliers is None:
        multipliers = torch.randint(1, 2**62, (keys.shape[1],), generator=torch.Generator().manual_seed(0)) * 2 + 1
    _, ids = torch.unique((keys * multipliers.to(keys.device)).sum(-1), return_inverse=True)  # [M]
    first = torch.full((int(ids.max()) + 1,), keys.shape[0], dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, ids, torch.arange(keys.shape[0], device=keys.device), "amin")
    if not torch.equal(keys[first[ids]], keys):  # a hash collision
        _, ids = torch.unique(keys, dim=0, return_inverse=True)
    return ids


def _input_ids(x: Tensor, x2: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ids of bitwise-equal inputs [A, D] and [B, D] (shared numbering)."""
    ids = row_ids((x if x2 is None else torch.cat([x, x2])).contiguous().view(torch.int64))
    return ids[: x.shape[0]], (ids if x2 is None else ids[x.shape[0] :])


def _cos_terms(cos: Tensor) -> tuple[Tensor, Tensor]:
    """In place on `cos` (clamped to [-1, 1]): -> (pi/2 + asin cos, sqrt(1 - cos^2)); `cos` survives."""
    complement = torch.asin(cos).add_(HALF_PI)  # pi - angle
    sine = torch.mul(cos, cos).neg_().add_(1.0).clamp_min_(0.0).sqrt_()
    return complement, sine


def mlp_kernel(x: Tensor, x2: Tensor | None, *, kind: str, depth: int, w_std: float, b_std: float | None,
               rows: int = 4096, layers: MlpLayers | None = None) -> Tensor:
    """[Dense, Relu] x depth, Dense(1) on [B, D] (and [B2, D]) -> [B, B2] on the inputs' device.

    `layers`: per-layer variances and the standard parameterisation (a kernel twin,
    `orbitbench.theory.twins`) instead of one `b_std` for every layer in the NTK parameterisation.
    """
    right = x if x2 is None else x2
    ids_left, ids_right = _input_ids(x, x2)
    blocks = [
        _mlp_block(x[start : start + rows], right, ids_left[start : start + rows, None] == ids_right[None, :],
                   kind=kind, depth=depth, w_std=w_std, b_std=b_std, layers=layers)
        for start in range(0, x.shape[0], rows)
    ]
    out = torch.cat(blocks)
    return 0.5 * (out + out.T) if x2 is None else out


def mlp_pair_kernels(points: Tensor, *, kind: str, depth: int, w_std: float, b_std: float | None) -> Tensor:
    """Gram matrices of point sets [P, n, D] -> [P, n, n] (a Gram diagonal is exact: cos = 1)."""
    same = torch.eye(points.shape[1], dtype=torch.bool, device=points.device)
    out = _mlp_block(points, points, same, kind=kind, depth=depth, w_std=w_std, b_std=b_std)
    return 0.5 * (out + out.transpose(-1, -2))


def mlp_pair_rows(points: Tensor, *, kind: str, depth: int, w_std: float, b_std: float | None) -> Tensor:
    """First two rows of the Gram matrices of point sets [P, n, D] -> [P, 2, n] (block-circulant pairs)."""
    same = torch.zeros(2, points.shape[1], dtype=torch.bool, device=points.device)
    same[0, 0] = same[1, 1] = True  # rows 0 and 1 are columns 0 and 1
    return _mlp_block(points[:, :2], points, same, kind=kind, depth=depth, w_std=w_std, b_std=b_std)


@dataclass(frozen=True)
class MlpLayers:
    """Per-layer terms of the recursion: `bias_vars[l]` is layer l's bias variance (0: none), l = 0..depth.
    `fan_ins` (n_0 .. n_depth) set: the standard parameterisation, whose NTK adds each layer's own
    parameters as `n_l E(Sigma_l) + [trained_bias[l]]` (`d h / d W` and `d h / d b`). `gains`
    (NTK parameterisation): layer l's raw parameters have variance `gains[l]` instead of 1, which
    scales its covariance by `gains[l]` and its backward factor too, but not its own-parameter term."""

    bias_vars: tuple[float, ...]
    fan_ins: tuple[int, ...] | None = None
    trained_bias: tuple[bool, ...] | None = None
    gains: tuple[float, ...] | None = None


def _mlp_block(left: Tensor, right: Tensor, same: Tensor, *, kind: str, depth: int, w_std: float,
               b_std: float | None, layers: MlpLayers | None = None) -> Tensor:
    """The arc-cosine recursion on [..., A, D] x [..., B, D] -> [..., A, B]; `same` marks equal inputs.

    NTK parameterisation: Theta_1 = Sigma_1, Theta_{l+1} = Sigma_{l+1} + gain E'(Sigma_l) Theta_l;
    standard (`layers.fan_ins`): Theta_1 = x.x' + [b], Theta_{l+1} = n_l E + [b] + gain E' Theta_l.
    """
    gain = float(w_std) ** 2
    if layers is None:
        layers = MlpLayers((0.0 if b_std is None else float(b_std) ** 2,) * (depth + 1))
    standard = layers.fan_ins is not None
    if layers.gains is not None:
        return _mlp_block_raw_gains(left, right, same, kind=kind, depth=depth, gain=gain, layers=layers)
    bias = layers.bias_vars[0]
    fan_in = left.shape[-1]
    q_left = gain / fan_in * left.square().sum(-1) + bias  # [..., A]
    q_right = gain / fan_in * right.square().sum(-1) + bias  # [..., B]
    dot = left @ right.transpose(-1, -2)  # [..., A, B]
    sigma = gain / fan_in * dot + bias
    ntk = None if kind != "ntk" else (dot + float(layers.trained_bias[0]) if standard else sigma.clone())
    for layer in range(1, depth + 1):
        bias = layers.bias_vars[layer]
        scale = torch.sqrt(q_left[..., :, None] * q_right[..., None, :])
        cos = (sigma / scale.clamp_min(torch.finfo(scale.dtype).tiny)).clamp_(-1.0, 1.0).masked_fill_(same, 1.0)
        complement, sine = _cos_terms(cos)
        expectation = sine.addcmul_(complement, cos).mul_(scale)  # 2 pi E[relu(u) relu(v)]
        own = expectation * (layers.fan_ins[layer] / (2 * math.pi)) + float(layers.trained_bias[layer]) if standard and ntk is not None else None
        new_sigma = expectation.mul_(gain / (2 * math.pi)).add_(bias)
        if ntk is not None:
            ntk = complement.mul_(gain / (2 * math.pi)).mul_(ntk).add_(new_sigma if own is None else own)
        sigma = new_sigma
        q_left, q_right = gain / 2 * q_left + bias, gain / 2 * q_right + bias
    return sigma if ntk is None else ntk


def _mlp_block_raw_gains(left: Tensor, right: Tensor, same: Tensor, *, kind: str, depth: int, gain: float,
                         layers: MlpLayers) -> Tensor:
    """`_mlp_block` in the NTK parameterisation with raw parameter variances `g_l = layers.gains[l]`:
    Sigma_l = g_l (w E + v_l), Theta_l = Sigma_l / g_l + g_l w E'(Sigma_{l-1}) Theta_{l-1}."""
    g, bias, fan_in = layers.gains[0], layers.bias_vars[0], left.shape[-1]
    q_left = g * (gain / fan_in * left.square().sum(-1) + bias)  # [..., A]
    q_right = g * (gain / fan_in * right.square().sum(-1) + bias)  # [..., B]
    sigma = g * (gain / fan_in * (left @ right.transpose(-1, -2)) + bias)  # [..., A, B]
    ntk = sigma / g if kind == "ntk" else None
    for layer in range(1, depth + 1):
        g, bias = layers.gains[layer], layers.bias_vars[layer]
        scale = torch.sqrt(q_left[..., :, None] * q_right[..., None, :])
        cos = (sigma / scale.clamp_min(torch.finfo(scale.dtype).tiny)).clamp_(-1.0, 1.0).masked_fill_(same, 1.0)
        complement, sine = _cos_terms(cos)
        expectation = sine.addcmul_(complement, cos).mul_(scale)  # 2 pi E[relu(u) relu(v)]
        new_sigma = expectation.mul_(g * gain / (2 * math.pi)).add_(g * bias)
        if ntk is not None:
            ntk = complement.mul_(g * gain / (2 * math.pi)).mul_(ntk).add_(new_sigma / g)
        sigma = new_sigma
        q_left, q_right = g * (gain / 2 * q_left + bias), g * (gain / 2 * q_right + bias)
    return sigma if ntk is None else ntk


def patches(images: Tensor, size: int = 3) -> Tensor:
    """Circular size x size neighbourhoods: [B, H, W] -> [B, H*W, size^2] (`x(p + delta)`, |delta| <= size // 2)."""
    reach = range(-(size // 2), size // 2 + 1)
    shifted = [torch.roll(images, shifts=(-dy, -dx), dims=(-2, -1)) for dy in reach for dx in reach]
    return torch.stack(shifted, dim=-1).flatten(1, 2)


def patch_features(images: Tensor, gain: float, bias: float, size: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """First-layer features: [B, H, W] -> sign-canonical unit vectors u [B, HW, K], scales s [B, HW]
    and the scaled patches themselves [B, HW, K] (s[p] times the true unit vector).

    Sigma(x, x')[p, p'] = gain / size^2 <patch_x(p), patch_x'(p')> + bias = s[p] s'[p'] <u[p], u'[p']> up
    to the signs of u, which `cnn_kernel` accounts for. Norms sum sorted squares, so a quarter turn
    (which permutes a patch's entries) keeps them bitwise equal: block-circulant kernels then agree
    with directly computed ones.
    """
    raw = patches(images, size) * math.sqrt(gain / size**2)  # [B, HW, size^2]
    if bias > 0:
        raw = torch.cat([raw, torch.full_like(raw[..., :1], math.sqrt(bias))], dim=-1)  # [B, HW, size^2 + 1]
    scale = raw.square().sort(dim=-1).values.sum(-1).sqrt()  # [B, HW]
    unit = raw / scale.clamp_min(torch.finfo(raw.dtype).tiny)[..., None]  # a zero patch stays zero
    largest = torch.gather(unit, -1, unit.abs().argmax(-1, keepdim=True))  # [B, HW, 1]
    sign = torch.where(largest < 0, -1.0, 1.0).to(unit.dtype)  # u and -u get the same canonical vector
    return unit * sign, scale, raw


def _direction_ids(unit: Tensor, other: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ids of unit vectors [B, HW, K] rounded to 2^-40 (shared numbering): [B, HW], [B2, HW]."""
    rows = unit if other is None else torch.cat([unit, other])
    ids = row_ids(torch.round(rows.flatten(0, 1) * 2.0**40).long())  # [M]
    left = ids[: unit.shape[0] * unit.shape[1]].view(unit.shape[:-1])
    return left, (left if other is None else ids[left.numel() :].view(other.shape[:-1]))


def cnn_kernel(left: Tensor, right: Tensor | None, *, gap: bool, kind: str, w_std: float, b_std: float | None,
               block_elements: int, progress: bool = False, size: int = 3) -> Tensor:
    """Conv(size x size, circular) -> Relu -> [GlobalAvgPool] -> Flatten -> Dense(1): [B, H, W] -> [B, B2].

    `kind`: "ntk" or "nngp" (`cnn_kernels` gives both from one pass).
    """
    nngp, ntk = cnn_kernels(left, right, gap=gap, w_std=w_std, b_std=b_std, block_elements=block_elements,
                            progress=progress, size=size)
    return nngp if kind == "nngp" else ntk


def cnn_kernels(left: Tensor, right: Tensor | None, *, gap: bool, w_std: float, b_std: float | None,
                block_elements: int, progress: bool = False, size: int = 3) -> tuple[Tensor, Tensor]:
    """(NNGP, NTK) of Conv(size x size, circular) -> Relu -> [GlobalAvgPool] -> Flatten -> Dense(1), NTK
    parameterisation: [B, H, W] (x) [B2, H, W] -> two [B, B2].

    After the ReLU, CNN-FC keeps the positions p = p' (Flatten + Dense averages them); CNN-GAP
    averages over all (p, p'). With F = mean s s' cos (pi/2 + asin cos) and G = mean s s' sqrt(1 -
    cos^2) over those positions: nngp = gain (F + G) / (2 pi) + bias, ntk = gain F / (2 pi) + nngp.
    F splits into the linear part pi/2 mean s s' cos, a product of patch sums, and mean s s' cos
    asin cos, which like G is even in cos and so is computed on sign-canonical patches: parallel
    and opposite patches then share one id and get |cos| = 1 exactly.
    """
    if size < 1 or size % 2 == 0:
        raise OrbitbenchError(f"cnn kernel: kernel size {size}; expected an odd size >= 1")
    gain, bias = float(w_std) ** 2, 0.0 if b_std is None else float(b_std) ** 2
    u_left, s_left, raw_left = patch_features(left, gain, bias, size)
    u_right, s_right, raw_right = (u_left, s_left, raw_left) if right is None else patch_features(right, gain, bias, size)
    ids_left, ids_right = _direction_ids(u_left, None if right is None else u_right)
    hw = u_left.shape[1]
    if gap:
        linear = raw_left.sum(1) @ raw_right.sum(1).T / hw**2  # mean over (p, p') of s s' cos
        h_mean, g_mean = _gap_means(u_left, s_left, ids_left, u_right, s_right, ids_right, right is None,
                                    block_elements, progress)
    else:
        linear = raw_left.flatten(1) @ raw_right.flatten(1).T / hw  # mean over p of s s' cos
        h_mean, g_mean = _fc_means(u_left, s_left, ids_left, u_right, s_right, ids_right, block_elements)
    f_mean = HALF_PI * linear + h_mean
    nngp = gain / (2 * math.pi) * (f_mean + g_mean) + bias
    ntk = gain / (2 * math.pi) * f_mean + nngp
    if right is None:
        nngp, ntk = 0.5 * (nngp + nngp.T), 0.5 * (ntk + ntk.T)
    return nngp, ntk


def _even_terms(cos: Tensor, same: Tensor, h: Tensor, g: Tensor) -> None:
    """In place: cos clamped, 1 where `same`; h = cos asin cos, g = sqrt(1 - cos^2) (same shapes)."""
    cos.clamp_(-1.0, 1.0).masked_fill_(same, 1.0)
    torch.asin(cos, out=h).mul_(cos)
    torch.addcmul(torch.ones((), dtype=cos.dtype, device=cos.device), cos, cos, value=-1.0, out=g).sqrt_()  # >= 0 as |cos| <= 1


def _gap_means(u1, s1, ids1, u2, s2, ids2, gram: bool, block_elements: int, progress: bool) -> tuple[Tensor, Tensor]:
    """Means over all position pairs of s s' h(cos) and s s' g(cos): [B, B2] each, blocks of the cap.

    A patch of scale 0 (an all-zero neighbourhood without a bias: MNIST's background) adds nothing,
    so only the other patches enter: the right set's are packed into one list, each left image's
    nonzero patches meet every packed column block at once, and the column sums are added to
    their images (`index_add_`).
    """
    from tqdm.auto import tqdm

    n_left, hw, width = u1.shape
    n_right = u2.shape[0]
    keep = s2 > 0  # [B2, HW]
    owner = torch.arange(n_right, device=u2.device)[:, None].expand(-1, hw)[keep]  # [N] image of each packed patch
    packed_u, packed_s, packed_ids = u2[keep], s2[keep], ids2[keep]  # [N, K], [N], [N]
    offsets = torch.cat([keep.new_zeros(1, dtype=torch.long), keep.sum(1).cumsum(0)]).tolist()  # image -> first patch
    h_sum = torch.zeros(n_left, n_right, dtype=u1.dtype, device=u1.device)
    g_sum = torch.zeros_like(h_sum)
    for i in tqdm(range(n_left), desc="cnn_gap kernel rows", disable=not progress, leave=False):
        mine = s1[i] > 0
        left_u, left_s, left_ids = u1[i, mine], s1[i, mine], ids1[i, mine]  # [r, K], [r], [r]
        if len(left_s) == 0:
            continue
        step = max(1, block_elements // len(left_s))
        for start in range(offsets[i] if gram else 0, len(packed_s), step):
            cols = slice(start, min(start + step, len(packed_s)))
            cos = left_u @ packed_u[cols].T  # [r, c]
            h, g = torch.empty_like(cos), torch.empty_like(cos)
            _even_terms(cos, left_ids[:, None] == packed_ids[None, cols], h, g)
            h_sum[i].index_add_(0, owner[cols], (left_s @ h) * packed_s[cols])
            g_sum[i].index_add_(0, owner[cols], (left_s @ g) * packed_s[cols])
    if gram:
        lower = torch.ones_like(h_sum, dtype=torch.bool).tril(-1)
        h_sum, g_sum = torch.where(lower, h_sum.T, h_sum), torch.where(lower, g_sum.T, g_sum)
    return h_sum / hw**2, g_sum / hw**2


def _fc_means(u1, s1, ids1, u2, s2, ids2, block_elements: int) -> tuple[Tensor, Tensor]:
    """Means over positions p = p' of s s' h(cos) and s s' g(cos): [B, B2] each, blocks of the cap.

    Positions are the batch of one matrix product per block: [p, B, K] @ [p, K, B2] -> [p, B, B2].
    """
    n_left, hw, _ = u1.shape
    n_right = u2.shape[0]
    step = max(1, block_elements // (n_left * n_right))
    h_sum = torch.zeros(n_left, n_right, dtype=u1.dtype, device=u1.device)
    g_sum = torch.zeros_like(h_sum)
    for start in range(0, hw, step):
        part = slice(start, start + step)
        cos = torch.bmm(u1[:, part].transpose(0, 1), u2[:, part].permute(1, 2, 0))  # [p, B, B2]
        h, g = torch.empty_like(cos), torch.empty_like(cos)
        _even_terms(cos, ids1[:, part].T[:, :, None] == ids2[:, part].T[:, None, :], h, g)
        weights = s1[:, part].T[:, :, None] * s2[:, part].T[:, None, :]  # [p, B, B2]
        h_sum += torch.einsum("pij,pij->ij", h, weights)
        g_sum += torch.einsum("pij,pij->ij", g, weights)
    return h_sum / hw, g_sum / hw
