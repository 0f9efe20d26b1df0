"""`orbitbench fit|validate|predict --model.backbone 'linearized(paper_mlp)'` end to end (embedded digits).

The linearised model is trained by the same CLI as the network: it resumes from `--ckpt_path last`
bit for bit, its checkpoints carry the initial weights, every evaluation command loads it, the
methods that read the backbone's features train it, and what cannot be linearised is one line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import torch

from orbitbench.run.cli import run_lightning_cli
from orbitbench.run.record import load_record

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

MODEL = "linearized(paper_mlp)"
# 20 digits per class x 4 rotations; leave-out class 3.
TINY = [
    "--model.backbone", MODEL, "--data.n_angles", "4", "--data.images_per_class", "20", "--data.batch_size", "64",
    "--data.leave_out_class", "3", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lightning_cli(list(argv))
    return status, out.getvalue()


def fit(save_dir: Path, *extra: str) -> int:
    return cli("fit", *TINY, "--trainer.logger.init_args.save_dir", str(save_dir), *extra)[0]


def run_dir(save_dir: Path) -> Path:
    (found,) = save_dir.glob("*/version_*")
    return found


def final(save_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the record's metrics, the last checkpoint's weights and buffers)."""
    run = run_dir(save_dir)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return json.loads((run / "record.json").read_text())["metrics"], state


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("unbroken")
    assert fit(save_dir, "--trainer.max_epochs", "2") == 0
    return save_dir


def test_it_trains_and_keeps_its_initial_weights_in_the_checkpoint(unbroken) -> None:
    metrics, state = final(unbroken)
    assert run_dir(unbroken).parent.name == "linearized-paper_mlp-RotatedMNIST-n4-c3"  # <backbone>-<data>-n<order>-c<leave-out class>
    assert metrics["in_test_acc"] > 0.2  # ten classes: chance is 0.1
    moved = state["net.weights.1/weight"] - state["net.backbone.1.weight"]  # w - w0, both in the checkpoint
    assert 0 < float(moved.abs().max()) < 1


def test_resume_after_epoch_one_matches_the_unbroken_run(unbroken, tmp_path) -> None:
    assert fit(tmp_path, "--trainer.max_epochs", "1") == 0
    assert fit(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last") == 0
    (metrics, state), (expected_metrics, expected_state) = final(tmp_path), final(unbroken)
    assert metrics == expected_metrics
    assert state.keys() == expected_state.keys()
    assert all(torch.equal(state[k], expected_state[k]) for k in state)


def test_validate_and_predict_load_the_checkpoint(unbroken) -> None:
    ckpt = run_dir(unbroken) / "checkpoints" / "last.ckpt"
    metrics, _ = final(unbroken)
    status, _ = cli("validate", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false")
    (evaluation,) = (run_dir(unbroken) / "eval").glob("validate-*")  # logged inside the run it evaluates
    validated = load_record(evaluation).metrics
    assert status == 0 and validated.in_test_acc == pytest.approx(metrics["in_test_acc"], abs=1e-9)
    assert validated.out_test_acc == pytest.approx(metrics["out_test_acc"], abs=1e-9)
    status, _ = cli("predict", "--ckpt_path", str(ckpt), "--split", "out_test", "--trainer.enable_progress_bar", "false")
    (folder,) = (run_dir(unbroken) / "eval").glob("predict-out_test-*")
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    assert status == 0 and len(rows) == 20  # every upright 3
    accuracy = sum(r["predicted"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["out_test_acc"], abs=1e-9)


def test_pose_consistency_trains_the_linearised_features(tmp_path) -> None:
    assert fit(tmp_path, "--trainer.max_epochs", "1", "--model.method", "pose_consistency") == 0
    metrics, _ = final(tmp_path)
    assert 0.0 <= metrics["in_test_acc"] <= 1.0


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model.backbone", "linearized(timm:resnet18)"], "BatchNorm2d layers update running statistics in place"),
    (["--model.backbone", "linearized(steerable_cnn_c4)"], "its forward pass changes buffers in place"),
    (["--model.method", "latent_operator"], "latent_operator: the backbone's read-out is a LinearizedFeatures"),
])  # fmt: skip
def test_what_cannot_be_trained_linearised_is_one_line(args, fragment, tmp_path, capsys) -> None:
    save_dir = tmp_path / "runs"
    assert fit(save_dir, "--trainer.max_epochs", "1", *args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("orbitbench: ")]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert not save_dir.exists()  # nothing written half-way


def test_the_kernel_callback_sees_a_constant_kernel(tmp_path) -> None:
    """Its NTK is J(x; w0) J(x'; w0)^T at any weights: `init` and `trained` are one kernel."""
    assert fit(tmp_path, "--trainer.max_epochs", "1", "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback",
               "--trainer.callbacks.predictors", "[infinite, init, trained]", "--trainer.callbacks.n_seeds", "6",
               "--trainer.callbacks.train_per_class", "6", "--trainer.callbacks.figures", "false") == 0  # fmt: skip
    predictions = json.loads((run_dir(tmp_path) / "record.json").read_text())["predictions"]["predictors"]
    init, trained = predictions["init"], predictions["trained"]
    assert trained["kernel_drift"] == 0.0
    scores = [k for k in init if k.endswith(("_acc", "kappa", "spearman", "agreement")) and k in trained]
    assert scores and all(init[k] == trained[k] for k in scores), {k: (init[k], trained[k]) for k in scores}
    assert "undefined" not in predictions["infinite"]  # paper_mlp's twin is the linearisation's too
