"""Empirical neural tangent kernel `Theta(x, x') = J(x) J(x')^T` of any `nn.Module`.

The kernel is summed over parameters, so each layer contributes its own term. For `nn.Linear`
and `nn.Conv2d` that term follows from two per-sample quantities one forward and one backward
pass give for the whole batch (neural-tangents calls these *structured derivatives*):

- Linear `y = a W^T + b` on one token: `dy/dW = g a^T`, so the weight term is
  `(g g'^T) * (a a'^T)` (elementwise), never forming the [out x in] per-sample gradient.
  On several tokens the cheaper of this pairwise form and explicit per-sample gradients is used.
- Conv2d: the per-sample weight gradient is `g @ unfold(a)^T` (a small [out, in*k*k] matrix).

Here `a` is the layer's input and `g = d f / d y` the cotangent at its output, recorded by forward
hooks that add a zero "probe" to each output; the gradient with respect to the probe is `g`.
Every other trainable parameter (LayerNorm, embeddings, `MultiheadAttention`'s functional
projections, ...) goes through the generic `torch.func` path: per-sample Jacobians by
`vmap(jacrev(functional_call))`.

Several outputs at once (`output="centred"`, or a callable returning [B, K]) give the kernel
summed over them, `sum_k J_k(x) J_k(x')^T` (the trace NTK): one forward pass and K backward
passes, with the cotangents of all K outputs side by side in the same layer products.

Samples must not interact in eval mode (true for every network in the zoo: BatchNorm uses its
running statistics there). The model is evaluated in eval mode and left exactly as it was:
parameters, buffers and every submodule's train/eval flag are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.utils import parametrize

from orbitbench.errors import OrbitbenchError

OutputSpec = Union[None, int, tuple[int, int], str, Callable[[Tensor], Tensor]]
Method = Literal["structured", "jacobian"]

__all__ = ["NtkFactors", "OutputSpec", "empirical_ntk", "evaluating", "factor_kernel", "ntk_factors", "output_selector",
           "structured_layers"]


def output_selector(output: OutputSpec) -> Callable[[Tensor], Tensor]:
    """Turn `output` into a function: network output [B, ...] -> one scalar per input [B] (or [B, K]).

    None: the network already returns one number per input ([B] or [B, 1]); int: that logit;
    (i, j): logit i minus logit j (the two-orbit label +1 / -1 of a class pair); "centred": every
    logit minus their mean, [B, C] (the same for logits and log-probabilities); callable: as is.
    """
    if output == "centred":
        return lambda out: out - out.mean(1, keepdim=True)
    if output is None:

        def select(out: Tensor) -> Tensor:
            if out.dim() > 2 or (out.dim() == 2 and out.shape[1] != 1):
                raise OrbitbenchError(
                    f"empirical_ntk: output=None needs one number per input, the model returned "
                    f"shape {tuple(out.shape)}; pass output=<logit index>, (i, j) or a callable"
                )
            return out.reshape(out.shape[0])

        return select
    if isinstance(output, bool):
        raise OrbitbenchError(f"empirical_ntk: output={output!r} is not a logit index")
    if isinstance(output, int):
        return lambda out: out[:, output]
    if isinstance(output, (tuple, list)) and len(output) == 2 and all(isinstance(i, int) for i in output):
        i, j = output
        return lambda out: out[:, i] - out[:, j]
    if callable(output):
        return output
    raise OrbitbenchError(
        f"empirical_ntk: output={output!r}; accepted: None, a logit index, a pair (i, j), 'centred' or a callable"
    )


def _is_structured(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(module)


def structured_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear / Conv2d submodules whose trainable weights are not shared with any other module."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    layers = {}
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if _is_structured(module) and params and all(owners[id(p)] == 1 for p in params):
            layers[name] = module
    return layers


@dataclass
class _Factors:
    """Per-sample pieces of one chunk whose products give the kernel (see `_kernel_from`)."""

    gram: list[Tensor] = field(default_factory=list)  # [B, D]: K += J J'^T
    outer: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # a [B, I], g [B, O]
    tokens: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # a [B, T, I], g [B, T, O]


class _Demote(Exception):
    """A structured layer was not called batch-first: redo it through the generic path."""

    def __init__(self, names: set[str]):
        super().__init__(", ".join(sorted(names)))
        self.names = names


@contextmanager
def _probing(layers: dict[str, nn.Module], calls: dict[str, list]) -> Iterator[None]:
    """Record each layer's input and add a zero leaf (the probe) to its output."""

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            probe = torch.zeros_like(out, requires_grad=True)
            calls[name].append((args[0].detach(), probe))
            return out + probe

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _conv_patches(module: nn.Conv2d, a: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C*kh*kw, P] input patches exactly as the convolution sees them."""
    padding = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        a = F.pad(a, module._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    return F.unfold(a, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)


def _batch_first(module: nn.Module, a: Tensor, batch: int) -> bool:
    """Was this call on a batch-first input, one row per sample (so per-sample terms can be read off)?"""
    ndim = 4 if isinstance(module, nn.Conv2d) else a.dim()
    return a.dim() == ndim and a.dim() >= 2 and a.shape[0] == batch


def _structured_factors(
    layers: dict[str, nn.Module], calls: dict[str, list], grads: dict[int, Tensor | None], batch: int, out: _Factors
) -> None:
    bad = {n for n, m in layers.items() if not calls[n] or not all(_batch_first(m, a, batch) for a, _ in calls[n])}
    if bad:
        raise _Demote(bad)
    for name, module in layers.items():
        want_w, want_b = module.weight.requires_grad, module.bias is not None and module.bias.requires_grad
        used = [(a, grads[id(p)]) for a, p in calls[name] if grads[id(p)] is not None]
        if not used:
            continue  # the scalar output does not depend on this layer: zero kernel term
        if isinstance(module, nn.Linear):
            a = torch.cat([a.reshape(batch, -1, a.shape[-1]) for a, _ in used], dim=1)  # [B, T, I]
            g = torch.cat([g.reshape(batch, -1, g.shape[-1]) for _, g in used], dim=1)  # [B, T, O]
            t, i, o = a.shape[1], a.shape[2], g.shape[2]
            if want_w and want_b and t == 1:  # the bias folded in: (a a'^T + 1) * (g g'^T)
                out.outer.append((F.pad(a[:, 0], (0, 1), value=1.0), g[:, 0]))
                continue
            if want_b:
                out.gram.append(g.sum(1))
            if not want_w:
                continue
            if t == 1:
                out.outer.append((a[:, 0], g[:, 0]))
            elif t * t * (i + o) < i * o:  # pairwise token products cheaper than [O, I] gradients
                out.tokens.append((a, g))
            else:
                out.gram.append(torch.einsum("bto,bti->boi", g, a).reshape(batch, -1))
        else:
            groups = module.groups
            jw, jb = 0, 0
            for a, g in used:
                u = _conv_patches(module, a)  # [B, C*k, P]
                u = u.reshape(batch, groups, -1, u.shape[-1])  # [B, groups, C/groups*k, P]
                g = g.reshape(batch, groups, -1, u.shape[-1])  # [B, groups, O/groups, P]
                jw = jw + torch.einsum("bgop,bgkp->bgok", g, u)
                jb = jb + g.sum(-1)
            if want_w:
                out.gram.append(jw.reshape(batch, -1))
            if want_b:
                out.gram.append(jb.reshape(batch, -1))


def _generic_jacobian(
    model: nn.Module, select: Callable[[Tensor], Tensor], params: dict[str, Tensor], fixed: dict[str, Tensor], x: Tensor
) -> Tensor:
    """Per-sample Jacobian [B, D] of the scalar output w.r.t. `params`, through torch.func."""

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return select(functional_call(model, (p, fixed), (xi.unsqueeze(0),))).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)  # name -> [B, *shape]
    return torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)


def _chunk_factors(
    model: nn.Module,
    select: Callable[[Tensor], Tensor],
    x: Tensor,
    layers: dict[str, nn.Module],
    generic: dict[str, Tensor],
    fixed: dict[str, Tensor],
) -> _Factors:
    out = _Factors()
    if layers:
        calls: dict[str, list] = {n: [] for n in layers}
        with _probing(layers, calls):
            f = select(functional_call(model, {**generic, **fixed}, (x,)))
        probes = [p for n in layers for _, p in calls[n]]
        columns = f.reshape(f.shape[0], -1).unbind(1)  # K outputs, each [B]
        per_output = []
        for k, column in enumerate(columns):
            if column.requires_grad and probes:
                grads = torch.autograd.grad(column.sum(), probes, allow_unused=True, retain_graph=k + 1 < len(columns))
            else:
                grads = [None] * len(probes)
            if len(columns) > 1:  # every output must give every layer the same factors to sit side by side
                grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, probes)]
            part = _Factors()
            _structured_factors(layers, calls, {id(p): g for p, g in zip(probes, grads)}, x.shape[0], part)
            per_output.append(part)
        _side_by_side(per_output, out)
    if generic:
        out.gram.append(_generic_jacobian(model, select, generic, fixed, x))
    return out


def _side_by_side(parts: list[_Factors], out: _Factors) -> None:
    """Factors of K outputs -> factors of their summed kernel: cotangents and Jacobians concatenated
    along features (`sum_k (a a'^T) * (g_k g_k'^T) = (a a'^T) * ([g_1..g_K] [g'_1..g'_K]^T)`)."""
    cat = lambda ts: torch.cat(list(ts), -1)  # noqa: E731
    first = parts[0]
    out.gram += [cat(p.gram[i] for p in parts) for i in range(len(first.gram))]
    out.outer += [(a, cat(p.outer[i][1] for p in parts)) for i, (a, _) in enumerate(first.outer)]
    out.tokens += [(a, cat(p.tokens[i][1] for p in parts)) for i, (a, _) in enumerate(first.tokens)]


def _kernel_from(f1: _Factors, f2: _Factors) -> Tensor:
    """Sum of all layer terms between two sets of samples: [N1, N2]."""
    shapes = lambda f: ([t.shape[1:] for t in f.gram], [a.shape[1:] for a, _ in f.outer + f.tokens])  # noqa: E731
    if shapes(f1) != shapes(f2):  # x1 and x2 took different paths through the network
        raise RuntimeError("empirical_ntk: x1 and x2 gave differently shaped per-layer factors")
    terms = []
    if f1.gram:
        terms.append(torch.cat(f1.gram, 1) @ torch.cat(f2.gram, 1).T)
    for (a1, g1), (a2, g2) in zip(f1.outer, f2.outer):
        terms.append((a1 @ a2.T) * (g1 @ g2.T))
    for (a1, g1), (a2, g2) in zip(f1.tokens, f2.tokens):
        terms.append(torch.einsum("ati,bsi,ato,bso->ab", a1, a2, g1, g2))
    return torch.stack(terms).sum(0)


def _cat_factors(parts: Sequence[_Factors]) -> _Factors:
    if len(parts) == 1:
        return parts[0]
    cat = lambda xs: torch.cat(list(xs), 0)  # noqa: E731
    return _Factors(
        gram=[cat(p.gram[k] for p in parts) for k in range(len(parts[0].gram))],
        outer=[tuple(cat(p.outer[k][j] for p in parts) for j in range(2)) for k in range(len(parts[0].outer))],
        tokens=[tuple(cat(p.tokens[k][j] for p in parts) for j in range(2)) for k in range(len(parts[0].tokens))],
    )


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A graph-free copy (or view) in `dtype`; integer tensors keep theirs."""
    return t.detach().to(dtype) if t.is_floating_point() else t.detach()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; afterwards every submodule's own train/eval flag comes back."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    output: OutputSpec = None,
    *,
    chunk_size: int = 256,
    dtype: torch.dtype | None = None,
    method: Method = "structured",
) -> Tensor:
    """Empirical NTK [N1, N2] between inputs x1 [N1, ...] and x2 [N2, ...] (x2=None: x1 itself).

    `output` picks one scalar per input, or several whose kernels are summed (see `output_selector`). `chunk_size` bounds how many
    inputs go through the network at once. `dtype` (e.g. torch.float64) evaluates a cast copy of
    the parameters, leaving the model's own untouched; default: the model's dtype. The kernel is
    on the model's device. `method="jacobian"` sends every parameter through the generic
    torch.func path (a reference and benchmark baseline); "structured" (default) uses layer
    structure for Linear / Conv2d.
    """
    if method not in ("structured", "jacobian"):
        raise OrbitbenchError(f"empirical_ntk: method={method!r}; accepted: 'structured', 'jacobian'")
    if chunk_size < 1:
        raise OrbitbenchError(f"empirical_ntk: chunk_size={chunk_size}; accepted: a positive integer")
    select = output_selector(output)
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else x1.device
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x1.dtype)

    factors = _all_factors(model, [x1] if x2 is None else [x1, x2], select, chunk_size, dtype, method)
    if factors is None:
        return torch.zeros(len(x1), len(x1 if x2 is None else x2), device=device, dtype=dtype)
    return _kernel_from(factors[0], factors[-1]).detach()


