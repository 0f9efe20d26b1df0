"""`orbitbench sweep`: a real tiny sweep end to end (resume, partial re-run, CSV) and bad sweep files.

The end-to-end test runs three real `orbitbench fit` subprocesses on the embedded MNIST subset
(1 epoch, 5 images per class), about a minute on a busy 2-core machine.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import pytest

from orbitbench import sweep
from orbitbench.errors import OrbitbenchError

TINY = """\
name: tiny
track: test-tiny
datamodule: RotatedMNIST
grid:
  model: [paper_mlp]
  n_angles: [2, 4]
  leave_out_class: [3]
  seed: [0]
fit:
  trainer.max_epochs: 1
  data.source: mnist5k
  data.seeds_per_class: 5
  data.batch_size: 64
"""
# paper MLP 784-512-128-10, last layer without bias: (784*512 + 512) + (512*128 + 128) + 128*10
PAPER_MLP_PARAMS = 784 * 512 + 512 + 512 * 128 + 128 + 128 * 10
CELLS = ("paper_mlp-n2-c3-s0", "paper_mlp-n4-c3-s0")


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _signature(cell: Path) -> tuple[int, str]:
    """What changes when a cell is re-run: result.json's mtime and the fit log's content."""
    return (cell / "result.json").stat().st_mtime_ns, (cell / "fit.log").read_text()


def test_tiny_sweep_runs_resumes_and_reruns_only_a_deleted_cell(tmp_path, capsys):
    spec_file, out = _write(tmp_path, TINY), tmp_path / "out"
    assert sweep.main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    cells = [out / "cells" / cell_id for cell_id in CELLS]
    for cell in cells:
        assert (cell / "result.json").is_file()
        assert list(cell.glob("events.out.tfevents.*")), "each cell has its own TensorBoard log"

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["cell"] for row in rows] == list(CELLS)
    assert [int(row["n_poses"]) for row in rows] == [2, 4]
    for row in rows:
        assert row["model"] == "paper_mlp" and row["leave_out_class"] == "3" and row["track"] == "test-tiny"
        assert int(row["param_count"]) == PAPER_MLP_PARAMS
        for key in ("train_acc", "in_test_acc", "out_test_acc"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["wall_time_s"]) > 0
        poses = row["in_test_acc_per_pose"].split(";")
        assert len(poses) == int(row["n_poses"])
        assert row["spectral_pred_acc"] == ""  # no NTK callback in this sweep
    # The CSV carries what the fit itself measured (metrics.json written by the module).
    metrics = json.loads((cells[1] / "metrics.json").read_text())
    assert math.isclose(float(rows[1]["out_test_acc"]), metrics["out_test_acc"])
    assert math.isclose(float(rows[1]["in_test_acc"]), metrics["in_test_acc"])

    # A second invocation finds both cells finished and runs nothing.
    before = [_signature(cell) for cell in cells]
    assert sweep.main(["run", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    assert [_signature(cell) for cell in cells] == before

    # Deleting one cell's result re-runs that cell only; in-process it gives the subprocess's numbers.
    first = json.loads((cells[0] / "result.json").read_text())
    (cells[0] / "result.json").unlink()
    assert sweep.main([str(spec_file), "--out", str(out), "--no-progress", "--in-process"]) == 0  # `sweep FILE` == `sweep run FILE`
    assert (cells[0] / "result.json").is_file()
    assert _signature(cells[0]) != before[0]
    assert _signature(cells[1]) == before[1]
    again = json.loads((cells[0] / "result.json").read_text())
    for key in ("train_acc", "in_test_acc", "out_test_acc", "in_test_acc_per_pose", "param_count"):
        assert again[key] == first[key], key
    assert len(list(cells[0].glob("events.out.tfevents.*"))) == 1  # the old attempt's logs were cleared
    with open(out / "results.csv", newline="") as handle:
        assert [row["cell"] for row in csv.DictReader(handle)] == list(CELLS)

    # Fig. 1C from the finished cells.
    assert sweep.main(["plot", str(out), "-o", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


BAD_SWEEPS = {
    "unknown model": (TINY.replace("[paper_mlp]", "[paper_mpl]"), "unknown model 'paper_mpl'"),
    "empty grid": (TINY.replace("n_angles: [2, 4]", "n_angles: []"), "grid.n_angles"),
    "empty models": (TINY.replace("model: [paper_mlp]", "model: []"), "grid.model"),
    "malformed yaml": (TINY.replace("grid:", "grid: [\n"), "not valid YAML"),
    "not a mapping": ("- just\n- a list\n", "must be a YAML mapping"),
    "missing track": (TINY.replace("track: test-tiny\n", ""), "track: Field required"),
    "unknown key": (TINY + "epochs: 3\n", "epochs: Extra inputs are not permitted"),
    "wrong type": (TINY.replace("n_angles: [2, 4]", "n_angles: [2, four]"), "grid.n_angles.1"),
    "bool as int": (TINY.replace("seed: [0]", "seed: [true]"), "grid.seed.0"),
    "class out of range": (TINY.replace("leave_out_class: [3]", "leave_out_class: [10]"), "digits 0-9"),
    "duplicate values": (TINY.replace("n_angles: [2, 4]", "n_angles: [4, 4]"), "unique"),
    "wrong pose axis": (TINY.replace("n_angles", "n_shifts"), "needs grid.n_angles"),
    "grid value in fit": (TINY + "  data.n_angles: 8\n", "set by the grid"),
    "data in model_fit": (TINY + "model_fit:\n  paper_mlp:\n    data.seeds_per_class: 9\n", "track's protocol"),
    "model_fit for a model not in grid": (TINY + "model_fit:\n  paper_vit:\n    trainer.max_epochs: 1\n", "not in grid.model"),
    "config_files for a model not in grid": (TINY + "config_files:\n  paper_vit: models/paper_vit.yaml\n", "not in grid.model"),
    "missing config file": (TINY + "config_files:\n  paper_mlp: nowhere/paper_mlp.yaml\n", "'nowhere/paper_mlp.yaml' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_files_fail_with_one_line_and_write_nothing(tmp_path, capsys, case):
    text, expected = BAD_SWEEPS[case]
    out = tmp_path / "out"
    assert sweep.main(["run", str(_write(tmp_path, text)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and err.count("\n") == 1, err
    assert expected in err
    assert not out.exists()


def test_missing_sweep_file_and_bad_shard(tmp_path, capsys):
    assert sweep.main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec_file = _write(tmp_path, TINY)
    assert sweep.main(["run", str(spec_file), "--out", str(tmp_path / "o"), "--shard", "2/2"]) == 2
    assert "--shard '2/2' is invalid" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_sweep_dir_refuses_a_different_grid_but_accepts_more_models(tmp_path):
    root = tmp_path / "out"
    spec = sweep.parse_sweep_text(TINY, "tiny")
    assert sweep._prepare_root(spec, root) == spec
    changed = sweep.parse_sweep_text(TINY.replace("[2, 4]", "[2, 8]"), "changed")
    with pytest.raises(OrbitbenchError, match="holds a different sweep"):
        sweep._prepare_root(changed, root)
    more = sweep.parse_sweep_text(TINY.replace("[paper_mlp]", "[paper_convnet]"), "more")
    merged = sweep._prepare_root(more, root)
    assert merged.grid.model == ["paper_mlp", "paper_convnet"]
    assert sweep.read_sweep_dir(root).spec.grid.model == ["paper_mlp", "paper_convnet"]


def test_cells_and_fit_command_line():
    spec = sweep.parse_sweep_text(
        TINY.replace("[paper_mlp]", "[paper_mlp, 'c4_pooled(timm:resnet18)']")
        + "model_fit:\n  paper_mlp:\n    trainer.max_epochs: 7\n",
        "tiny",
    )
    cells = spec.cells()
    assert [c.cell_id for c in cells] == [
        "paper_mlp-n2-c3-s0", "paper_mlp-n4-c3-s0",
        "c4_pooled_timm_resnet18-n2-c3-s0", "c4_pooled_timm_resnet18-n4-c3-s0",
    ]
    argv = sweep.fit_argv(spec, cells[1], Path("/x/cell"))
    assert argv[0] == "fit"
    for flag in ("--model.backbone=paper_mlp", "--data=RotatedMNIST", "--data.n_angles=4",
                 "--data.leave_out_class=3", "--seed_everything=0", "--data.seeds_per_class=5",
                 "--trainer.logger.init_args.save_dir=/x/cell"):
        assert flag in argv
    # model_fit overrides fit for its model only.
    assert "--trainer.max_epochs=7" in argv and "--trainer.max_epochs=1" not in argv
    assert "--trainer.max_epochs=1" in sweep.fit_argv(spec, cells[2], Path("/x"))
    assert spec.protocol_data() == {"seeds_per_class": 5, "source": "mnist5k"}
    assert spec.training_config("paper_mlp") == {"data.batch_size": 64, "trainer.max_epochs": 7}


def test_a_model_config_file_comes_first_and_is_recorded(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("model:\n  init_args:\n    backbone_kwargs: {dropout: 0.25}\n")
    spec = sweep.parse_sweep_text(TINY + f"config_files:\n  paper_mlp: {config}\n", "tiny")
    argv = sweep.fit_argv(spec, spec.cells()[0], tmp_path)
    assert argv[:2] == ["fit", f"--config={config}"]  # the grid's flags after it win
    recorded = spec.training_config("paper_mlp")
    assert recorded["config_file"] == str(config)
    assert recorded["config_file_content"] == {"model": {"init_args": {"backbone_kwargs": {"dropout": 0.25}}}}



def test_sigterm_stops_the_whole_sweep_and_keeps_nothing_half_done(tmp_path):
    """`kill <pid>` ends the sweep (Lightning alone would only flag it and go on with the next
    cell); the interrupted cell has no result, so a re-run redoes exactly that cell."""
    import signal
    import subprocess
    import sys
    import time

    long_fit = TINY.replace("trainer.max_epochs: 1", "trainer.max_epochs: 500")  # killed long before the end
    spec_file, out = _write(tmp_path, long_fit), tmp_path / "out"
    command = [sys.executable, "-m", "orbitbench", "sweep", "run", str(spec_file), "--out", str(out),
               "--no-progress", "--in-process"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "cells" / CELLS[0]
    deadline = time.monotonic() + 120
    # The model summary is printed when training starts, after Lightning installed its SIGTERM handler.
    log = first / "fit.log"
    while process.poll() is None and time.monotonic() < deadline and not (
        log.is_file() and "Total params" in log.read_text()
    ):
        time.sleep(0.2)
    time.sleep(1.0)
    assert process.poll() is None, "the sweep ended before it could be killed"
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a 500-epoch sweep behind when the test fails
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("orbitbench: sweep stopped by SIGTERM")
    assert not (first / "result.json").exists()
    assert not (out / "cells" / CELLS[1]).exists()  # the sweep did not go on to the next cell
    assert sweep.read_sweep_dir(out).missing == sweep.read_sweep_dir(out).spec.cells()


def test_spectral_accuracy_comes_from_the_ntk_callbacks_last_logged_value(tmp_path):
    """EmpiricalNTKCallback logs `ntk/spectral_accuracy` through the loggers, not metrics.json."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, value in enumerate((0.25, 0.5, 0.75)):
        writer.add_scalar("ntk/spectral_accuracy", value, step)
    writer.close()
    with_callback = ["fit", "--trainer.callbacks+={\"class_path\": \"orbitbench.callbacks.EmpiricalNTKCallback\"}"]
    assert sweep._spectral_accuracy({}, with_callback, tmp_path) == 0.75
    assert sweep._spectral_accuracy({}, ["fit"], tmp_path) is None  # no callback: events not read
    assert sweep._spectral_accuracy({"spectral_pred_acc": 0.4}, with_callback, tmp_path) == 0.4


def test_settings_that_fit_rejects_stop_the_sweep_at_the_first_cell(tmp_path, capsys):
    bad = TINY.replace("trainer.max_epochs: 1", "trainer.max_epochs: many")
    out = tmp_path / "out"
    assert sweep.main(["run", str(_write(tmp_path, bad)), "--out", str(out), "--no-progress", "--in-process"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orbitbench: cell {CELLS[0]} failed (exit 2)") and "max_epochs" in err
    assert err.count("\n") == 1
    assert not (out / "cells" / CELLS[1]).exists()  # not repeated for every cell
