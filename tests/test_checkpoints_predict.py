"""Checkpoints keep their model and data, evaluations log inside their run, `predict` writes rows.

One tiny reference fit (module fixture) on the embedded digits; every other run here evaluates,
predicts from, or is refused on its checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orbitbench.data import load_digits
from orbitbench.run.cli import run_lightning_cli
from test_data import write_idx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

# 50 digits per class x 4 rotations; leave-out class 3 -> 50 out-test digits.
TINY = [
    "--data.n_angles", "4", "--data.images_per_class", "50", "--data.batch_size", "256",
    "--data.leave_out_class", "3", "--trainer.max_epochs", "2",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lightning_cli(list(argv))
    return status, out.getvalue()


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("orbitbench: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def scalars(log_dir: Path) -> dict[str, float]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, last checkpoint) of a 2-epoch paper_mlp fit with 4 angles."""
    save_dir = tmp_path_factory.mktemp("runs")
    status, _ = cli("fit", *TINY, "--trainer.logger.init_args.save_dir", str(save_dir))
    assert status == 0
    (run,) = save_dir.glob("*/version_*")
    return run, run / "checkpoints" / "last.ckpt"


def test_validate_restores_the_checkpoints_data_and_logs_inside_its_run(trained) -> None:
    run, ckpt = trained
    # No data flags at all: n_angles 4, 50 per class and class 3 come from the checkpoint, not the defaults.
    status, _ = cli("validate", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false")
    assert status == 0
    (evaluation,) = (run / "eval").glob("validate-*")
    assert scalars(evaluation)["val/in_test_acc"] == pytest.approx(scalars(run)["val/in_test_acc"], abs=1e-6)
    assert scalars(evaluation)["val/out_test_acc"] == pytest.approx(scalars(run)["val/out_test_acc"], abs=1e-6)
    assert len(list(run.parent.glob("version_*"))) == 1  # no extra version folder beside the fit


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["fit", "--model.backbone", "paper_convnet"], "--model.backbone is 'paper_convnet', the checkpoint was trained with 'paper_mlp'"),
        (["validate", "--data.n_angles", "8"], "--data.n_angles is 8, the checkpoint was trained with 4 (add --override_data true"),
        (["test", "--data", "orbitbench.datamodules.TranslatedMNIST"], "--data is TranslatedMNIST, the checkpoint's is RotatedMNIST"),
        # However the setting is given: as a dict, or in a config file named with `=`.
        (["test", "--data", "{n_angles: 8}"], "--data.n_angles is 8, the checkpoint was trained with 4"),
        (["predict", "--data={n_angles: 8}"], "--data.n_angles is 8, the checkpoint was trained with 4"),
        (["validate", "--config=CONFIG"], "--data.n_angles is 8, the checkpoint was trained with 4"),
        (["test", "--data={class_path: TranslatedMNIST}"], "--data is TranslatedMNIST, the checkpoint's is RotatedMNIST"),
        (["fit", "--model={init_args: {backbone: paper_convnet}}"], "--model.backbone is 'paper_convnet', the checkpoint"),
    ],
)
def test_settings_that_contradict_the_checkpoint_are_refused(trained, tmp_path, capsys, argv, fragment) -> None:
    _, ckpt = trained
    config = tmp_path / "eight.yaml"
    config.write_text("data:\n  init_args:\n    n_angles: 8\n")
    command, *flags = [arg.replace("CONFIG", str(config)) for arg in argv]
    status, _ = cli(command, "--ckpt_path", str(ckpt), *flags, "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))
    assert status == 2
    assert fragment in error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_another_backbone_is_not_told_to_override_the_data(trained, tmp_path, capsys) -> None:
    """--override_data only allows other data; for another backbone the hint says what does help."""
    _, ckpt = trained
    status, _ = cli("validate", "--ckpt_path", str(ckpt), "--model.backbone", "paper_convnet",
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))  # fmt: skip
    line = error_line(capsys)
    assert status == 2 and "override_data" not in line
    assert "--model.backbone is 'paper_convnet'" in line and "without --ckpt_path" in line
    # Both at once: each conflict gets its own remedy.
    status, _ = cli("validate", "--ckpt_path", str(ckpt), "--model.backbone", "paper_convnet", "--data.n_angles", "8",
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))  # fmt: skip
    line = error_line(capsys)
    assert status == 2 and "add --override_data true to evaluate on other data" in line and "drop the --model flags" in line