def _all_factors(model: nn.Module, xs: Sequence[Tensor], select: Callable[[Tensor], Tensor], chunk_size: int,
                 dtype: torch.dtype, method: Method) -> list[_Factors] | None:
    """The per-sample factors of each input set (None: the model has no trainable parameter)."""
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else xs[0].device
    # inference_mode(False): Lightning runs validation hooks under inference mode, where no graph is kept
    with evaluating(model), torch.inference_mode(False), torch.enable_grad():
        trainable = {n: _cast(p, dtype) for n, p in model.named_parameters() if p.requires_grad}
        fixed = {n: _cast(p, dtype) for n, p in model.named_parameters() if not p.requires_grad}
        fixed.update({n: _cast(b, dtype) for n, b in model.named_buffers()})
        inputs = [_cast(x, dtype).to(device).clone() for x in xs]
        layers = structured_layers(model) if method == "structured" else {}
        while True:
            owned = {f"{n}.{k}" if n else k for n, m in layers.items() for k, _ in m.named_parameters(recurse=False)}
            generic = {n: p for n, p in trainable.items() if n not in owned}
            frozen = {**fixed, **{n: p for n, p in trainable.items() if n in owned}}
            try:
                factors = [
                    _cat_factors([_chunk_factors(model, select, c, layers, generic, frozen) for c in x.split(chunk_size)])
                    for x in inputs
                ]
                break
            except _Demote as demoted:
                layers = {n: m for n, m in layers.items() if n not in demoted.names}
        if not trainable:
            return None
        return [_Factors([t.detach() for t in f.gram], [(a.detach(), g.detach()) for a, g in f.outer],
                         [(a.detach(), g.detach()) for a, g in f.tokens]) for f in factors]  # fmt: skip


