"""`theory multiclass --train` (paper Fig. 6B): the networks train on the kernel side's points; the
experiments as typed functions; device errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from orbitbench.theory import pairs
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import Rotation
from orbitbench.experiments._run import DigitData
from orbitbench import cli
from orbitbench.experiments.networks import training_datamodule


def main(argv: list[str]) -> int:
    """`orbitbench theory ...` through the one front end, as a user types it."""
    return cli.main(["theory", *argv])


def test_networks_train_on_exactly_the_kernel_sides_points(mnist5k) -> None:
    n, per_class, leave_out, seed = 8, 3, 6, 124
    orbits, index = pairs.class_orbits(mnist5k, Rotation(n, "cubic"), list(range(10)), per_class, seed)
    data = training_datamodule(n, leave_out, per_class, seed, "cubic", "mnist5k", "data", batch_size=32)
    data.setup("fit")
    # the same seed digits: each DataModule image is exactly one of the kernel side's seeds
    seeds = mnist5k.images[index.reshape(-1)]  # [10*S, 28, 28], class-major
    match = (data.digits.images[:, None] == seeds[None]).flatten(2).all(-1)  # [10*S (data), 10*S (kernel)]
    assert match.sum(0).eq(1).all() and match.sum(1).eq(1).all()
    kernel_seed = match.long().argmax(1)  # data image -> kernel seed
    # every (image, pose) trains except pose 0 of the leave-out class, which is the out-test
    train, out_test = data.splits["train"], data.splits["out_test"]
    assert len(data.splits["in_test"]) == 0 and len(train) + len(out_test) == 10 * per_class * n
    assert out_test[:, 1].eq(0).all() and data.digits.labels[out_test[:, 0]].eq(leave_out).all()
    assert len(out_test) == per_class
    # and the pixels the network sees are the kernel side's points (float32 rounding apart)
    everything = torch.cat([train, out_test])
    seen = data.materialize(everything[:, 0], everything[:, 1])[:, 0].double()  # [M, 28, 28]
    points = orbits.reshape(10 * per_class, n, 28, 28)[kernel_seed[everything[:, 0]], everything[:, 1]]
    assert (seen - points).abs().max() < 1e-6
    assert data.digits.labels.tolist() == mnist5k.labels[index.reshape(-1)][kernel_seed].tolist()


@pytest.mark.timeout(300)
def test_multiclass_train_writes_network_and_spectral_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "m"
    argv = ["multiclass", "--out", str(out), "--n_angles", "[2]", "--seeds_per_class", "1", "--train", "true", "--steps", "3",
            "--leave_out_classes", "[3,7]"]
    assert main(argv) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    trained = {int(r["leave_out_class"]): float(r["paper_mlp_out_test_acc"]) for r in rows if r["paper_mlp_out_test_acc"]}
    assert set(trained) == {3, 7} and all(a in (0.0, 1.0) for a in trained.values())  # one out-test image each
    assert all(0.0 <= float(r["paper_mlp_train_acc"]) <= 1.0 for r in rows if r["paper_mlp_train_acc"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_out_test_accuracy"]["paper_mlp"]["n2"] == pytest.approx(sum(trained.values()) / 2)
    spectral = {int(r["leave_out_class"]): float(r["spectral_accuracy"]) for r in rows}
    assert summary["spectral_accuracy_trained_classes"]["n2"] == pytest.approx((spectral[3] + spectral[7]) / 2)
    assert summary["ridge"]["spectral"].startswith("0 * trace(K)") and "exact" not in summary["ridge"]


def test_experiments_are_typed_functions_that_check_their_options(tmp_path: Path) -> None:
    from orbitbench.experiments.pairs import pairs as pairs_experiment

    path = pairs_experiment(n_pairs=2, n_poses=[4], depths=[1], out=tmp_path / "p")
    assert path == tmp_path / "p" and (path / "summary.json").is_file()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["interpolation"] == "cubic" and summary["ridge"]["exact"].startswith("1e-10 * trace(K[O, O])")
    for bad in (dict(n_pairs=0), dict(n_poses=[4, 0]), dict(reg=-1.0), dict(data=DigitData(interpolation="lanczos")), dict(group="spin")):
        with pytest.raises(OrbitbenchError):
            pairs_experiment(**bad, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device,message", [("cuda", "--device cuda: CUDA is not available"), ("gpu7", "not a torch device")])
def test_unusable_device_is_one_line(tmp_path: Path, capsys, device: str, message: str) -> None:
    assert main(["cnn", "--out", str(tmp_path / "c"), "--device", device, "--n_pairs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
