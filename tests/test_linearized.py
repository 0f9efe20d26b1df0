"""`linearized(<model>)`: the network's first-order Taylor model around its initial weights.

What is checked against something independent of models/linearized.py: the model at w0 is the
network (same outputs, same dropout masks, same random stream); its output moves with w exactly as
the network's directional derivative (central finite differences of the plain network); its NTK at
any w is the plain network's empirical NTK at initialisation; trained by full-batch gradient
descent on squared error it follows the closed-form kernel dynamics of that NTK (the formula is
evaluated here, from `empirical_ntk` of the plain network); a wide NTK-parameterised network
trained identically stays close to it (lazy regime).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from orbitbench.errors import OrbitbenchError
from orbitbench.models import create_model, model_info
from orbitbench.models.linearized import Linearized
from orbitbench.orbits import Rotation, normalize
from orbitbench.run.module import paper_adam
from orbitbench.theory.ntk import empirical_ntk

pytestmark = pytest.mark.usefixtures("one_thread")


def twins(name: str, seed: int = 0, **kwargs) -> tuple[torch.nn.Module, Linearized]:
    """The plain network and its linearisation, both built from the same seed."""
    torch.manual_seed(seed)
    plain = create_model(name, **kwargs)
    torch.manual_seed(seed)
    return plain, create_model(f"linearized({name})", **kwargs)


@pytest.mark.parametrize("name", ["paper_mlp", "paper_convnet", "c4_pooled(paper_mlp)"])
def test_at_initialisation_it_is_the_network_with_the_same_dropout_masks(name: str) -> None:
    plain, linear = twins(name)
    x = torch.rand(5, 1, 28, 28)
    assert sum(p.numel() for p in linear.parameters()) == sum(p.numel() for p in plain.parameters())
    for mode in (False, True):
        plain.train(mode), linear.train(mode)
        torch.manual_seed(1)
        expected, after_plain = plain(x), torch.rand(3)
        torch.manual_seed(1)
        found, after_linear = linear(x), torch.rand(3)
        assert torch.equal(found, expected)
        assert torch.equal(after_plain, after_linear)  # the random stream moved exactly as the network's
    state = linear.state_dict()  # w0 travels with every checkpoint, as buffers
    assert {k for k in state if k.startswith("backbone.")} == {f"backbone.{k}" for k in plain.state_dict()}
    assert not any(n.startswith("backbone.") for n, _ in linear.named_parameters())


def test_the_output_moves_as_the_networks_directional_derivative() -> None:
    plain, linear = twins("mlp", depth=2, width=32, dropout=0.0)
    plain, linear = plain.double().eval(), linear.double().eval()
    x = torch.rand(7, 1, 28, 28, dtype=torch.float64)
    direction = {n: torch.randn_like(p) * 0.01 for n, p in plain.named_parameters()}
    eps = 1e-5

    def shifted(sign: float) -> torch.Tensor:
        net = copy.deepcopy(plain)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.add_(sign * eps * direction[n])
            return net(x)

    derivative = (shifted(1.0) - shifted(-1.0)) / (2 * eps)  # central difference of the plain network
    with torch.no_grad():
        f0 = plain(x)
        for n in direction:
            linear.weights[n.replace(".", "/")].add_(3.0 * direction[n])
        moved = linear(x) - f0
    error = float((moved - 3.0 * derivative).norm() / moved.norm())
    assert error < 1e-7, f"linearised step vs 3 x finite-difference derivative: relative error {error:.2e}"


def test_its_kernel_is_the_networks_initial_ntk_at_any_weights() -> None:
    plain, linear = twins("mlp", depth=2, width=24)
    plain, linear = plain.double(), linear.double()
    with torch.no_grad():
        for p in linear.weights.values():
            p.add_(0.5 * torch.randn_like(p))  # far from w0
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    generic = empirical_ntk(linear, x, output="centred", method="jacobian")  # the jvp model's own Jacobian
    initial = empirical_ntk(plain, x, output="centred")
    shortcut = empirical_ntk(linear.tangent_network(), x, output="centred")  # what empirical_gram uses
    assert torch.allclose(generic, initial, rtol=1e-10, atol=1e-10)
    assert torch.equal(shortcut, initial)


@pytest.mark.parametrize(("name", "fragment"), [
    ("linearized(timm:resnet18)", "BatchNorm2d layers update running statistics in place"),
    ("linearized(steerable_cnn_c4)", "its forward pass changes buffers in place"),
])  # fmt: skip
def test_what_cannot_be_linearised_is_one_line(name: str, fragment: str) -> None:
    with pytest.raises(OrbitbenchError, match=fragment) as error:
        create_model(name)
    assert "\n" not in str(error.value) and str(error.value).startswith(name)


def test_registry_record_is_the_linearised_networks() -> None:
    info, inner = model_info("linearized(c4_pooled(paper_mlp))"), model_info("c4_pooled(paper_mlp)")
    assert (info.invariance, info.classifier, info.source) == ("built-in:c4", "features", "linearized")
    assert info.kernel_twin() == inner.kernel_twin()  # same NTK at init, hence the same infinite-width twin
    assert model_info("linearized(mlp)").readout(create_model("linearized(mlp)")) is not None


def _dynamics_task(mnist5k) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """32 training digits (16 zeros -> +1, 16 ones -> -1) and 16 held-out digits, float64, unit norm."""
    zeros, ones = (torch.nonzero(mnist5k.labels == c).squeeze(1) for c in (0, 1))
    index = torch.cat([zeros[:16], ones[:16], zeros[16:24], ones[16:24]])
    x = normalize(mnist5k.images[index].double() / 255, "unit_norm").unsqueeze(1)  # [48, 1, 28, 28]
    y = torch.cat([torch.ones(16), -torch.ones(16)]).double()
    return x[:32], y, x[32:]


def test_gradient_descent_follows_the_closed_form_kernel_dynamics(mnist5k) -> None:
    """Discrete steps: f_t = f_0 + K_xX K^-1 (I - (I - eta K / n)^t) (y - f_0), K the plain network's NTK."""
    x, y, x_test = _dynamics_task(mnist5k)
    plain, linear = twins("mlp", depth=1, width=64, num_classes=1)
    plain, linear = plain.double(), linear.double()
    n, steps = len(y), 100
    kernel = empirical_ntk(plain, torch.cat([x, x_test]))  # [48, 48], the initial NTK
    eigenvalues, vectors = torch.linalg.eigh(kernel[:n, :n])
    lr = 1.0 / float(eigenvalues[-1] / n)  # eta lambda_max / n = 1 (stable below 2)
    with torch.no_grad():
        f0, f0_test = plain(x).squeeze(1), plain(x_test).squeeze(1)
    decay = (1 - (1 - lr * eigenvalues / n) ** steps) / eigenvalues  # K^-1 (I - (I - eta K / n)^t), diagonalised
    step = vectors @ (decay * (vectors.T @ (y - f0)))
    expected, expected_test = f0 + kernel[:n, :n] @ step, f0_test + kernel[n:, :n] @ step

    optimizer = torch.optim.SGD(linear.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (linear(x).squeeze(1) - y).square().mean()).backward()
        optimizer.step()
    with torch.no_grad():
        found, found_test = linear(x).squeeze(1), linear(x_test).squeeze(1)
    train_error = float((found - expected).norm() / (expected - f0).norm())
    test_error = float((found_test - expected_test).norm() / (expected_test - f0_test).norm())
    assert float((expected - y).norm() / y.norm()) < 0.5  # it has learnt: the test is not about a still model
    assert train_error < 1e-8 and test_error < 1e-8, (
        f"linearized(mlp) vs closed-form kernel dynamics after {steps} steps: relative error train "
        f"{train_error:.2e}, held-out {test_error:.2e}")  # fmt: skip


