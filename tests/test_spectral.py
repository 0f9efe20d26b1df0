"""Eq. 7, App. A.1 and Eq. 12 of `orbitbench.theory.spectral` against exact regression done here in numpy.

Every reference value is computed in this file with numpy/scipy linear algebra (leave-one-out by
solving the reduced system), never by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from orbitbench.theory import spectral
from orbitbench.errors import OrbitbenchError


def rbf_toy_kernel(n_per_orbit: int, distance: float, length: float = 1.4) -> np.ndarray:
    """Paper Fig. 2-3: two unit circles at z = +-d/2, the second rotated by pi/N, interleaved."""
    t = 2 * np.pi * np.arange(n_per_orbit) / n_per_orbit
    a = np.stack([np.cos(t), np.sin(t), np.full(n_per_orbit, distance / 2)], 1)
    b = np.stack([np.cos(t + np.pi / n_per_orbit), np.sin(t + np.pi / n_per_orbit), np.full(n_per_orbit, -distance / 2)], 1)
    x = np.empty((2 * n_per_orbit, 3))
    x[0::2], x[1::2] = a, b
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    return np.exp(-(length**2) * sq)


def random_circulant_spd(n: int, rng: np.random.Generator) -> np.ndarray:
    """Symmetric circulant with positive eigenvalues lambda_k = lambda_{n-k} spread over 3 decades."""
    half = rng.uniform(-3, 0, n // 2 + 1)
    eig = 10.0 ** np.concatenate([half, half[1 : n - n // 2][::-1]])
    first_column = np.fft.ifft(eig).real
    return scipy.linalg.circulant(first_column)


def labels(n: int) -> np.ndarray:
    return np.array([(-1.0) ** i for i in range(n)])


def exact_loo(kernel: np.ndarray, left_out: list[int], ridge: float) -> np.ndarray:
    """y_hat at `left_out` from the other points, ridge added to the reduced system."""
    n = kernel.shape[0]
    observed = np.setdiff1d(np.arange(n), left_out)
    k_oo = kernel[np.ix_(observed, observed)] + ridge * np.eye(observed.size)
    return kernel[np.ix_(left_out, observed)] @ np.linalg.solve(k_oo, labels(n)[observed])


@pytest.mark.parametrize("n_per_orbit", [4, 8, 12, 16])
@pytest.mark.parametrize("distance", [0.5, 1.0, 2.0])
def test_eq7_equals_exact_loo_on_rbf_toy(n_per_orbit: int, distance: float) -> None:
    kernel = rbf_toy_kernel(n_per_orbit, distance)
    exact = 1.0 - exact_loo(kernel, [0], ridge=0.0)[0]
    got = spectral.spectral_error(torch.from_numpy(kernel)).item()
    assert got == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize("n_per_orbit", [16, 32, 48])
def test_eq7_with_ridge_equals_loo_with_the_same_ridge(n_per_orbit: int) -> None:
    # Spectral ridge reg * n * K00 on the full spectrum == ridge reg * trace(K) on the reduced system.
    reg = 1e-5
    kernel = rbf_toy_kernel(n_per_orbit, 1.0)
    exact = 1.0 - exact_loo(kernel, [0], ridge=reg * np.trace(kernel))[0]
    got = spectral.spectral_error(torch.from_numpy(kernel), reg=reg).item()
    assert got == pytest.approx(exact, rel=1e-8)


def test_eq7_on_random_circulant_spd_and_prediction_is_one_minus_error() -> None:
    rng = np.random.default_rng(0)
    for n in (4, 10, 32, 64):
        kernel = random_circulant_spd(n, rng)
        exact = 1.0 - exact_loo(kernel, [0], ridge=0.0)[0]
        error = spectral.spectral_error(torch.from_numpy(kernel)).item()
        assert error == pytest.approx(exact, rel=1e-8)
        assert spectral.spectral_prediction(torch.from_numpy(kernel)).item() == pytest.approx(1 - exact, abs=1e-8)
        # the same number from the spectrum done independently with numpy
        lam = np.linalg.eigvalsh(kernel)
        fft_lam = np.fft.fft(kernel[0]).real
        assert np.allclose(np.sort(fft_lam), lam)


@pytest.mark.parametrize("missing", [[0], [0, 1], [0, 3, 4], [2, 5, 6, 11]])
def test_missing_errors_equal_exact_regression(missing: list[int]) -> None:
    rng = np.random.default_rng(1)
    for kernel in (random_circulant_spd(16, rng), rbf_toy_kernel(8, 1.0)):
        exact = labels(16)[missing] - exact_loo(kernel, missing, ridge=0.0)
        got = spectral.missing_errors(torch.from_numpy(kernel), missing).numpy()
        np.testing.assert_allclose(got, exact, rtol=1e-8, atol=1e-10)


def test_kernel_regression_uses_trace_of_observed_block_as_ridge() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5))
    kernel = x @ x.T + 0.1 * np.eye(12)
    y = labels(12)
    reg = 1e-3
    for left_out in ([0], [1, 4, 7]):
        observed = np.setdiff1d(np.arange(12), left_out)
        ridge = reg * np.trace(kernel[np.ix_(observed, observed)])
        expected = exact_loo(kernel, left_out, ridge)
        got = spectral.kernel_regression(torch.from_numpy(kernel), torch.from_numpy(y), left_out, reg=reg)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    scalar = spectral.kernel_regression(torch.from_numpy(kernel), torch.from_numpy(y), 3, reg=reg)
    assert scalar.ndim == 0


def test_symmetrized_error_averages_both_orbits() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 4))
    kernel = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 4)
    y = labels(10)
    observed = [np.setdiff1d(np.arange(10), [i]) for i in (0, 1)]
    ridges = [1e-10 * np.trace(kernel[np.ix_(o, o)]) for o in observed]
    expected = 0.5 * sum(abs(y[i] - exact_loo(kernel, [i], ridges[i])[0]) for i in (0, 1))
    assert spectral.symmetrized_error(torch.from_numpy(kernel)).item() == pytest.approx(expected, rel=1e-8)


def test_circularize_is_circulant_idempotent_and_averages_diagonals() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 8, 8))
    kernel = torch.from_numpy(x @ x.transpose(0, 2, 1))
    circ = spectral.circularize(kernel)
    for b in range(3):
        c, k = circ[b].numpy(), kernel[b].numpy()
        expected_first_row = [np.mean([k[i, (i + d) % 8] for i in range(8)]) for d in range(8)]
        np.testing.assert_allclose(c[0], expected_first_row, rtol=1e-12)
        np.testing.assert_allclose(c, scipy.linalg.circulant(c[0]).T, rtol=1e-12)
    torch.testing.assert_close(spectral.circularize(circ), circ, rtol=1e-13, atol=1e-13)
    # on an exactly circulant matrix it is the identity map
    c = torch.from_numpy(random_circulant_spd(8, rng))
    torch.testing.assert_close(spectral.circularize(c), c, rtol=1e-13, atol=1e-13)


def test_batched_calls_equal_per_item_calls() -> None:
    rng = np.random.default_rng(5)
    kernels = torch.from_numpy(np.stack([random_circulant_spd(12, rng) for _ in range(6)])).reshape(2, 3, 12, 12)
    y = torch.from_numpy(labels(12))
    batched = {
        "spectral": spectral.spectral_error(kernels, reg=1e-6),
        "missing": spectral.missing_errors(kernels, [0, 5]),
        "regression": spectral.kernel_regression(kernels, y, [1, 2]),
        "symmetrized": spectral.symmetrized_error(kernels),
        "circularize": spectral.circularize(kernels + 0.01 * torch.arange(144.0, dtype=torch.float64).reshape(12, 12)),
    }
    for i in range(2):
        for j in range(3):
            k = kernels[i, j]
            torch.testing.assert_close(batched["spectral"][i, j], spectral.spectral_error(k, reg=1e-6), rtol=1e-12, atol=0)
            torch.testing.assert_close(batched["missing"][i, j], spectral.missing_errors(k, [0, 5]), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(batched["regression"][i, j], spectral.kernel_regression(k, y, [1, 2]), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(batched["symmetrized"][i, j], spectral.symmetrized_error(k), rtol=1e-10, atol=1e-12)
            shifted = k + 0.01 * torch.arange(144.0, dtype=torch.float64).reshape(12, 12)
            torch.testing.assert_close(batched["circularize"][i, j], spectral.circularize(shifted))


def test_orbit_geometry_matches_direct_computation() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, 6, 10))
    dist_sq, radius = spectral.orbit_geometry(torch.from_numpy(a), torch.from_numpy(b))
    assert dist_sq.item() == pytest.approx(np.sum((a.mean(0) - b.mean(0)) ** 2))
    r = np.mean([np.linalg.norm(p - o.mean(0)) for o in (a, b) for p in o])
    assert radius.item() == pytest.approx(r)


def test_orbit_pair_kernels_and_seed_averages_match_direct_construction() -> None:
    rng = np.random.default_rng(7)
    n_poses, n_a, n_b = 4, 2, 3
    points = rng.normal(size=((n_a + n_b) * n_poses, 6))  # orbit-major: orbit o pose k at o*N + k
    gram = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1) / 6)
    pairs = spectral.orbit_pair_kernels(torch.from_numpy(gram), n_poses, torch.tensor([0, 1]), torch.tensor([3, 4]))
    errors = []
    for p, (oa, ob) in enumerate([(0, 3), (1, 4)]):
        rows = np.empty(2 * n_poses, dtype=int)
        rows[0::2] = oa * n_poses + np.arange(n_poses)
        rows[1::2] = ob * n_poses + np.arange(n_poses)
        np.testing.assert_array_equal(pairs[p].numpy(), gram[np.ix_(rows, rows)])
    for oa in range(n_a):
        for ob in range(n_a, n_a + n_b):
            rows = np.empty(2 * n_poses, dtype=int)
            rows[0::2] = oa * n_poses + np.arange(n_poses)
            rows[1::2] = ob * n_poses + np.arange(n_poses)
            k = gram[np.ix_(rows, rows)]
            circ = np.array([[np.mean([k[i, (i + (c - r)) % 8] for i in range(8)]) for c in range(8)] for r in range(8)])
            errors.append(1.0 - exact_loo(circ, [0], 0.0)[0])  # Eq. 7 on a circulant == exact LOO
    got = spectral.pair_averaged_spectral_error(torch.from_numpy(gram), n_poses, n_a).item()
    assert got == pytest.approx(np.mean(errors), rel=1e-8)
    # exact side: pose 0 of every class-A orbit left out, then the same for class B
    y = np.where(np.arange(gram.shape[0]) < n_a * n_poses, 1.0, -1.0)

    def predict(left_out: np.ndarray) -> np.ndarray:
        observed = np.setdiff1d(np.arange(gram.shape[0]), left_out)
        k_oo = gram[np.ix_(observed, observed)]
        k_oo = k_oo + 1e-10 * np.trace(k_oo) * np.eye(observed.size)
        return gram[np.ix_(left_out, observed)] @ np.linalg.solve(k_oo, y[observed])

    upright = np.arange(n_a + n_b) * n_poses
    expected = 0.5 * ((1 - predict(upright[:n_a]).mean()) + (1 + predict(upright[n_a:]).mean()))
    assert spectral.seeds_exact_error(torch.from_numpy(gram), n_poses, n_a).item() == pytest.approx(expected, rel=1e-8)


def test_one_vs_many_accuracy_counts_orbits_beating_every_other_class() -> None:
    pred = torch.full((3, 2, 3, 2), 0.5, dtype=torch.float64)
    pred[0, 1, 2] = torch.tensor([0.3, -0.5])  # mean -0.1 against class 2: orbit (0, 1) wrong
    pred[1, :, 1] = -5.0  # same-class entries are ignored
    pred[2, 0, 0] = torch.tensor([-0.2, 0.3])  # mean +0.05: still right
    np.testing.assert_allclose(spectral.one_vs_many_accuracy(pred).numpy(), [0.5, 1.0, 1.0])


def test_bad_inputs_raise_one_line_errors() -> None:
    with pytest.raises(OrbitbenchError, match="odd"):
        spectral.spectral_error(torch.eye(5, dtype=torch.float64))
    with pytest.raises(OrbitbenchError, match="out of range"):
        spectral.kernel_regression(torch.eye(4, dtype=torch.float64), torch.ones(4), [4])
    with pytest.raises(OrbitbenchError, match="not \\[..., n, n\\]"):
        spectral.spectral_error(torch.ones(3, 4))


def test_absolute_ridges_add_the_value_itself(mnist5k) -> None:
    """relative=False: `reg` itself on the eigenvalues / the observed block's diagonal, checked with numpy."""
    from orbitbench.theory import kernels, pairs
    from orbitbench.orbits import Rotation

    orbit_pairs = pairs.make_orbit_pairs(mnist5k, Rotation(8), 2, seed=4)
    gram = kernels.pair_kernels(orbit_pairs.points)  # [2, 16, 16]
    circular = spectral.circularize(gram)
    eig = np.abs(np.fft.fft(circular[:, 0].numpy(), axis=-1).real + 0.3)  # [2, 16]
    inverse = 1 / eig
    expected = inverse[:, 8] / inverse.mean(-1)
    assert np.allclose(spectral.spectral_error(circular, 0.3, relative=False).numpy(), expected, rtol=1e-10)
    k = gram[0].numpy()
    labels = np.array([1.0, -1.0] * 8)
    observed = np.arange(1, 16)
    alpha = np.linalg.solve(k[np.ix_(observed, observed)] + 0.05 * np.eye(15), labels[observed])
    got = spectral.kernel_regression(gram[0], torch.from_numpy(labels), 0, reg=0.05, relative=False)
    assert float(got) == pytest.approx(float(k[0, observed] @ alpha), rel=1e-9)
    assert float(got) != pytest.approx(float(spectral.kernel_regression(gram[0], torch.from_numpy(labels), 0, reg=0.05)))
