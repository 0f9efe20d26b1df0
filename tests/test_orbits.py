"""Group laws of the orbit actions, checked against torch/torchvision primitives on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from orbitbench.data import Digits
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import Rotation, Translation, circulant_defect, make_group, normalize, orbit, orbit_gram


@pytest.fixture(scope="module")
def digits(mnist5k: Digits) -> torch.Tensor:
    """Thirteen real digits, unit-normed, float64: [13, 28, 28]."""
    return normalize(mnist5k.images[::400].double() / 255, "unit_norm")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_rot90_orbit_is_an_exact_permutation(digits: torch.Tensor, mnist5k: Digits) -> None:
    poses = orbit(digits, Rotation(4))  # [13, 4, 28, 28]
    for k in range(4):
        assert torch.equal(poses[:, k], torch.rot90(digits, k, dims=(-2, -1)))
    # A permutation keeps every pixel value, hence the norm exactly ...
    assert torch.equal(poses.flatten(2).sort(dim=-1).values, digits.flatten(1).sort(dim=-1).values[:, None].expand(-1, 4, -1))
    # ... and in integer arithmetic the orbit's Gram matrix is exactly circulant.
    gram = orbit_gram(mnist5k.images[::400].long(), Rotation(4))  # [13, 4, 4] int64
    for shift in range(4):
        assert torch.equal(gram, gram.roll((shift, shift), dims=(1, 2)))


def test_rotation_matches_torchvision_rotate(digits: torch.Tensor) -> None:
    images = digits.float()
    for interpolation, mode in (("nearest", InterpolationMode.NEAREST), ("bilinear", InterpolationMode.BILINEAR)):
        ours = Rotation(8, interpolation).pose(images, 3)  # 135 degrees counter-clockwise
        theirs = TF.rotate(images[:, None], 135.0, interpolation=mode)[:, 0]
        assert (ours - theirs).abs().max() < 1e-5


def test_generator_applied_n_times_returns_the_image(digits: torch.Tensor) -> None:
    for group, tolerance in ((Rotation(4), 0.0), (Translation(7), 0.0), (Translation(4, "y"), 0.0),
                             (Translation(8), 0.05), (Rotation(8), 0.4)):
        images = digits
        for _ in range(group.n):
            images = group.pose(images, 1)
        error = relative_error(images, digits)
        assert error <= tolerance, (group, error)
        if tolerance:  # interpolated actions lose a little at every step, but never nothing
            assert error > 1e-6, (group, error)


def test_whole_pixel_translations_are_rolls(digits: torch.Tensor) -> None:
    for k in range(7):
        assert torch.equal(Translation(7).pose(digits, k), torch.roll(digits, 4 * k, dims=-1))
        assert torch.equal(Translation(7, "y").pose(digits, k), torch.roll(digits, 4 * k, dims=-2))


def test_fractional_translation_is_a_half_pixel_fourier_shift(digits: torch.Tensor) -> None:
    half = Translation(56).pose(digits, 1)  # 0.5 px
    assert torch.allclose(Translation(56).pose(half, 1), torch.roll(digits, 1, dims=-1), atol=0.05)
    assert torch.allclose(half.norm(dim=(-2, -1)), digits.norm(dim=(-2, -1)), rtol=0.02)


def test_circulant_defect_zero_for_exact_small_for_interpolated(digits: torch.Tensor) -> None:
    exact = [circulant_defect(orbit_gram(digits, g)) for g in (Rotation(4), Translation(7), Translation(28))]
    assert all(d.max() < 1e-14 for d in exact)
    interpolated = circulant_defect(orbit_gram(digits, Rotation(8)))  # [13]
    assert (interpolated > 1e-3).all() and (interpolated < 0.15).all()


@pytest.mark.parametrize(
    "group", [Rotation(16, "nearest"), Rotation(16, "bilinear"), Rotation(16, "cubic"), Translation(8)], ids=repr
)
def test_per_sample_poses_equal_whole_orbit(digits: torch.Tensor, group) -> None:
    poses = torch.arange(digits.shape[0]) % group.n
    full = orbit(digits, group)  # [13, 16, 28, 28]
    assert torch.allclose(group.apply(digits, poses), full[torch.arange(digits.shape[0]), poses], atol=1e-12)


def test_invalid_groups_are_one_clear_error() -> None:
    with pytest.raises(OrbitbenchError, match=r"n=0 is invalid: expected an integer in 1\.\.360"):
        Rotation(0)
    with pytest.raises(OrbitbenchError, match="interpolation='lanczos'"):
        Rotation(8, "lanczos")
    with pytest.raises(OrbitbenchError, match="group kind 'scaling'"):
        make_group("scaling", 4)
    with pytest.raises(OrbitbenchError, match=r"pose index 4 .* expected 0\.\.3"):
        Rotation(4).pose(torch.zeros(1, 28, 28), 4)


@pytest.mark.parametrize("n", [8, 3, 64])
def test_cubic_rotation_reproduces_scipy_rotate_order_3(digits: torch.Tensor, n: int) -> None:
    # The paper's kernel code: scipy.ndimage.rotate(image, angle, reshape=False, order=3), i.e.
    # mode "constant", cval 0, spline prefilter. Observed max |difference| ~1e-14 in float64.
    ndimage = pytest.importorskip("scipy.ndimage")
    group = Rotation(n, "cubic")
    poses = group.orbit(digits)  # [13, n, 28, 28]
    for k in range(0, n, max(1, n // 8)):
        expected = np.stack([ndimage.rotate(image, 360 * k / n, reshape=False, order=3) for image in digits.numpy()])
        assert np.abs(poses[:, k].numpy() - expected).max() <= 1e-6, k
        assert torch.equal(group.pose(digits, k), poses[:, k])
    # not bilinear: the two interpolations differ visibly off the quarter turns
    assert (poses[:, 1] - Rotation(n, "bilinear").pose(digits, 1)).abs().max() > 1e-3
    single = group.orbit(digits.float())  # float32 tables: same poses to float32 rounding
    assert (single.double() - poses).abs().max() < 1e-5


def test_cubic_quarter_turns_stay_exact_permutations(digits: torch.Tensor) -> None:
    poses = Rotation(4, "cubic").orbit(digits)
    for k in range(4):
        assert torch.equal(poses[:, k], torch.rot90(digits, k, dims=(-2, -1)))