def _lazy_task(mnist5k) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tests/test_lazy_regime.py's task: 16 fives (+1) and 16 threes (-1) under C4, 14x14 on the
    sphere; the 16 upright fives are held out."""
    generator = torch.Generator().manual_seed(0)
    pixels, rotation = normalize(mnist5k.images.float() / 255, "unit_norm"), Rotation(4)

    def orbits(label: int) -> torch.Tensor:  # [16*4, 1, 14, 14], seed-major
        members = torch.nonzero(mnist5k.labels == label).squeeze(1)
        index = members[torch.randperm(len(members), generator=generator)[:16]]
        posed = rotation.apply(pixels[index].repeat_interleave(4, 0), torch.arange(4).repeat(16))
        return normalize(F.avg_pool2d(posed.unsqueeze(1), 2).squeeze(1), "sphere").unsqueeze(1).double()

    fives, threes = orbits(5), orbits(3)
    upright = torch.arange(4).repeat(16) == 0
    return torch.cat([fives[~upright], threes]), torch.cat([torch.ones(48), -torch.ones(64)]).double(), fives[upright]


def _wide_gap(mnist5k) -> tuple[float, float]:
    """(relative distance, sign agreement) of a width-4096 NTK-parameterised MLP and its linearisation
    on the held-out points after 200 identical full-batch gradient steps on squared error."""
    from test_lazy_regime import ntk_mlp

    x, y, x_test = _lazy_task(mnist5k)
    torch.manual_seed(0)
    network = ntk_mlp(4096)
    linear = Linearized(copy.deepcopy(network), example=x[:2])
    kernel = empirical_ntk(network, x)
    lr = 1.9 / float(torch.linalg.eigvalsh(kernel)[-1] / len(y))
    with torch.no_grad():
        f0 = network(x).squeeze(1)
    outputs = []
    for model in (network, linear):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(200):
            optimizer.zero_grad()
            (0.5 * (model(x).squeeze(1) - f0 - y).square().mean()).backward()
            optimizer.step()
        with torch.no_grad():
            outputs.append(model(x_test).squeeze(1))
    distance = float((outputs[0] - outputs[1]).norm() / outputs[1].norm())
    return distance, float(((outputs[0] > 0) == (outputs[1] > 0)).double().mean())


def _paper_gap(mnist5k) -> tuple[float, float]:
    """(relative distance of the log-probabilities, agreement of the predicted digits) of paper_mlp
    and its linearisation on 1,000 held-out digits, both trained the benchmark's way: Adam (the
    paper's), cross-entropy, dropout 0.5, the same 150 batches of 64 and the same masks."""
    order = torch.randperm(len(mnist5k), generator=torch.Generator().manual_seed(0))
    images = mnist5k.images.float().div(255).unsqueeze(1)
    train, held_out = order[:4000], order[4000:]
    outputs = []
    for linearised in (False, True):
        torch.manual_seed(0)
        model = create_model("linearized(paper_mlp)" if linearised else "paper_mlp")
        optimizer = paper_adam(model.parameters())
        batches = torch.Generator().manual_seed(1)
        for _ in range(150):
            index = train[torch.randint(len(train), (64,), generator=batches)]
            optimizer.zero_grad()
            F.cross_entropy(model(images[index]), mnist5k.labels[index]).backward()
            optimizer.step()
        with torch.no_grad():
            outputs.append(model.eval()(images[held_out]))
    distance = float((outputs[0] - outputs[1]).norm() / outputs[1].norm())
    return distance, float((outputs[0].argmax(1) == outputs[1].argmax(1)).double().mean())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_wide_network_stays_its_linearisation_and_the_paper_mlp_need_not(mnist5k) -> None:
    wide, paper = _wide_gap(mnist5k), _paper_gap(mnist5k)
    report = (f"held-out network vs its linearisation: width-4096 NTK MLP (GD, squared error) relative "
              f"distance {wide[0]:.3f}, sign agreement {wide[1]:.3f}; paper_mlp (Adam, cross-entropy, "
              f"dropout) relative distance {paper[0]:.3f}, predicted-digit agreement {paper[1]:.3f}")  # fmt: skip
    assert wide[0] < 0.2 and wide[1] == 1.0, report
    assert paper[0] > 2 * wide[0], report
