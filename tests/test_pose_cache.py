"""Posing once per fit (`OrbitDataModule` pose cache) gives the bytes per-batch posing gives.

The cache is a speed-up only: every batch, and so every weight of a fit, must be bit for bit
what posing each batch on the fly gives, or the leaderboard's seeded entries would stop verifying.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orbitbench.datamodules import RotatedMNIST, TranslatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.run.cli import run_lightning_cli

pytestmark = pytest.mark.usefixtures("one_thread")
FITTING = SimpleNamespace(state=SimpleNamespace(fn="fit"))


def _bits(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous().view(torch.int32)


@pytest.mark.parametrize("make", [
    lambda: RotatedMNIST(n_angles=8, source="mnist5k", images_per_class=60),
    lambda: RotatedMNIST(n_angles=8, source="mnist5k", images_per_class=60, interpolation="nearest"),
    lambda: RotatedMNIST(n_angles=6, source="mnist5k", images_per_class=20, interpolation="cubic"),
    lambda: RotatedMNIST(n_angles=5, source="mnist5k", images_per_class=60, normalize="sphere"),
    lambda: TranslatedMNIST(n_shifts=3, source="mnist5k", images_per_class=60),
], ids=["bilinear", "nearest", "cubic", "sphere", "translation"])
def test_cached_batches_equal_per_batch_posing_bit_for_bit(make) -> None:
    dm = make()
    dm.setup("fit")
    dm.trainer = FITTING
    assert dm._posed(torch.device("cpu")) is not None
    generator = torch.Generator().manual_seed(0)
    for name, pairs in dm.splits.items():
        rows = pairs[torch.randperm(len(pairs), generator=generator)[:300]]  # mixed poses, as a shuffled batch
        cached = dm.materialize(rows[:, 0], rows[:, 1])
        fresh = dm._pose_batch(rows[:, 0], rows[:, 1]).unsqueeze(1)
        assert cached.shape == fresh.shape == (len(rows), 1, 28, 28) and cached.stride() == fresh.stride(), name
        assert torch.equal(_bits(cached), _bits(fresh)), name


def test_cache_only_in_a_fit_and_under_the_cap(monkeypatch) -> None:
    dm = RotatedMNIST(n_angles=4, source="mnist5k", images_per_class=10)
    dm.setup("fit")
    assert dm._posed(torch.device("cpu")) is None  # no trainer: per batch (theory, experiments)
    dm._posed_by_device.clear()
    dm.trainer = FITTING
    monkeypatch.setenv("ORBITBENCH_POSE_CACHE_MB", "0")
    assert dm._posed(torch.device("cpu")) is None
    dm._posed_by_device.clear()
    monkeypatch.setenv("ORBITBENCH_POSE_CACHE_MB", "1")  # 100 images x 4 x 784 x 4 bytes = 1.25 MB > 1 MB
    assert dm._posed(torch.device("cpu")) is None
    dm._posed_by_device.clear()
    monkeypatch.setenv("ORBITBENCH_POSE_CACHE_MB", "2")
    assert dm._posed(torch.device("cpu")).shape == (100 * 4, 28, 28)
    for bad in ("lots", "-1", "nan"):
        dm._posed_by_device.clear()
        monkeypatch.setenv("ORBITBENCH_POSE_CACHE_MB", bad)
        with pytest.raises(OrbitbenchError, match="ORBITBENCH_POSE_CACHE_MB"):
            dm._posed(torch.device("cpu"))


@pytest.mark.parametrize("method", ["supervised", "pose_consistency"])
def test_short_fit_gives_the_same_weights_with_the_cache_on_and_off(tmp_path: Path, monkeypatch, method: str) -> None:
    def weights(cache_mb: str, folder: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("ORBITBENCH_POSE_CACHE_MB", cache_mb)
        with contextlib.redirect_stdout(io.StringIO()):
            status = run_lightning_cli([
                "fit", "--data.n_angles", "8", "--data.images_per_class", "30", "--data.batch_size", "64",
                "--data.source", "mnist5k", "--model.method", method, "--trainer.max_steps", "12",
                "--trainer.precision", "bf16-mixed", "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / folder)])
        assert status == 0
        [checkpoint] = (tmp_path / folder).rglob("last.ckpt")
        return torch.load(checkpoint, weights_only=True)["state_dict"]

    on, off = weights("2048", "on"), weights("0", "off")
    assert on.keys() == off.keys()
    for key in on:
        assert torch.equal(on[key], off[key]), key
