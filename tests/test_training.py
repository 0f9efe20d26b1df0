"""`orbitbench fit|validate|test` end to end on the embedded MNIST digits (tiny runs).

One reference fit (module fixture) is checked for logs, checkpoints, accuracy and its run record;
a second fit with the same seed must match it exactly, and so must a run that is SIGKILLed
mid-epoch and resumed with `--ckpt_path last`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from orbitbench.errors import OrbitbenchError, condense_parser_error
from orbitbench.run.record import load_record
from orbitbench.run.cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
KILL_EPOCH = 2  # the killed run dies in the middle of this epoch (0-based)
# 50 digits per class x 4 rotations = 2,000 samples; batch 64 -> 28 steps per epoch.
TINY = [
    "--data.n_angles", "4", "--data.images_per_class", "50", "--data.batch_size", "64",
    "--data.leave_out_class", "3", "--trainer.max_epochs", str(EPOCHS),
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]
pytestmark = pytest.mark.usefixtures("one_thread")


class Summarised(L.Callback):
    """A callback with a record summary: the run record keeps it under the class name."""

    def record_summary(self) -> dict:
        return {"answer": torch.tensor(42.0), "label": "x"}


class KillDuringEpoch(L.Callback):
    """SIGKILL the process at the second batch of epoch KILL_EPOCH: no clean shutdown, no final save."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == KILL_EPOCH and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def fit(save_dir: Path, *extra: str, command: str = "fit") -> tuple[int, str]:
    """Run the CLI in-process; return (exit status, captured stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lightning_cli([command, *TINY, "--trainer.logger.init_args.save_dir", str(save_dir), *extra])
    return status, out.getvalue()


def run_dir(save_dir: Path) -> Path:
    (found,) = save_dir.glob("*/version_*")
    return found


def results(save_dir: Path) -> dict:
    """What a run measured (its record's metrics), read as plain JSON."""
    return json.loads((run_dir(save_dir) / "record.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
    save_dir = tmp_path_factory.mktemp("reference")
    status, stdout = fit(save_dir, "--checkpoint.save_top_k", "-1", "--trainer.callbacks+=test_training.Summarised")
    assert status == 0
    return save_dir, stdout


def test_tiny_fit_logs_in_and_out_test_accuracy(reference) -> None:
    save_dir, stdout = reference
    log_dir = run_dir(save_dir)
    assert log_dir.parent.name == "paper_mlp-RotatedMNIST-n4-c3"
    record = json.loads((log_dir / "record.json").read_text())
    metrics = record["metrics"]
    assert record["stage"] == "fit" and record["model"]["backbone"] == "paper_mlp" and record["model"]["n_params"] == 468_864
    assert record["data"]["n_poses"] == 4 and record["data"]["hparams"]["leave_out_class"] == 3
    assert record["data"]["order_argument"] == "n_angles" and record["data"]["group"] == "rotation"
    # what `auto` resolved to is recorded (the suite hides the user's full MNIST: the subset, 50 per class)
    assert record["data"]["hparams"]["source"] == "auto" and (record["data"]["digits"], record["data"]["n_images"]) == ("mnist5k", 500)
    assert record["seeds"] == {"seed_everything": 125, "data_split_seed": 125}
    assert record["callbacks"] == {"Summarised": {"answer": 42.0, "label": "x"}}
    assert set(record["versions"]) == {"python", "orbitbench", "torch", "lightning", "timm", "numpy", "torch_threads"}
    assert record["versions"]["torch_threads"] == "1"  # the one_thread fixture: bit-identical re-runs need it
    assert record["git_commit"] is None or len(record["git_commit"].removesuffix("+dirty")) == 40
    assert record["epochs"] == EPOCHS and record["wall_time_s"] > 0
    # Ten classes: chance is 0.1. After 4 short epochs in-test is far above it.
    assert metrics["in_test_acc"] > 0.35
    assert 0.0 <= metrics["out_test_acc"] <= 1.0 and 0.0 <= metrics["train_acc"] <= 1.0
    # Out-test holds only the upright pose; in-test has every pose.
    assert metrics["out_test_acc_per_pose"][1:] == [None, None, None]
    assert len(metrics["in_test_acc_per_pose"]) == 4 and None not in metrics["in_test_acc_per_pose"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/in_test_acc", "val/out_test_acc", "train/acc", "train/loss", "model/n_params"} <= scalars
    assert len(events.Scalars("val/in_test_acc")) == EPOCHS
    assert events.Scalars("val/in_test_acc")[-1].value == pytest.approx(metrics["in_test_acc"])
    assert {"data/train_orbits", "val/in_test_acc_by_pose"} <= set(events.Tags()["images"])

    assert "in-test" in stdout and "out-test" in stdout
    assert f"in-test {metrics['in_test_acc']:.3f}" in stdout and f"train {metrics['train_acc']:.3f}" in stdout
    assert f"tensorboard --logdir {save_dir}" in stdout and "last.ckpt" in stdout


def test_train_accuracy_is_measured_in_eval_mode_on_the_whole_training_split(reference) -> None:
    """Recomputed here from the last checkpoint and the DataModule's own split, dropout off."""
    from orbitbench.datamodules import RotatedMNIST
    from orbitbench.run.module import OrbitClassifier

    log_dir = run_dir(reference[0])
    record = json.loads((log_dir / "record.json").read_text())
    model = OrbitClassifier.load_from_checkpoint(log_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    dm = RotatedMNIST(**{k: v for k, v in record["data"]["hparams"].items()})
    dm.setup("fit")
    train = dm.splits["train"]  # [M, 2] (image, pose)
    images = dm.materialize(train[:, 0], train[:, 1])
    with torch.no_grad():
        predicted = model.net(images).argmax(dim=1)
    expected = (predicted == dm.digits.labels[train[:, 0]]).double().mean().item()
    assert record["metrics"]["train_acc"] == pytest.approx(expected, abs=1e-12)


def test_checkpoint_every_epoch(reference) -> None:
    # 500 digits x 4 poses, minus 50 upright 3s (out-test), minus 10% in-test, in batches of 64.
    steps = math.ceil((2000 - 50 - round(0.1 * 1950)) / 64)
    checkpoints = sorted(p.name for p in (run_dir(reference[0]) / "checkpoints").glob("*.ckpt"))
    assert checkpoints == [f"epoch={e}-step={steps * (e + 1)}.ckpt" for e in range(EPOCHS)] + ["last.ckpt"]


def test_same_seed_gives_identical_metrics(reference, tmp_path) -> None:
    assert fit(tmp_path)[0] == 0
    assert results(tmp_path) == results(reference[0])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_and_resume_from_last_matches_an_unbroken_run(reference, tmp_path) -> None:
    argv = [sys.executable, "-m", "orbitbench", "fit", *TINY, "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.callbacks+=test_training.KillDuringEpoch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    log_dir = run_dir(tmp_path)
    assert not (log_dir / "record.json").exists()
    last = torch.load(log_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == KILL_EPOCH - 1  # the end of the last finished epoch

    status, stdout = fit(tmp_path, "--ckpt_path", "last")
    assert status == 0
    assert run_dir(tmp_path) == log_dir  # continued in the interrupted run's directory
    assert results(tmp_path) == results(reference[0])


def test_test_subcommand_reevaluates_a_checkpoint(reference, tmp_path) -> None:
    reference_record = load_record(run_dir(reference[0]))
    status, _ = fit(tmp_path, "--ckpt_path", reference_record.last_checkpoint, command="test")
    assert status == 0
    (evaluation,) = (run_dir(reference[0]) / "eval").glob("test-*")  # logged inside the run it evaluates
    tested = load_record(evaluation)
    assert tested.stage == "test" and tested.metrics.train_acc is None
    # val and test loops read the same in-test/out-test splits: same weights, same accuracies.
    assert tested.metrics.in_test_acc == pytest.approx(reference_record.metrics.in_test_acc, abs=1e-6)
    assert tested.metrics.out_test_acc == pytest.approx(reference_record.metrics.out_test_acc, abs=1e-6)
    assert tested.metrics.in_test_acc_per_pose == pytest.approx(reference_record.metrics.in_test_acc_per_pose, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data.n_angles", "abc"], "--data.n_angles: expected int, got 'abc'"),
        (["--data.n_angles", "0"], "n_angles=0 is invalid: expected an integer in 1..360"),
        (["--model.backbone", "paper_mpl"], "did you mean 'paper_mlp'"),
        (["--data.leave_out_class", "12"], "leave_out_class=12"),
        (["--config", "no/such.yaml"], "no/such.yaml"),
        (["--trainer.max_epochs", "x"], "--trainer.max_epochs: expected int"),
        (["--no_such_option", "1"], "no_such_option"),
        (["--data.source", "nowhere"], "nowhere"),
        (["--ckpt_path", "last"], "no last.ckpt"),
        (["--trainer.accelerator", "tpu"], "trainer:"),
        (["--model.backbone_kwargs", "{num_classes: 3}"], "num_classes=3 is set by --model.num_classes"),
        (["--model.method", "pose_consistency", "--model.method_kwargs", "{weight: .nan}"], "pose_consistency weight=nan; expected a finite number >= 0"),
        (["--model.method", "latent_operator", "--model.method_kwargs", "{weight: .inf}"], "latent_operator weight=inf; expected a finite"),
        (["--model.method", "latent_operator", "--model.method_kwargs", "{weight: -1}"], "latent_operator weight=-1; expected a finite"),
        (["--data.held_out_poses", "[0,1,2,3]"], "holds out every pose of leave_out_class 3"),
        (["--model.num_classes", "3"], "--model.num_classes 3: the data has 10 classes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path, capsys) -> None:
    save_dir = tmp_path / "runs"
    status, _ = fit(save_dir, *args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("orbitbench: ")]
    assert status == 2
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    assert not save_dir.exists()  # nothing written half-way


def test_condense_parser_error_names_the_full_key() -> None:
    message = (
        'Parser key "data":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Problem with given class_path 'x.RotatedMNIST':\n        Parser key \"n_angles\":\n"
        "          Expected a <class 'int'>. Got value: abc\n    - Expected a <class 'NoneType'>"
    )
    assert condense_parser_error(message) == "--data.n_angles: expected int, got 'abc'"


CONFIGS = sorted(p.relative_to(REPO) for d in ("models", "datamodules", "configs") for p in (REPO / d).glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_every_shipped_config_parses_on_top_of_the_paper_preset(config: Path, capsys) -> None:
    argv = ["fit", "--config", str(REPO / "configs/paper_fig1.yaml"), "--config", str(REPO / config), "--print_config"]
    assert run_lightning_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "max_epochs: 22" in printed or config.name in ("smoke.yaml", "make_run.yaml")  # presets with their own budget


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_process_ddp_fit_on_cpu_ends_with_one_record(strategy, tmp_path) -> None:
    """Two gloo processes on the CPU, as docs/SWEEPS.md suggests for a cell: exit 0, one summary,
    one record, written by rank 0 (under ddp_spawn by the workers, read back for the summary)."""
    command = [sys.executable, "-m", "orbitbench", "fit", "--config", str(REPO / "configs/smoke.yaml"),
               "--trainer.devices", "2", "--trainer.strategy", strategy, "--trainer.accelerator", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=360, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stdout.count("orbitbench fit:") == 1, done.stdout
    (record_file,) = tmp_path.glob("runs/*/version_*/record.json")
    record = load_record(record_file)
    assert record.epochs == 3 and record.stage == "fit"
    assert record.log_dir is not None and Path(tmp_path, record.log_dir).resolve() == record_file.parent.resolve()
    assert f"logs         {record.log_dir}" in done.stdout
    # The summary prints the record's numbers (not a worker-less Trainer's empty state).
    assert f"in-test {record.metrics.in_test_acc:.3f}" in done.stdout
    assert sorted(p.name for p in record_file.parent.glob("checkpoints/*.ckpt"))[-1] == "last.ckpt"


def test_a_list_setting_of_the_datamodule_takes_one_value(capsys) -> None:
    """`--data.held_out_poses 1` (and `=1`) is `[1]`, as for the function commands' list flags."""
    import yaml

    for words in (["--data.held_out_poses", "1"], ["--data.held_out_poses=1"], ["--data.held_out_poses", "[1, 2]"]):
        assert run_lightning_cli(["fit", *words, "--print_config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["data"]["init_args"]["held_out_poses"] == ([1, 2] if "[1, 2]" in words else [1]), words


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_output_to_a_file_is_one_plain_line_per_epoch(tmp_path) -> None:
    """`orbitbench fit ... > log`: no progress-bar redraws, a line per epoch with the epoch's numbers."""
    log = tmp_path / "log"
    command = [sys.executable, "-m", "orbitbench", "fit", *TINY, "--trainer.enable_progress_bar", "true",
               "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=240, cwd=tmp_path)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s" not in text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    record = load_record(next((tmp_path / "runs").glob("*/version_*")))
    assert f"val/in_test_acc {record.metrics.in_test_acc:.3f}" in epochs[-1]
    assert f"val/out_test_acc {record.metrics.out_test_acc:.3f}" in epochs[-1]
    assert len(text) < 5000


def test_without_a_logger_nothing_lands_in_the_working_folder(tmp_path, monkeypatch, capsys) -> None:
    """`--trainer.logger false`: record, config and checkpoints go to runs/<run name>/version_N, and the summary says so."""
    monkeypatch.chdir(tmp_path)
    assert run_lightning_cli(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.logger", "false"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    (run,) = tmp_path.glob("runs/*/version_0")
    assert run.parent.name == "paper_mlp-RotatedMNIST-n4-c3"
    assert {"record.json", "config.yaml", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert load_record(run).last_checkpoint == str(Path("runs", run.parent.name, "version_0", "checkpoints", "last.ckpt"))
    assert f"logs         runs/{run.parent.name}/version_0 (record.json)" in capsys.readouterr().out


def test_ckpt_path_last_resumes_only_the_run_of_the_same_order_and_leave_out_class(tmp_path, capsys) -> None:
    """Run names carry the group order and leave-out class (`...-n4-c3`): `--ckpt_path last` finds
    that run, and a fit of another leave-out class does not pick it up."""
    assert fit(tmp_path, "--trainer.max_epochs", "1")[0] == 0
    (first,) = tmp_path.glob("*/version_*")
    assert first.parent.name == "paper_mlp-RotatedMNIST-n4-c3"
    capsys.readouterr()
    assert fit(tmp_path, "--data.leave_out_class", "7", "--ckpt_path", "last")[0] == 2
    assert "paper_mlp-RotatedMNIST-n4-c7" in capsys.readouterr().err
    status, _ = fit(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert status == 0 and [p for p in tmp_path.glob("*/version_*")] == [first]
    assert load_record(first).epochs == 2


def test_csv_logs_land_in_a_run_named_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_lightning_cli(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.logger", "CSVLogger"]) == 0
    (run,) = tmp_path.glob("runs/*/version_0")
    assert run.parent.name == "paper_mlp-RotatedMNIST-n4-c3"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/out_test_acc" in header and (run / "record.json").is_file()


@pytest.mark.parametrize("flag", ["--trainer.logger=WandbLogger", "--trainer.callbacks+=RichProgressBar"])
def test_a_missing_optional_package_is_one_line(flag, tmp_path, monkeypatch, capsys) -> None:
    import importlib.util

    package = "wandb" if "Wandb" in flag else "rich"
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    monkeypatch.chdir(tmp_path)
    assert run_lightning_cli(["fit", *TINY, flag]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("orbitbench: ")]
    assert len(lines) == 1 and package in lines[0] and "not installed" in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_the_summary_states_the_finding_in_words(reference) -> None:
    """The tiny fit (50 digits per class) has not learnt the task: the summary says so, with the
    numbers it rests on, and how far the held-out pose falls below."""
    save_dir, stdout = reference
    record = load_record(run_dir(save_dir))
    in_test, out_test = record.metrics.in_test_acc, record.metrics.out_test_acc
    assert in_test < 0.95
    assert f"  finding      has NOT learnt the task in distribution: in-test {in_test:.3f} < 0.95" in stdout
    assert f"Held-out pose (the upright 3s, trained on only in their other poses): out-test {out_test:.3f}" in stdout
    assert "Trained on the embedded 5,000-digit subset (toy regime)" in stdout


def test_plain_progress_prints_lines_within_an_epoch(tmp_path, capsys) -> None:
    """A log file hears from a long epoch every `interval_s` seconds (0 here: after every batch)."""
    status, stdout = fit(tmp_path, "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "true",
                         "--trainer.callbacks+=orbitbench.run.callbacks.PlainProgress",
                         "--trainer.callbacks.interval_s=0")
    assert status == 0
    within = [line for line in stdout.splitlines() if line.startswith("  epoch 1/1  batch ")]
    batches = [int(line.split()[3].split("/")[0]) for line in within]
    total = int(within[0].split()[3].split("/")[1])
    assert batches == list(range(1, total + 1)) and all("train/loss" in line and "s left in the epoch" in line for line in within[1:])
    assert [line for line in stdout.splitlines() if line.startswith("epoch 1/1  step ")]


@pytest.mark.timeout(300)
def test_true_precision_fits_pose_the_images_in_the_networks_dtype(tmp_path) -> None:
    """`64-true` / `bf16-true` convert the weights; images posed after the batch transfer, the
    record's split accuracies and the kernel probe follow the weights' dtype (was a traceback)."""
    for precision in ("64-true", "bf16-true"):
        status, _ = fit(tmp_path / precision, "--trainer.max_epochs", "1", "--trainer.precision", precision,
                        "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback",
                        "--trainer.callbacks.n_seeds=4", "--trainer.callbacks.probe_digits_per_class=2",
                        "--trainer.callbacks.figures=false")  # fmt: skip
        assert status == 0
        metrics = results(tmp_path / precision)
        assert metrics["train_acc"] is not None and metrics["in_test_acc"] is not None
        weights = torch.load(next(run_dir(tmp_path / precision).glob("checkpoints/last.ckpt")), weights_only=True)["state_dict"]
        expected = torch.float64 if precision == "64-true" else torch.bfloat16
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {expected}