@dataclass
class NtkFactors:
    """The per-sample factors of one point set (`ntk_factors`): the kernel between two sets is
    `factor_kernel(f1, f2)`, a few matrix products, without recomputing any Jacobian."""

    parts: _Factors
    size: int
    outputs: int = 1  # how many scalar outputs the kernel sums over

    def rows(self, rows: slice) -> NtkFactors:
        """The factors of a slice of the points (views, no copy)."""
        p = self.parts
        part = _Factors([t[rows] for t in p.gram], [(a[rows], g[rows]) for a, g in p.outer],
                        [(a[rows], g[rows]) for a, g in p.tokens])  # fmt: skip
        return NtkFactors(part, len(range(*rows.indices(self.size))), self.outputs)


def ntk_factors(model: nn.Module, x: Tensor, output: OutputSpec = None, *, chunk_size: int = 256,
                dtype: torch.dtype | None = None) -> NtkFactors:
    """The structured per-sample factors of `empirical_ntk(model, x, output=...)`, kept for reuse."""
    if chunk_size < 1:
        raise OrbitbenchError(f"ntk_factors: chunk_size={chunk_size}; accepted: a positive integer")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
    select = output_selector(output)
    factors = _all_factors(model, [x], select, chunk_size, dtype, "structured")
    if factors is None:
        raise OrbitbenchError("ntk_factors: the model has no trainable parameter")
    first = next(model.parameters())
    with torch.no_grad(), evaluating(model):
        outputs = select(model(x[:1].to(first.device, first.dtype))).reshape(1, -1).shape[1]
    return NtkFactors(factors[0], len(x), outputs)


def factor_kernel(f1: NtkFactors, f2: NtkFactors) -> Tensor:
    """The empirical NTK [N1, N2] between two factor sets."""
    return _kernel_from(f1.parts, f2.parts)
