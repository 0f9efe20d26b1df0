"""A new cyclic group action reaches fit, a sweep and the theory experiments by its class and its
DataModule alone: both are declared here, in the test, and nothing in the package names them."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import Tensor

from orbitbench.cli import main as cli_main
from orbitbench.datamodules import OrbitDataModule
from orbitbench.orbits import GroupAction

TRUST = "test_group_actions"  # this module, trusted the documented way (ORBITBENCH_TRUSTED_PACKAGES)


class DiagonalRoll(GroupAction):
    """C_n rolling the image by 28k/n pixels down and right at once: a pixel permutation for n | 28."""

    kind = "diagonal_roll"
    default_orders = (2, 4)

    def _pose_all(self, images: Tensor, k: int) -> Tensor:
        step = images.shape[-1] * k // self.n
        return torch.roll(images, shifts=(step, step), dims=(-2, -1))


class DiagonallyRolledMNIST(OrbitDataModule):
    order_argument = "n_rolls"
    order_range = (1, 28)

    def __init__(self, n_rolls: int = 4, **kwargs) -> None:
        super().__init__(n_rolls, **kwargs)

    def make_group(self, n_poses: int) -> GroupAction:
        return DiagonalRoll(n_poses)


@pytest.fixture(autouse=True)
def trust_this_module(monkeypatch):
    monkeypatch.setenv("ORBITBENCH_TRUSTED_PACKAGES", TRUST)


def test_the_action_is_a_cyclic_group_of_pixel_permutations() -> None:
    images = torch.rand(3, 28, 28)
    group = DiagonalRoll(4)
    orbit = group.orbit(images)  # [3, 4, 28, 28]
    assert torch.equal(group.pose(orbit[:, 3], 1), images)  # the generator applied n times is the identity
    assert torch.equal(orbit.flatten(2).sort(dim=-1).values, images.flatten(1).sort(dim=-1).values[:, None].expand(3, 4, -1))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_new_action_runs_through_fit_a_sweep_and_theory_pairs(tmp_path, capsys) -> None:
    data = f"{TRUST}.DiagonallyRolledMNIST"
    common = ["--data.source", "mnist5k", "--data.images_per_class", "10", "--data.leave_out_class", "3",
              "--data.batch_size", "64", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    fit = ["fit", "--data", data, "--data.n_rolls", "4", *common, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    assert cli_main(fit) == 0, capsys.readouterr().err
    (record_path,) = (tmp_path / "runs").rglob("record.json")
    record = json.loads(record_path.read_text())
    assert (record["data"]["datamodule"], record["data"]["group"], record["data"]["n_poses"]) == (data, "diagonal_roll", 4)
    assert record["data"]["order_argument"] == "n_rolls"

    spec = tmp_path / "rolls.yaml"
    spec.write_text(f"""\
name: rolls
track: test-rolls
datamodule: {data}
grid:
  model: [paper_mlp]
  n_rolls: [2]
  leave_out_class: [3]
  seed: [0]
fit:
  trainer.max_epochs: 1
  data.source: mnist5k
  data.images_per_class: 10
  data.batch_size: 64
""")
    out = tmp_path / "sweep"
    assert cli_main(["sweep", "run", str(spec), "--out", str(out), "--progress", "false", "--in_process", "true"]) == 0
    (row,) = csv.DictReader((out / "results.csv").open())
    assert (row["model"], row["datamodule"], row["n_poses"], row["leave_out_class"]) == ("paper_mlp", data, "2", "3")

    pairs = ["theory", "pairs", "--group", f"{TRUST}.DiagonalRoll", "--n_pairs", "3", "--depths", "[1]",
             "--out", str(tmp_path / "pairs")]  # fmt: skip
    assert cli_main(pairs) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "pairs" / "results.csv").open()))
    assert {r["n_poses"] for r in rows} == {"2", "4"}  # the action's own default orders
    summary = json.loads((tmp_path / "pairs" / "summary.json").read_text())
    assert summary["group"] == f"{TRUST}.DiagonalRoll"
