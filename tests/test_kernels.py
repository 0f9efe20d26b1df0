"""`orbitbench.theory.kernels` against a numpy arc-cosine NTK and neural-tangents, block-circulant pair
kernels against the full computation, and the paper's kernel claims on real embedded MNIST orbit
pairs (float64 throughout, docs/THEORY.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orbitbench.theory import kernels, pairs, spectral
from orbitbench.data import load_digits
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import Rotation, Translation


def relu_ntk_closed_form(x: np.ndarray, depth: int, w_std: float, b_std: float) -> np.ndarray:
    """NTK-parameterised ReLU MLP [Dense, Relu] x depth, Dense(1), by the arc-cosine recursion.

    Sigma_0 = w^2 <x, x'> / D + b^2; per hidden layer with theta = angle under Sigma:
    E[relu relu] = sqrt(q q') (sin theta + (pi - theta) cos theta) / (2 pi),
    E[relu' relu'] = (pi - theta) / (2 pi); Sigma <- w^2 E[relu relu] + b^2,
    Theta <- Sigma + w^2 E[relu' relu'] Theta.
    """
    sigma = w_std**2 * (x @ x.T) / x.shape[1] + b_std**2
    theta_ntk = sigma.copy()
    for _ in range(depth):
        q = np.sqrt(np.diag(sigma))
        cos = np.clip(sigma / np.outer(q, q), -1.0, 1.0)
        angle = np.arccos(cos)
        e_relu = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
        e_drelu = (np.pi - angle) / (2 * np.pi)
        sigma = w_std**2 * e_relu + b_std**2
        theta_ntk = sigma + w_std**2 * e_drelu * theta_ntk
    return theta_ntk


@pytest.fixture(scope="module")
def digits():
    return load_digits("mnist5k")


@pytest.mark.parametrize("depth,w_std,b_std", [(1, 1.0, 1.0), (5, 1.0, 1.0), (2, 1.5, 0.3)])
def test_mlp_ntk_matches_arc_cosine_recursion(digits, depth: int, w_std: float, b_std: float) -> None:
    x = pairs.pose_orbits(digits.images[:3], Rotation(2)).reshape(6, -1)  # real unit-sphere inputs
    x = torch.cat([x, torch.randn(2, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))])
    got = kernels.mlp_ntk(x, depth=depth, W_std=w_std, b_std=b_std)
    assert got.dtype == torch.float64
    expected = relu_ntk_closed_form(x.numpy(), depth, w_std, b_std)
    # 1e-8: on the diagonal cos(theta) = 1 - O(1e-16) and arccos amplifies that to O(1e-8) in
    # theta, which E[relu' relu'] passes on linearly; off-diagonal entries agree to ~1e-14.
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8)
    off = ~np.eye(len(x), dtype=bool)
    np.testing.assert_allclose(got.numpy()[off], expected[off], rtol=1e-12)
    # the batched pair path gives the same grams
    stacked = kernels.pair_kernels(x.reshape(2, 4, 784), arch="mlp", depth=depth, W_std=w_std, b_std=b_std)
    np.testing.assert_allclose(stacked[1].numpy(), expected[4:, 4:], rtol=1e-8)


def test_mlp_nngp_is_the_sigma_recursion(digits) -> None:
    x = torch.randn(4, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = kernels.infinite_kernel(x, arch="mlp", kind="nngp", depth=1, W_std=1.0, b_std=1.0).numpy()
    xn = x.numpy()
    sigma = xn @ xn.T / 20 + 1.0
    q = np.sqrt(np.diag(sigma))
    cos = np.clip(sigma / np.outer(q, q), -1, 1)
    angle = np.arccos(cos)
    hidden = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
    np.testing.assert_allclose(got, hidden + 1.0, rtol=1e-10)


def test_rbf_kernel_formula() -> None:
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = np.exp(-(1.4**2) * ((x.numpy()[:, None] - x.numpy()[None]) ** 2).sum(-1))
    np.testing.assert_allclose(kernels.rbf_kernel(x).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("group", [Rotation(8), Translation(7)], ids=["rot8", "shift7"])
def test_mlp_spectral_error_tracks_exact_error(digits, group) -> None:
    # 24 fixed different-class pairs (seed 124). The spectral error is exact for circulant kernels;
    # two-orbit MLP kernels are not circulant (the a/b blocks differ), so agreement is approximate.
    # Measured on this sample: Pearson r = 0.996 and mean |difference| 0.03-0.04 (errors span
    # 0.2-1.5). Measured mistakes: the wrong Fourier index (k=1 instead of N) gives r ~ 0.1;
    # skipping circularization gives r = 0.65-0.78. So r > 0.95 and mean difference < 0.1 leave
    # margin for numerics yet catch those mistakes.
    orbit_pairs = pairs.make_orbit_pairs(digits, group, 24, seed=124)
    gram = kernels.pair_kernels(orbit_pairs.points, arch="mlp", depth=1)
    predicted = spectral.spectral_error(spectral.circularize(gram))
    exact = spectral.symmetrized_error(gram)
    r = np.corrcoef(predicted.numpy(), exact.numpy())[0, 1]
    assert r > 0.95
    assert (predicted - exact).abs().mean() < 0.1
    assert exact.std() > 0.1  # the sample spans easy and hard pairs, so r is informative


def test_cnn_gap_is_exact_on_translation_orbits_and_cnn_fc_is_not(digits) -> None:
    # Prop. 2: a circular CNN with global average pooling has a kernel constant on translation
    # orbits, so the held-out shift is predicted exactly; Prop. 1: without pooling it fails like an MLP.
    orbit_pairs = pairs.make_orbit_pairs(digits, Translation(4), 2, seed=124)
    gap = kernels.pair_kernels(orbit_pairs.points, arch="cnn_gap", b_std=None)
    fc = kernels.pair_kernels(orbit_pairs.points, arch="cnn_fc", b_std=None)
    assert spectral.symmetrized_error(gap).max() < 1e-6
    assert spectral.symmetrized_error(fc).min() > 0.1
    assert spectral.spectral_error(spectral.circularize(fc)).min() > 0.1


@pytest.mark.parametrize("arch", ["cnn_fc", "cnn_gap"])
def test_torch_cnn_kernels_equal_neural_tangents(digits, neural_tangents, arch: str) -> None:
    # real digits (one exact rotation orbit) plus Gaussian noise images, with and without biases
    x = pairs.pose_orbits(digits.images[10:11], Rotation(4))[0]
    x = torch.cat([x[:2], torch.randn(2, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(3))])
    for kind, w_std, b_std in (("ntk", 1.0, None), ("nngp", 1.3, 0.5)):
        reference = kernels.infinite_kernel(x, arch=arch, kind=kind, W_std=w_std, b_std=b_std, backend="neural_tangents")
        fast = kernels.infinite_kernel(x, arch=arch, kind=kind, W_std=w_std, b_std=b_std)
        # 1e-8: where two patches are parallel, cos = 1 - O(1e-16) and the slope of arccos at 1
        # makes that O(1e-8) per position pair, in both implementations (observed gaps <= 5e-10)
        np.testing.assert_allclose(fast.numpy(), reference.numpy(), rtol=1e-8)
    cross = kernels.infinite_kernel(x[:1], x[1:], arch=arch)
    reference = kernels.infinite_kernel(x[:1], x[1:], arch=arch, backend="neural_tangents")
    np.testing.assert_allclose(cross.numpy(), reference.numpy(), rtol=1e-8)


@pytest.mark.parametrize("depth", [1, 5])
@pytest.mark.parametrize("b_std", [0.7, None], ids=["bias", "no-bias"])
def test_torch_mlp_kernels_equal_neural_tangents(digits, neural_tangents, depth: int, b_std) -> None:
    x = pairs.pose_orbits(digits.images[20:23], Rotation(4)).reshape(12, -1)  # real unit-sphere inputs
    x = torch.cat([x, torch.randn(3, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(4))])
    off = ~torch.eye(len(x), dtype=torch.bool)
    for kind in ("ntk", "nngp"):
        options = dict(arch="mlp", kind=kind, depth=depth, W_std=1.2, b_std=b_std)
        ours = kernels.infinite_kernel(x, **options)
        reference = kernels.infinite_kernel(x, **options, backend="neural_tangents")
        np.testing.assert_allclose(ours[off].numpy(), reference[off].numpy(), rtol=1e-10)
        cross = kernels.infinite_kernel(x[:5], x[5:], **options)
        np.testing.assert_allclose(cross.numpy(), reference[:5, 5:].numpy(), rtol=1e-10)
        # The diagonal (cos = 1, angle 0) by its own recursion q <- w^2 q / 2 + b^2, Theta <- q + w^2 Theta / 2;
        # neural-tangents rounds cos to 1 - O(1e-16) there, hence up to ~1e-7 off (not compared).
        bias = 0.0 if b_std is None else b_std**2
        q = 1.44 * x.square().sum(-1) / 784 + bias
        theta = q.clone()
        for _ in range(depth):
            q = 1.44 * q / 2 + bias
            theta = q + 1.44 * theta / 2
        np.testing.assert_allclose(ours.diagonal().numpy(), (theta if kind == "ntk" else q).numpy(), rtol=1e-12)


@pytest.mark.parametrize("group", [Rotation(4, "cubic"), Rotation(2), Translation(7), Translation(4, "y")], ids=repr)
@pytest.mark.parametrize("arch,b_std", [("mlp", 1.0), ("mlp", None), ("cnn_fc", None), ("cnn_gap", None), ("cnn_gap", 0.5)])
def test_block_circulant_pair_kernels_equal_the_full_computation(digits, group, arch: str, b_std) -> None:
    assert kernels.block_circulant(arch, group, (28, 28))
    orbit_pairs = pairs.make_orbit_pairs(digits, group, 2, seed=124)
    for kind in ("ntk", "nngp"):
        full = kernels.pair_kernels(orbit_pairs.points, arch=arch, kind=kind, b_std=b_std)
        fast = kernels.pair_kernels(orbit_pairs.points, arch=arch, kind=kind, b_std=b_std, group=group)
        assert ((fast - full).abs().max() / full.abs().max()).item() < 1e-10


def test_block_circulance_is_declared_by_group_and_kernel_not_data(digits, monkeypatch) -> None:
    for group in (Rotation(8), Rotation(4, "bilinear"), Translation(8), Translation(4, "y")):
        exact = group.exact_kind(28, 28) is not None
        assert exact == (repr(group) in {repr(Rotation(4)), repr(Translation(4, "y"))}), group
        assert all(kernels.block_circulant(arch, group, (28, 28)) == exact for arch in kernels.ARCHITECTURES)
    assert not kernels.block_circulant("cnn_gap", Rotation(4), (28, 30))  # a quarter turn of a non-square image
    # a kernel that declares no invariance gets the full computation, which differs in rounding only
    monkeypatch.setitem(kernels.JOINT_INVARIANCES, "mlp", frozenset())
    assert not kernels.block_circulant("mlp", Rotation(4), (28, 28))


def test_neural_tangents_backend_without_the_install_is_one_clear_error(monkeypatch) -> None:
    import sys

    kernels._kernel_fn.cache_clear()
    monkeypatch.setitem(sys.modules, "neural_tangents", None)  # makes `import neural_tangents` fail
    with pytest.raises(OrbitbenchError, match="backend='neural_tangents' needs the reference install"):
        kernels.infinite_kernel(torch.ones(2, 4), backend="neural_tangents")
    kernels._kernel_fn.cache_clear()


def test_bad_architecture_and_shapes_raise() -> None:
    with pytest.raises(OrbitbenchError, match="arch='resnet'"):
        kernels.infinite_kernel(torch.ones(2, 4), arch="resnet")
    with pytest.raises(OrbitbenchError, match="kind='cka'"):
        kernels.infinite_kernel(torch.ones(2, 4), kind="cka")
    with pytest.raises(OrbitbenchError, match="not \\[B, H, W\\]"):
        kernels.infinite_kernel(torch.ones(2, 4), arch="cnn_fc")
    with pytest.raises(OrbitbenchError, match="backend='jax' is unknown"):
        kernels.infinite_kernel(torch.ones(2, 4), backend="jax")


def test_row_ids_number_equal_rows_alike_even_when_hashes_collide(digits) -> None:
    from orbitbench.theory.closed_form import row_ids

    keys = torch.round(pairs.pose_orbits(digits.images[:6], Translation(4)).reshape(24, 784) * 2.0**20).long()
    keys = torch.cat([keys, keys[[3, 7, 7]]])  # repeated rows
    exact = torch.unique(keys, dim=0, return_inverse=True)[1]
    for multipliers in (None, torch.zeros(784, dtype=torch.long)):  # zeros: every row collides
        ids = row_ids(keys, multipliers)
        assert torch.equal(ids[:, None] == ids[None, :], exact[:, None] == exact[None, :])
