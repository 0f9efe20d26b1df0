"""Split arithmetic and batches of the orbit DataModules on the real embedded MNIST subset."""

from __future__ import annotations

import pytest
import torch

from orbitbench.datamodules import OrbitBatch, RotatedMNIST, TranslatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import Rotation, normalize


def pair_keys(pairs: torch.Tensor, n_poses: int) -> set[int]:
    return set((pairs[:, 0] * n_poses + pairs[:, 1]).tolist())


@pytest.fixture(scope="module")
def rotated() -> RotatedMNIST:
    dm = RotatedMNIST(n_angles=8, leave_out_class=5, source="mnist5k", seed=125)
    dm.setup("fit")
    return dm


def test_split_arithmetic_on_the_embedded_data(rotated: RotatedMNIST) -> None:
    splits, labels = rotated.splits, rotated.digits.labels
    assert splits["out_test"].shape[0] == 500
    assert (labels[splits["out_test"][:, 0]] == 5).all() and (splits["out_test"][:, 1] == 0).all()
    assert splits["train"].shape[0] + splits["in_test"].shape[0] == 5000 * 8 - 500 == 39_500
    assert abs(splits["in_test"].shape[0] - 3_950) <= 1
    keys = [pair_keys(p, 8) for p in splits.values()]
    assert sum(map(len, keys)) == 40_000 and len(set().union(*keys)) == 40_000  # disjoint, complete
    # The leave-out class is still seen, in every other pose, in training.
    train_fives = splits["train"][labels[splits["train"][:, 0]] == 5]
    assert set(train_fives[:, 1].tolist()) == set(range(1, 8))


def test_splits_are_seeded() -> None:
    def splits(seed: int) -> dict[str, torch.Tensor]:
        dm = RotatedMNIST(n_angles=4, source="mnist5k", seed=seed)
        dm.setup("fit")
        return dm.splits

    a, b, c = splits(1), splits(1), splits(2)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["train"], c["train"]) and torch.equal(a["out_test"], c["out_test"])


def test_several_held_out_poses_and_translations() -> None:
    dm = TranslatedMNIST(n_shifts=7, leave_out_class=0, held_out_poses=[0, 3], source="mnist5k", images_per_class=20)
    dm.setup("fit")
    assert dm.digits.class_counts().tolist() == [20] * 10
    assert dm.splits["out_test"].shape[0] == 40 and set(dm.splits["out_test"][:, 1].tolist()) == {0, 3}


def test_batches_are_posed_on_the_fly(rotated: RotatedMNIST) -> None:
    raw = next(iter(rotated.train_dataloader()))
    batch = rotated.on_after_batch_transfer(raw, 0)
    assert isinstance(batch, OrbitBatch)
    assert batch.image.shape == (512, 1, 28, 28) and batch.image.dtype == torch.float32
    assert torch.equal(batch.label, rotated.digits.labels[batch.image_index])
    # Each image is the stored digit, unit-normed, rotated by its own pose.
    pixels = normalize(rotated.digits.images[batch.image_index].float() / 255, "unit_norm")
    expected = Rotation(8).apply(pixels, batch.pose)
    assert torch.allclose(batch.image[:, 0], expected, atol=1e-6)
    in_test, out_test = rotated.val_dataloader()
    assert len(in_test.dataset) == rotated.splits["in_test"].shape[0] and len(out_test.dataset) == 500


def test_epoch_shuffle_depends_only_on_seed_and_epoch(rotated: RotatedMNIST) -> None:
    def first_batch(epoch: int) -> torch.Tensor:
        loader = rotated.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader)).image_index

    assert torch.equal(first_batch(3), first_batch(3)) and not torch.equal(first_batch(3), first_batch(4))


def test_sphere_normalisation_after_the_action() -> None:
    dm = RotatedMNIST(n_angles=8, source="mnist5k", images_per_class=5, normalize="sphere")
    dm.setup("fit")
    images = dm.materialize(torch.arange(10), torch.arange(10) % 8)[:, 0]
    assert torch.allclose(images.mean(dim=(-2, -1)), torch.zeros(10), atol=1e-6)
    assert torch.allclose(images.norm(dim=(-2, -1)), torch.ones(10), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_angles": 0}, r"n_angles=0 is invalid: expected an integer in 1\.\.360"),
        ({"leave_out_class": 10}, r"leave_out_class=10 is invalid: expected a digit class 0-9"),
        ({"held_out_poses": [8]}, r"held_out_poses=\[8\] is invalid: expected distinct pose indices in 0\.\.7"),
        ({"in_test_fraction": 1.0}, r"in_test_fraction=1\.0 is invalid: expected a fraction in \(0, 1\)"),
        ({"held_out_poses": list(range(8))}, r"holds out every pose of leave_out_class 5, which would have no training data"),
        ({"n_angles": 1}, r"held_out_poses=\[0\] holds out every pose .* expected at most 0 of the 1 poses"),
        ({"source": "mnist5k", "images_per_class": 501}, r"images_per_class=501 is invalid .* expected 1\.\.500"),
        ({"normalize": "zscore"}, r"normalize='zscore' is invalid"),
    ],
)
def test_bad_values_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(OrbitbenchError, match=message):
        RotatedMNIST(**{"n_angles": 8, **kwargs})


@pytest.mark.slow
def test_a_checkpoint_of_auto_data_is_not_moved_onto_full_mnist(installed_mnist, tmp_path, monkeypatch, capsys, one_thread) -> None:
    """Trained with source auto on the subset; full MNIST installed since: evaluating it with auto
    would silently use other digits (and another in-test split). One line, and the way round it."""
    from pathlib import Path

    from orbitbench.run.cli import run_lightning_cli

    tiny = ["--data.n_angles", "2", "--data.images_per_class", "10", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    models = Path(__file__).resolve().parents[1] / "models"
    assert run_lightning_cli(["fit", "--config", str(models / "paper_mlp.yaml"), *tiny, "--trainer.max_epochs", "1"]) == 0
    (checkpoint,) = (tmp_path / "runs").glob("*/version_0/checkpoints/last.ckpt")  # auto gave the subset: the suite hides full MNIST
    full = tmp_path / "full" / "MNIST" / "raw"
    full.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (full / name).symlink_to(installed_mnist / name)
    monkeypatch.setenv("ORBITBENCH_DATA", str(tmp_path / "full"))
    capsys.readouterr()
    assert run_lightning_cli(["validate", "--ckpt_path", str(checkpoint), *tiny]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "orbitbench: the checkpoint was trained on mnist5k (source auto then), but auto now gives mnist; "
        "evaluate on them with --data.source mnist5k --override_data true")
    assert run_lightning_cli(["validate", "--ckpt_path", str(checkpoint), *tiny, "--data.source", "mnist5k", "--override_data", "true"]) == 0