@pytest.mark.parametrize("flags", [["--data.n_angles", "8"], ["--data", "{n_angles: 8}"], ["--config=CONFIG"]], ids=str)
def test_override_data_evaluates_on_other_poses(trained, tmp_path, flags) -> None:
    """What the user set is what runs, however it was given: the record says 8 poses."""
    from orbitbench.run.record import load_record

    run, ckpt = trained
    config = tmp_path / "eight.yaml"
    config.write_text("data:\n  init_args:\n    n_angles: 8\n")
    before = set((run / "eval").glob("test-*"))
    status, _ = cli("test", "--ckpt_path", str(ckpt), *[f.replace("CONFIG", str(config)) for f in flags],
                    "--override_data", "true", "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert status == 0
    (evaluation,) = set((run / "eval").glob("test-*")) - before
    assert "test/out_test_acc" in scalars(evaluation)
    record = load_record(evaluation)
    assert record.data.n_poses == 8 and record.data.hparams["images_per_class"] == 50  # the rest: the checkpoint's


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "truncated"], ids=["missing", "garbage", "truncated"])
def test_unreadable_checkpoints_are_one_line(trained, tmp_path, capsys, content) -> None:
    path = tmp_path / "model.ckpt"
    if content == "truncated":
        path.write_bytes(trained[1].read_bytes()[:4096])
    elif content is not None:
        path.write_bytes(content)
    status, _ = cli("validate", "--ckpt_path", str(path))
    assert status == 2
    line = error_line(capsys)
    assert str(path) in line and ("no such file" in line if content is None else "not a readable PyTorch checkpoint" in line)


@pytest.mark.parametrize("split", ["out_test", "in_test"])
def test_predict_writes_one_row_per_sample_and_a_confusion_figure(trained, split) -> None:
    run, ckpt = trained
    status, stdout = cli("predict", "--ckpt_path", str(ckpt), "--split", split, "--trainer.enable_progress_bar", "false")
    assert status == 0 and "predictions.csv" in stdout
    (folder,) = (run / "eval").glob(f"predict-{split}-*")
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    digits = load_digits("mnist5k").subsample_per_class(50, 125)
    if split == "out_test":
        # Exactly the 50 upright 3s, each once.
        assert len(rows) == 50 and {r["label"] for r in rows} == {"3"} and {r["pose"] for r in rows} == {"0"}
        assert sorted(int(r["image_index"]) for r in rows) == torch.nonzero(digits.labels == 3).squeeze(1).tolist()
    else:
        assert len(rows) == round(0.1 * (500 * 4 - 50))
    for row in rows:
        assert int(row["label"]) == int(digits.labels[int(row["image_index"])])
        # The margin is positive exactly when the prediction is right.
        assert (float(row["margin"]) > 0) == (row["predicted"] == row["label"])
    assert (folder / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Out-test accuracy from the rows equals the fit's own out-test accuracy.
    if split == "out_test":
        accuracy = sum(r["predicted"] == r["label"] for r in rows) / len(rows)
        assert accuracy == pytest.approx(scalars(run)["val/out_test_acc"], abs=1e-6)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--data.num_workers", "-1"], "num_workers=-1"),
        (["--model.optimizer.lr", "-1"], "--model.optimizer: Invalid learning rate"),
    ],
)
def test_bad_values_fail_in_one_line_and_leave_no_run(tmp_path, capsys, flags, fragment) -> None:
    status, _ = cli("fit", *TINY, "--trainer.logger.init_args.save_dir", str(tmp_path / "r"), *flags)
    assert status == 2
    assert fragment in error_line(capsys)
    assert not list((tmp_path / "r").rglob("*")) if (tmp_path / "r").exists() else True


@pytest.mark.parametrize(("count", "fragment"), [(0, "0 images"), (12, "none of the leave-out class 3")])
def test_data_without_out_test_digits_is_refused_at_setup(tmp_path, capsys, count, fragment) -> None:
    digits = load_digits("mnist5k")
    keep = torch.nonzero(digits.labels != 3).squeeze(1)[:count]
    write_idx(tmp_path / "train-images-idx3-ubyte", digits.images[keep].numpy().reshape(count, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte", digits.labels[keep].numpy())
    status, _ = cli("fit", "--data.source", str(tmp_path / "train-images-idx3-ubyte"), "--data.leave_out_class", "3",
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))  # fmt: skip
    assert status == 2
    assert fragment in error_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("backbone", ["tiny_orbit_mlp", "orbitbench_plugin_example.nets:tiny_orbit_mlp"])
def test_models_from_an_installed_package(tmp_path, backbone) -> None:
    status, stdout = cli("fit", *TINY, "--trainer.max_epochs", "1", "--model.backbone", backbone,
                         "--trainer.logger.init_args.save_dir", str(tmp_path))  # fmt: skip
    assert status == 0
    assert "50,890 parameters" in stdout  # 784*64 + 64 + 64*10 + 10


def test_unknown_model_says_where_it_looked(capsys) -> None:
    status, _ = cli("fit", "--model.backbone", "no_such_net")
    assert status == 2
    line = error_line(capsys)
    assert "orbitbench.models' entry points" in line and "orbitbench-plugin-example" in line and "package.module:builder" in line


def test_csv_logger_summary_names_its_own_files(tmp_path) -> None:
    status, stdout = cli("fit", *TINY, "--trainer.max_epochs", "1",
                         "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                         "--trainer.logger.save_dir", str(tmp_path))  # fmt: skip
    assert status == 0
    assert "metrics.csv" in stdout and "TensorBoard" not in stdout and "tensorboard --logdir" not in stdout
