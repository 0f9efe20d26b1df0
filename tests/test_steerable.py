"""`steerable_cnn` (e2cnn): invariant to rot90 by construction, and so out-test ~ in-test at n_angles 4."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pytest
import torch

from orbitbench.data import load_digits
from orbitbench.errors import OrbitbenchError
from orbitbench.models import create_model
from orbitbench.orbits import normalize
from orbitbench.run.cli import run_lightning_cli
from test_methods import one_thread  # noqa: F401  (a fixture: one intra-op thread on the shared CPU)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _digits(n: int = 32) -> torch.Tensor:
    """Real digits as the benchmark feeds them: unit-norm images [n, 1, 28, 28]."""
    images = normalize(load_digits("mnist5k").images[:n].float() / 255.0, "unit_norm")
    return images.unsqueeze(1)


@pytest.mark.parametrize("n", [4, 8, 16])
def test_logits_are_invariant_to_rot90_of_the_input(n: int) -> None:
    torch.manual_seed(0)
    net = create_model("steerable_cnn", n=n).eval()
    assert net.invariance == f"built-in:C_{n}"
    images = _digits()
    with torch.no_grad():
        logits = net(images)
        spread = logits.std(dim=0).mean()
        for k in (1, 2, 3):
            turned = net(torch.rot90(images, k, dims=(-2, -1)))
            assert (turned - logits).abs().max() < 1e-5
    assert spread > 1e-3  # not invariant by being constant


@pytest.mark.parametrize("n", [4, 8, 16])
def test_fixed_order_variants_declare_their_group(n: int) -> None:
    """`steerable_cnn_c<n>` is steerable_cnn(n=<n>) under a name of its own, declared built-in:c<n>
    (what `leaderboard add` records), with the same weights from the same seed."""
    from orbitbench.models import model_info

    torch.manual_seed(0)
    named = create_model(f"steerable_cnn_c{n}")
    torch.manual_seed(0)
    plain = create_model("steerable_cnn", n=n)
    assert named.n == n and model_info(f"steerable_cnn_c{n}").invariance == f"built-in:c{n}"
    with torch.no_grad():
        assert torch.equal(named.eval()(_digits(4)), plain.eval()(_digits(4)))
    assert model_info("paper_mlp").invariance == "none" and model_info("c4_pooled(paper_mlp)").invariance == "built-in:c4"


def test_building_it_emits_no_warning_and_bad_settings_are_one_line() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("steerable_cnn", n=8)
    with pytest.raises(OrbitbenchError, match="n=0"):
        create_model("steerable_cnn", n=0)
    with pytest.raises(OrbitbenchError, match="widths"):
        create_model("steerable_cnn", widths=[8, 8])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_short_training_at_n_angles_4_generalises_to_the_held_out_pose(tmp_path) -> None:
    argv = [
        "fit", "--config", str(REPO / "models/steerable_cnn.yaml"), "--data.n_angles", "4", "--data.images_per_class", "50",
        "--data.batch_size", "64", "--data.leave_out_class", "3", "--trainer.max_epochs", "8",
        "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_lightning_cli(argv) == 0
    (run,) = tmp_path.glob("*/version_*")
    metrics = json.loads((run / "record.json").read_text())["metrics"]
    assert metrics["in_test_acc"] > 0.5  # it learnt something ...
    assert abs(metrics["out_test_acc"] - metrics["in_test_acc"]) <= 0.05  # ... and the unseen pose as well
