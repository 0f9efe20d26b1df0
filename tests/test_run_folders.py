"""Run folders are claimed (`orbitbench.run.folders`): runs started together never share one, a
run being resumed is held, a signalled or failed run touches only the folder it created.

Real `orbitbench fit` subprocesses on the embedded digits (what users and the sweep meet).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitbench.io import try_claim
from orbitbench.run.folders import LOCK

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--config", str(REPO / "configs" / "smoke.yaml"), "--data.source", "mnist5k",
         "--trainer.max_epochs", "2", "--data.images_per_class", "20"]


def start(save_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "orbitbench", "fit", *SMOKE, "--trainer.logger.init_args.save_dir", str(save_dir), *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def orbitbench_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("orbitbench: ") and "data source" not in line]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_fits_started_together_get_two_folders_and_a_sigterm_touches_only_its_own(tmp_path) -> None:
    first, second = start(tmp_path), start(tmp_path)
    outputs = [process.communicate(timeout=240) for process in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outputs
    runs = sorted(tmp_path.glob("*/version_*"))
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:  # one record, one event file, one last.ckpt each
        assert (run / "record.json").is_file() and len(list(run.glob("events.out.tfevents.*"))) == 1
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=1-step=6.ckpt", "last.ckpt"]
    before = {run: sorted((p.relative_to(run), p.read_bytes()) for p in run.rglob("*") if p.is_file()) for run in runs}

    # A long third run, SIGTERMed once it has a checkpoint: exit 143, one line, the others untouched.
    third = start(tmp_path, "--trainer.max_epochs", "10000")
    folder = runs[0].parent / "version_2"
    deadline = time.monotonic() + 120
    while not list(folder.glob("checkpoints/*.ckpt")) and time.monotonic() < deadline and third.poll() is None:
        time.sleep(0.2)
    third.send_signal(signal.SIGTERM)
    _, stderr = third.communicate(timeout=60)
    assert third.returncode == 143, stderr
    (line,) = orbitbench_lines(stderr)
    assert line == f"orbitbench: fit stopped by SIGTERM; run folder {folder} kept for --ckpt_path last and marked FAILED"
    assert "Traceback" not in stderr and (folder / "FAILED").is_file()
    assert not list(folder.rglob("*.tmp"))  # no partly written checkpoint
    after = {run: sorted((p.relative_to(run), p.read_bytes()) for p in run.rglob("*") if p.is_file()) for run in runs}
    assert after == before


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_being_resumed_is_held_and_a_second_resume_is_one_line(tmp_path) -> None:
    done = start(tmp_path, "--trainer.max_epochs", "1")
    assert done.wait(timeout=240) == 0
    (run,) = tmp_path.glob("*/version_0")
    with try_claim(run / LOCK) as held:  # as a running resume of this run holds it
        assert held is not None
        refused = start(tmp_path, "--ckpt_path", "last")
        _, stderr = refused.communicate(timeout=240)
    assert refused.returncode == 2
    assert orbitbench_lines(stderr) == [f"orbitbench: run folder {run} is in use by another orbitbench process; wait "
                                        "for it to finish, or start a new run (without --ckpt_path last or a fixed "
                                        "logger version)"]
    assert not (run / "FAILED").exists() and sorted(p.name for p in tmp_path.glob("*/*")) == ["version_0"]
    # Free again: the resume runs on in the same folder (and a finished resume is not FAILED).
    resumed = start(tmp_path, "--ckpt_path", "last")
    assert resumed.wait(timeout=240) == 0
    assert sorted(p.name for p in tmp_path.glob("*/*")) == ["version_0"] and not (run / "FAILED").exists()


def test_refused_settings_leave_no_claimed_folder_behind(tmp_path, capsys) -> None:
    from orbitbench.run.cli import run_lightning_cli

    status = run_lightning_cli(["fit", *SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path),
                                "--model.backbone_kwargs", "{num_classes: 3}"])
    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("orbitbench: ") and "num_classes" in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 14 MiB tmpfs (two checkpoints of the paper MLP fit, the third does not); skips where it
    cannot be mounted (not root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=14m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_full_disk_is_one_line_and_leaves_only_whole_checkpoints(small_disk) -> None:
    process = start(small_disk, "--trainer.max_epochs", "4", "--data.images_per_class", "50")
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 2 and "Traceback" not in stderr, stderr
    (line,) = orbitbench_lines(stderr)
    assert "No space left on device" in line
    (run,) = small_disk.glob("*/version_0")
    assert (run / "FAILED").is_file() and not list(run.rglob("*.tmp"))
    import torch

    for checkpoint in run.glob("checkpoints/*.ckpt"):  # every file there loads: none was cut short
        assert torch.load(checkpoint, weights_only=True)["epoch"] == 0
