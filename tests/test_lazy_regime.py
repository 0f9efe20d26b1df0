"""A test where the truth is known: a wide network in NTK parameterisation, trained by full-batch
gradient descent on squared error, is its linearised model (lazy training), and the kernel of
that linearised model is the analytic twin's as width grows.

Task (embedded digits): 16 seeds of class 5 (+1) and 16 of class 3 (-1) under exact C4 rotations;
the network trains on every pose but the upright one of class 5, whose 16 upright poses are the
out-test points. Images are 2x2-average-pooled to 14x14 (cheaper training) and put on the
sphere; the MLP is bias-free, so the kernel has no dominant constant mode and 200 steps converge.
The output is centred at initialisation (`f - f0`), so the prediction is `K (I - exp(-eta t K / n)) K^-1 y`.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from orbitbench.models import KernelTwin
from orbitbench.theory.ntk import empirical_ntk
from orbitbench.orbits import Rotation, normalize
from orbitbench.theory.predictions import linearized_prediction
from test_ntk import Scale  # the NTK-parameterisation layer scale
from orbitbench.theory.twins import twin_kernel

STEPS = 200


def ntk_mlp(width: int, d_in: int = 196) -> nn.Module:
    """Bias-free ReLU MLP, one hidden layer, NTK parameterisation: N(0, 1) weights, inputs scaled by 1/sqrt(fan_in)."""
    first, readout = nn.Linear(d_in, width, bias=False), nn.Linear(width, 1, bias=False)
    for layer in (first, readout):
        nn.init.normal_(layer.weight)
    return nn.Sequential(nn.Flatten(), Scale(d_in**-0.5), first, nn.ReLU(), Scale(width**-0.5), readout).double()


@pytest.fixture(scope="module")
def task(mnist5k):
    generator = torch.Generator().manual_seed(0)

    def seeds(label: int) -> torch.Tensor:
        members = torch.nonzero(mnist5k.labels == label).squeeze(1)
        return members[torch.randperm(len(members), generator=generator)[:16]]

    pixels = normalize(mnist5k.images.float() / 255, "unit_norm")
    rotation = Rotation(4)

    def orbits(index: torch.Tensor) -> torch.Tensor:  # [16*4, 1, 14, 14], seed-major
        posed = rotation.apply(pixels[index].repeat_interleave(4, 0), torch.arange(4).repeat(len(index)))
        return normalize(F.avg_pool2d(posed.unsqueeze(1), 2).squeeze(1), "sphere").unsqueeze(1).double()

    fives, threes = orbits(seeds(5)), orbits(seeds(3))
    upright = torch.arange(4).repeat(16) == 0
    x_train = torch.cat([fives[~upright], threes])
    y = torch.cat([torch.ones(48), -torch.ones(64)]).double()
    return x_train, y, fives[upright]


def lazy_run(task, width: int, seed: int = 0) -> dict[str, float]:
    x_train, y, x_test = task
    torch.manual_seed(seed)
    network = ntk_mlp(width)
    initial = copy.deepcopy(network)
    kernel = empirical_ntk(network, torch.cat([x_train, x_test]))  # the init kernel
    n = len(y)
    k_train, k_test = kernel[:n, :n], kernel[n:, :n]
    lr = 1.9 / float(torch.linalg.eigvalsh(k_train)[-1] / n)  # just under the stability limit 2 / lambda_max(K / n)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)
    with torch.no_grad():
        f0_train, f0_test = initial(x_train).squeeze(1), initial(x_test).squeeze(1)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = 0.5 * (network(x_train).squeeze(1) - f0_train - y).square().mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trained = network(x_test).squeeze(1) - f0_test
    predicted = linearized_prediction(k_train, k_test, y, lr_time=lr * STEPS)
    twin = KernelTwin(widths=(width,), in_features=196, W_std=1.0, b_std=None, parameterization="ntk")
    analytic = twin_kernel(twin, torch.cat([x_train, x_test]))
    infinite = linearized_prediction(analytic[:n, :n], analytic[n:, :n], y, lr_time=lr * STEPS)
    return {
        "loss": float(loss),
        "distance": float((trained - predicted).norm() / predicted.norm()),
        "signs": float(((trained > 0) == (predicted > 0)).double().mean()),
        "infinite_vs_init": float((infinite - predicted).norm() / infinite.norm()),
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wide_network_follows_its_linearised_model_and_the_twin(task) -> None:
    runs = {width: lazy_run(task, width) for width in (256, 1024, 4096)}
    distance = {w: r["distance"] for w, r in runs.items()}
    assert all(r["loss"] < 0.05 for r in runs.values()), runs  # trained, not stuck at the start (loss 0.5)
    assert distance[256] > distance[1024] > distance[4096], runs
    assert distance[4096] < 0.5 * distance[256], runs  # O(1/sqrt(width)) gives 1/4
    assert runs[4096]["signs"] >= 14 / 16, runs
    gap = {w: r["infinite_vs_init"] for w, r in runs.items()}
    assert gap[4096] < 0.5 * gap[256] and gap[4096] < 0.15, runs


def test_linearised_prediction_against_explicit_gradient_descent_on_the_kernel_model() -> None:
    """The closed form equals iterating the linear model's gradient descent, step by small step."""
    torch.manual_seed(0)
    features = torch.randn(12, 30, dtype=torch.float64)
    kernel = features @ features.T  # [12, 12]: train 0..9, test 10..11
    y, f0 = torch.randn(10, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    weights = torch.zeros(30, dtype=torch.float64)  # f(x) = f0(x) + phi(x) . w, gradient flow in w
    lr, steps = 1e-3, 4000
    for _ in range(steps):
        residual = f0[:10] + features[:10] @ weights - y
        weights -= lr * features[:10].T @ residual / 10
    expected = f0[10:] + features[10:] @ weights
    predicted = linearized_prediction(kernel[:10, :10], kernel[10:, :10], y, f0[:10], f0[10:], lr_time=lr * steps)
    assert torch.allclose(predicted, expected, rtol=1e-3, atol=1e-3)
    converged = linearized_prediction(kernel[:10, :10], kernel[10:, :10], y, f0[:10], f0[10:])
    exact = f0[10:] + kernel[10:, :10] @ torch.linalg.solve(kernel[:10, :10], y - f0[:10])
    assert torch.allclose(converged, exact, atol=1e-6)
