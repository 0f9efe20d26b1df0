"""The translation track's circular CNNs (models/circular_cnn.py): their twins against neural-tangents,
CNN-GAP's exact invariance to the track's shifts (Prop. 2) and CNN-FC's lack of it (Prop. 1), on
real digits of the embedded subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from orbitbench.datamodules import TranslatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.models import KernelTwin, create_model, model_info
from orbitbench.theory.twins import twin_kernel

W_STD = 3**-0.5  # PyTorch's default init: U(+-1/sqrt(fan_in)), variance 1 / (3 fan_in)


@pytest.fixture(scope="module")
def digits(mnist5k) -> torch.Tensor:
    x = mnist5k.images[::625][:6].double()
    return (x / x.flatten(1).norm(dim=1)[:, None, None]).unsqueeze(1)  # unit norm, [6, 1, 28, 28]


def _stax_ntk(stax, images: np.ndarray, arch: str, channels: int, size: int, parameterization: str) -> np.ndarray:
    pool = [stax.GlobalAvgPool()] if arch == "cnn_gap" else []
    layers = [stax.Conv(channels, (size, size), padding="CIRCULAR", W_std=W_STD, b_std=None, parameterization=parameterization),
              stax.Relu(), *pool, stax.Flatten(),
              stax.Dense(1, W_std=W_STD, b_std=None, parameterization=parameterization)]  # fmt: skip
    _, _, kernel_fn = stax.serial(*layers)
    return np.array(kernel_fn(images[..., None], None, "ntk"), dtype=np.float64)  # NHWC


@pytest.mark.parametrize("name, arch", [("circ_cnn_fc", "cnn_fc"), ("circ_cnn_gap", "cnn_gap")])
@pytest.mark.parametrize("channels, size", [(16, 3), (8, 5)])
def test_the_twins_equal_neural_tangents(digits: torch.Tensor, neural_tangents, name: str, arch: str,
                                         channels: int, size: int) -> None:  # fmt: skip
    """The declared twin (standard parameterisation at the model's channels) is stax's kernel of the same
    network; the NTK-parameterised closed form is stax's too."""
    twin = model_info(name).kernel_twin(channels=channels, kernel_size=size)
    assert (twin.arch, twin.channels, twin.kernel_size, twin.parameterization) == (arch, channels, size, "standard")
    assert twin.input_scale == 28.0  # the model's fixed input factor: stax sees the scaled digits
    expected = _stax_ntk(neural_tangents, 28.0 * digits[:, 0].numpy(), arch, channels, size, "standard")
    np.testing.assert_allclose(twin_kernel(twin, digits).numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(twin_kernel(twin, digits[:2], digits[2:]).numpy(), expected[:2, 2:], rtol=1e-9)
    ntk_twin = KernelTwin(widths=(), W_std=W_STD, b_std=None, readout_bias=False, arch=arch, channels=channels,
                          kernel_size=size, parameterization="ntk")  # fmt: skip
    expected = _stax_ntk(neural_tangents, digits[:, 0].numpy(), arch, channels, size, "ntk")
    np.testing.assert_allclose(twin_kernel(ntk_twin, digits).numpy(), expected, rtol=1e-9)


def _layers(net: nn.Module) -> tuple[nn.Conv2d, nn.Linear]:
    """The conv and the read-out, read from the built network without models/_twin.py."""
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d)), next(m for m in net.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name", ["circ_cnn_fc", "circ_cnn_gap"])
def test_the_models_are_what_their_twins_describe(name: str) -> None:
    """Bias-free stride-1 circular conv and read-out at PyTorch's default init (the twin's W_std)."""
    torch.manual_seed(0)
    conv, readout = _layers(create_model(name, channels=24, kernel_size=5))
    assert conv.padding_mode == "circular" and conv.stride == (1, 1) and conv.bias is None and readout.bias is None
    assert conv.weight.shape == (24, 1, 5, 5) and readout.in_features == (24 * 784 if name.endswith("fc") else 24)
    for layer, fan_in in ((conv, 25), (readout, readout.in_features)):  # U(+-1/sqrt(fan_in)), spread over it
        assert 0.99 * fan_in**-0.5 < float(layer.weight.detach().abs().max()) <= fan_in**-0.5
    assert model_info("circ_cnn_gap").invariance.startswith("built-in:") and model_info("circ_cnn_fc").invariance == "none"
    with pytest.raises(OrbitbenchError, match="odd kernel_size"):
        create_model(name, kernel_size=4)


def test_a_twin_that_disagrees_with_the_conv_is_refused() -> None:
    from orbitbench.models._twin import check_twin

    twin = model_info("circ_cnn_gap").kernel_twin(channels=8)
    assert check_twin(twin, create_model("circ_cnn_gap", channels=8), "circ_cnn_gap") is None
    assert "bias-free stride-1 circular conv" in check_twin(twin, create_model("cnn_gap", channels=8), "cnn_gap")
    assert "read-out takes 8 features" in check_twin(twin, create_model("circ_cnn_fc", channels=8), "x")
    assert "scales the input by 28.0" in check_twin(twin, create_model("circ_cnn_gap", channels=8, input_scale=1), "x")


@pytest.mark.parametrize("name", ["circ_cnn_fc", "circ_cnn_gap"])
def test_the_empirical_ntk_of_wide_models_approaches_the_twin(digits: torch.Tensor, name: str) -> None:
    """PyTorch's own init and layers, 1024 channels, mean over 4 draws: the empirical NTK of logit 0 minus
    logit 1 (twice one unit's kernel in the limit) is within a few percent of the twin. (Single draws
    scatter by about 5% for CNN-GAP: its read-out term, a sum over channels, dominates the kernel.)"""
    from orbitbench.theory.ntk import empirical_ntk

    errors = {}
    for channels in (1024,):
        analytic = 2 * twin_kernel(model_info(name).kernel_twin(channels=channels, kernel_size=5), digits)
        kernels = []
        for seed in range(4):
            torch.manual_seed(seed)
            net = create_model(name, channels=channels, kernel_size=5).double()
            kernels.append(empirical_ntk(net, digits, output=(0, 1)))
        errors[channels] = float((torch.stack(kernels).mean(0) - analytic).norm() / analytic.norm())
    assert errors[1024] < 0.04, errors


def _orbits(n_shifts: int) -> tuple[torch.Tensor, TranslatedMNIST]:
    """Every pose of 30 digits of the embedded subset as the track's DataModule makes them: [n, 30, 1, 28, 28]."""
    dm = TranslatedMNIST(n_shifts=n_shifts, leave_out_class=3, source="mnist5k", images_per_class=3)
    dm.setup("fit")
    digits = torch.arange(30)
    return torch.stack([dm.materialize(digits, torch.full_like(digits, p)) for p in range(n_shifts)]), dm


@pytest.mark.parametrize("n_shifts", [4, 7])
def test_cnn_gap_is_invariant_to_the_tracks_shifts_and_cnn_fc_is_not(n_shifts: int) -> None:
    """Whole-pixel circular shifts (28 / n_shifts pixels along x) permute the positions CNN-GAP averages:
    its logits agree across an orbit to float64 rounding (and float32's); CNN-FC's differ."""
    posed, _ = _orbits(n_shifts)
    assert not torch.equal(posed[0], posed[1])  # the poses really move the digits
    expected = torch.roll(posed[0], 28 // n_shifts, dims=-1)  # one generator step: 28 / n pixels along x
    assert torch.equal(posed[1], expected) or torch.equal(posed[1], torch.roll(posed[0], -(28 // n_shifts), dims=-1))
    for name in ("circ_cnn_gap", "circ_cnn_fc"):
        torch.manual_seed(0)
        net = create_model(name, channels=8, kernel_size=5).eval()
        with torch.no_grad():
            logits64 = torch.stack([net.double()(x.double()) for x in posed])  # [n, 30, 10]
            logits32 = torch.stack([net.float()(x.float()) for x in posed])
        scale = float(logits64.abs().max())
        change64 = float((logits64 - logits64[0]).abs().max()) / scale
        change32 = float((logits32 - logits32[0]).abs().max()) / scale
        if name == "circ_cnn_gap":
            assert change64 < 1e-13 and change32 < 1e-5, (change64, change32)
        else:
            assert change64 > 1e-2, change64


@pytest.mark.parametrize("name", ["circ_cnn_fc", "circ_cnn_gap"])
def test_the_twins_are_invariant_so_the_exact_orbit_path_applies(name: str) -> None:
    """k(g^p x, g^q y) = k(x, g^(q-p) y) to 1e-9 (the orbit solve's check) for both twins; the GAP twin
    is moreover constant over the orbit (Prop. 2), the FC twin is not (Prop. 1)."""
    from orbitbench.theory.orbit_solve import check_exact, orbit_digits

    posed, dm = _orbits(7)
    twin = model_info(name).kernel_twin(channels=8)
    gram = lambda a, b=None: twin_kernel(twin, a, b)  # noqa: E731
    assert check_exact(gram, dm, orbit_digits(dm, 0)[:4]) is None
    across = twin_kernel(twin, posed[0, :4], posed[:, 4])  # digits 0-3 against every pose of digit 4
    spread = float((across - across[:, :1]).abs().max() / across.abs().max())
    assert spread < 1e-12 if name == "circ_cnn_gap" else spread > 1e-2


def test_the_gap_twin_evaluates_each_shift_class_once_and_equals_the_direct_closed_form(digits: torch.Tensor) -> None:
    """CNN-GAP's kernel takes one value per pair of shift classes: the twin computes it on one
    representative per class and spreads it; that equals the closed form on the images as given."""
    from orbitbench.theory.twins import _cnn_ntk_once, shift_orbits

    posed = torch.cat([digits, torch.roll(digits, (3, -5), dims=(-2, -1)), torch.roll(digits[:2], 7, dims=-1)])[:, 0]
    unique, index = shift_orbits(posed * 28.0)
    assert len(unique) == len(digits) and torch.equal(index[:6], index[6:12]) and torch.equal(index[:2], index[12:])
    twin = model_info("circ_cnn_gap").kernel_twin(channels=8)
    direct = _cnn_ntk_once(twin, posed * 28.0, None)
    assert torch.allclose(twin_kernel(twin, posed.unsqueeze(1)), direct, rtol=1e-12, atol=0)
    cross = twin_kernel(twin, posed[:4].unsqueeze(1), posed[5:].unsqueeze(1))
    assert torch.allclose(cross, _cnn_ntk_once(twin, posed[:4] * 28.0, posed[5:] * 28.0), rtol=1e-12, atol=0)
