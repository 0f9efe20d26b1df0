"""Kernel twins: what the zoo declares, the closed form against neural-tangents, and the empirical NTK
of PyTorch-initialised networks concentrating on it as their widths grow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models import KernelTwin, create_model, list_models, model_info
from orbitbench.theory.ntk import empirical_ntk
from orbitbench.theory.twins import twin_kernel


@pytest.fixture(scope="module")
def digits(mnist5k) -> torch.Tensor:
    x = mnist5k.images[::625][:8].double() / 255  # 8 real digits [8, 28, 28]
    return (x / x.flatten(1).norm(dim=1)[:, None, None]).unsqueeze(1)  # unit norm, [8, 1, 28, 28]


def kernel_twin(name: str, **kwargs) -> KernelTwin | str:
    return model_info(name).kernel_twin(**kwargs)


def test_zoo_declares_twins_and_says_why_not() -> None:
    assert kernel_twin("paper_mlp") == KernelTwin(widths=(512, 128), readout_bias=False)
    assert kernel_twin("mlp", depth=3, width=64) == KernelTwin(widths=(64, 64, 64))
    assert kernel_twin("mlp", depth=1, width=32, in_features=100) == KernelTwin(widths=(32,), in_features=100)
    assert "ReLU only" in kernel_twin("mlp", activation="gelu")
    assert kernel_twin("c4_pooled(paper_mlp)").pool == "rot90"
    for name in ("paper_convnet", "paper_vit", "cnn_fc", "cnn_gap", "timm:resnet18", "c4_pooled(paper_convnet)"):
        assert isinstance(kernel_twin(name), str) and "twin" in kernel_twin(name), name
    with pytest.raises(OrbitbenchError, match="unknown model"):
        kernel_twin("paper_mpl")


def _linear_widths(net: nn.Module) -> tuple[tuple[int, int], ...]:
    """(in, out) of every nn.Linear of a built network, in order: read independently of models/_twin.py."""
    return tuple((m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("steerable")] + ["c4_pooled(paper_mlp)"])
def test_every_twin_has_the_widths_of_the_built_network(name: str) -> None:
    twin = kernel_twin(name)
    if isinstance(twin, str):
        assert twin.startswith("no analytic kernel twin"), twin
        return
    layers = _linear_widths(create_model(name))
    if twin.arch != "mlp":  # one circular conv, then the read-out (tests/test_circular_cnn.py checks the conv)
        assert layers == ((twin.readout_fan_in, 10),) and twin.widths == ()
        return
    assert layers == tuple(zip((twin.in_features, *twin.widths), (*twin.widths, 10)))
    assert all(m.bias is not None for m in create_model(name).modules() if isinstance(m, nn.Linear)) == twin.readout_bias


def test_a_declared_twin_that_disagrees_with_the_layers_is_refused() -> None:
    from orbitbench.models import register_model

    @register_model("_test_wrong_twin", kernel=KernelTwin(widths=(64,)))
    def wrong(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, num_classes))

    with pytest.raises(OrbitbenchError, match=r"widths \(784, 64\), its layers \(784, 32\)"):
        kernel_twin("_test_wrong_twin")


def test_a_derived_twin_needs_default_init_and_relu() -> None:
    from orbitbench.models._twin import twin_from_layers

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    assert twin_from_layers(net) == KernelTwin(widths=(16,))
    nn.init.normal_(net[1].weight)  # not PyTorch's default init: the twin would be another kernel
    assert "default init" in twin_from_layers(net)
    assert "ReLU only" in twin_from_layers(nn.Sequential(nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 10)))
    assert "Conv2d" in twin_from_layers(create_model("paper_convnet"))


def test_the_plug_in_routes_get_a_twin_not_the_network() -> None:
    """A dotted path and an entry point on first use (a fresh process): the twin of the plug-in's
    layers (the registry used to hand back the built network here)."""
    import subprocess
    import sys

    expected = KernelTwin(widths=(64,))
    assert kernel_twin("orbitbench_plugin_example.nets:tiny_orbit_mlp") == expected
    code = "from orbitbench.models import model_info; print(repr(model_info('tiny_orbit_mlp').kernel_twin()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == repr(expected)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_closed_form_equals_neural_tangents_stax(digits: torch.Tensor, neural_tangents, parameterization: str) -> None:
    stax = neural_tangents
    w_std = 3**-0.5
    # neural-tangents' b_std is the bias's own standard deviation; PyTorch's is 1 / sqrt(3 fan_in)
    layers = [stax.Dense(512, W_std=w_std, b_std=math.sqrt(1 / (3 * 784)), parameterization=parameterization),
              stax.Relu(), stax.Dense(128, W_std=w_std, b_std=math.sqrt(1 / (3 * 512)), parameterization=parameterization),
              stax.Relu(), stax.Dense(1, W_std=w_std, b_std=None, parameterization=parameterization)]  # fmt: skip
    _, _, kernel_fn = stax.serial(*layers)
    flat = digits.reshape(8, -1).numpy()
    expected = torch.from_numpy(np.array(kernel_fn(flat, None, "ntk"), dtype=np.float64))
    twin = KernelTwin(widths=(512, 128), readout_bias=False, parameterization=parameterization)
    assert torch.allclose(twin_kernel(twin, digits), expected, rtol=1e-8, atol=0)
    cross = twin_kernel(twin, digits[:3], digits[3:])
    assert torch.allclose(cross, expected[:3, 3:], rtol=1e-8, atol=0)


def test_rot90_pooled_twin_is_the_mean_over_all_pose_pairs(digits: torch.Tensor) -> None:
    plain = KernelTwin(widths=(64,))
    rotations = [torch.rot90(digits, k, dims=(-2, -1)) for k in range(4)]
    expected = torch.stack([twin_kernel(plain, a, b) for a in rotations for b in rotations]).mean(0)
    pooled = twin_kernel(KernelTwin(widths=(64,), pool="rot90"), digits)
    assert torch.allclose(pooled, expected, rtol=1e-10)
    with pytest.raises(OrbitbenchError, match="784 input features"):
        twin_kernel(plain, digits[:, :, :14])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pytorch_default_init_paper_mlp_concentrates_on_its_twin(digits: torch.Tensor) -> None:
    """paper_mlp's shape at widths x1, x4, x16, PyTorch's default init, eval mode (dropout off):
    the mean empirical NTK over 4 initialisations approaches the twin.

    Output: logit 0 minus logit 1 (LogSoftmax cancels), whose kernel is twice one unit's in the limit.
    The approach is not a clean 1/sqrt(width): single draws scatter widely and the mean levels off at a
    few percent from x4 on (benchmarks/RESULTS.md), so the bounds are loose."""
    errors = {}
    for scale in (1, 4, 16):
        analytic = 2 * twin_kernel(KernelTwin(widths=(512 * scale, 128 * scale), readout_bias=False), digits)
        kernels = []
        for seed in range(4):
            torch.manual_seed(seed)
            network = create_model("paper_mlp").double() if scale == 1 else nn.Sequential(
                nn.Flatten(), nn.Linear(784, 512 * scale), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512 * scale, 128 * scale),
                nn.ReLU(), nn.Dropout(0.5), nn.Linear(128 * scale, 10, bias=False)).double()  # fmt: skip
            network.train()  # the kernel is the eval-mode network's whatever the mode
            kernels.append(empirical_ntk(network, digits, output=(0, 1)))
        errors[scale] = float((torch.stack(kernels).mean(0) - analytic).norm() / analytic.norm())
    assert errors[4] < 0.5 * errors[1] and errors[16] < 0.6 * errors[1], errors
    assert max(errors[4], errors[16]) < 0.07, errors


def test_paper_mlp_ntk_declares_its_twin() -> None:
    from orbitbench.models.paper import ntk_twin

    twin = kernel_twin("paper_mlp", parameterization="ntk")
    assert twin == ntk_twin((512, 128), 10)
    assert (twin.parameterization, twin.bias_scale, twin.W_std, twin.b_std) == ("ntk", "unit", 1.0, 1.0)
    assert twin.raw_std == pytest.approx(((3 * 512) ** -0.5, (3 * 128) ** -0.5, 30**-0.5))
    assert "parameterization" in kernel_twin("paper_mlp", parameterization="mup")
    with pytest.raises(OrbitbenchError, match="parameterization='mup'"):
        create_model("paper_mlp", parameterization="mup")
    network = create_model("paper_mlp", parameterization="ntk")
    first = network[1]  # fan-out uniform init: weights and biases within 1/sqrt(512), spread over it
    assert first.weight.abs().max() <= 512**-0.5 and first.weight.abs().max() > 0.99 * 512**-0.5
    assert first.bias.abs().max() <= 512**-0.5 and network[-2].bias is None


def test_uniform_raw_std_twin_is_a_rescaled_stax_kernel(digits: torch.Tensor, neural_tangents) -> None:
    """Raw parameters of one std r everywhere: the network equals stax's with W_std, b_std scaled by r
    while d h / d theta is r times smaller, so its NTK is stax's divided by r^2 (an independent check
    of the raw_std recursion)."""
    stax = neural_tangents
    r = 0.3
    layers = [stax.Dense(512, W_std=r, b_std=r), stax.Relu(), stax.Dense(128, W_std=r, b_std=r), stax.Relu(),
              stax.Dense(1, W_std=r, b_std=None)]  # fmt: skip
    _, _, kernel_fn = stax.serial(*layers)
    expected = torch.from_numpy(np.array(kernel_fn(digits.reshape(8, -1).numpy(), None, "ntk"), dtype=np.float64)) / r**2
    twin = KernelTwin(widths=(512, 128), W_std=1.0, b_std=1.0, bias_scale="unit", readout_bias=False,
                      parameterization="ntk", raw_std=(r, r, r))
    assert torch.allclose(twin_kernel(twin, digits), expected, rtol=1e-8, atol=0)
    with pytest.raises(OrbitbenchError, match="raw_std"):
        twin_kernel(KernelTwin(widths=(64,), raw_std=(1.0, 1.0)), digits)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ntk_parameterised_paper_mlp_concentrates_on_its_twin(digits: torch.Tensor) -> None:
    """paper_mlp(parameterization="ntk") (the authors' Fig. 6B network and init) at widths x1, x4, x16,
    eval mode: the mean empirical NTK over 4 initialisations approaches the declared twin at those widths.
    Output: logit 0 minus logit 1, twice one unit's kernel in the limit."""
    from orbitbench.models.paper import ntk_mlp, ntk_twin

    errors = {}
    for scale in (1, 4, 16):
        widths = (512 * scale, 128 * scale)
        analytic = 2 * twin_kernel(ntk_twin(widths, 10), digits)
        kernels = []
        for seed in range(4):
            torch.manual_seed(seed)
            network = (create_model("paper_mlp", parameterization="ntk") if scale == 1 else ntk_mlp(widths)).double()
            kernels.append(empirical_ntk(network, digits, output=(0, 1)))
        errors[scale] = float((torch.stack(kernels).mean(0) - analytic).norm() / analytic.norm())
    assert errors[16] < 0.6 * errors[1] and errors[16] < 0.05, errors
