"""`orbitbench sweep`: real tiny sweeps end to end (resume, re-run, CSV from the run records),
bad sweep files, and the reliability cases: SIGTERM / SIGKILL of a running sweep, two runners on
one directory, a cell folder a live process writes to.

Cells are real `orbitbench fit` runs on the embedded MNIST subset (1 epoch, 5 images per class).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orbitbench.cli import main as cli_main
from orbitbench import sweep
from orbitbench.errors import OrbitbenchError
from orbitbench.io import try_claim
from orbitbench.sweep.results import claim_path, prepare_root, result_from_record
from sweep_helpers import TINY


@pytest.fixture(autouse=True)
def trust_sweep_helpers(monkeypatch):
    """Sweep files here name the test helpers' classes (PauseWhile, FlippedMNIST): the user's own
    package, trusted the documented way (orbitbench.trust); their subprocess fits inherit it."""
    monkeypatch.setenv("ORBITBENCH_TRUSTED_PACKAGES", "sweep_helpers")

TESTS = Path(__file__).resolve().parent
# paper MLP 784-512-128-10, last layer without bias: (784*512 + 512) + (512*128 + 128) + 128*10
PAPER_MLP_PARAMS = 784 * 512 + 512 + 512 * 128 + 128 + 128 * 10
CELLS = ("paper_mlp-n2-c3-s0", "paper_mlp-n4-c3-s0")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "ORBITBENCH_TRUSTED_PACKAGES": "sweep_helpers"}  # the helpers' classes in sweep files (trust_sweep_helpers)


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _paused(flag: Path) -> str:
    """TINY whose fits wait at the start of training while `flag` exists (see PauseWhile)."""
    return TINY + f'  trainer.callbacks+: {{"class_path": "sweep_helpers.PauseWhile", "init_args": {{"flag": "{flag}"}}}}\n'


def _sweep_process(spec_file: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "orbitbench", "sweep", "run", str(spec_file), "--out", str(out), "--progress", "false", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=TESTS.parent)


def _wait_for(condition, seconds: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _fits_writing_to(folder: Path) -> list[int]:
    """Pids of live processes whose command line names `folder` (a cell's fit)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if str(folder) in cmdline and "zombie" not in state:
                pids.append(int(entry.name))
    return pids


def _records(out: Path) -> dict[str, dict]:
    return {cell: json.loads((out / "cells" / cell / "record.json").read_text()) for cell in CELLS}


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_in_process_sweep_keeps_every_log_line_resumes_and_matches_a_subprocess_rerun(tmp_path, capsys):
    spec_file, out = _write(tmp_path, TINY), tmp_path / "out"
    process = _sweep_process(spec_file, out, "--in_process", "true")
    _, err = process.communicate(timeout=500)
    assert process.returncode == 0, err
    cells = [out / "cells" / cell_id for cell_id in CELLS]
    for cell in cells:
        log = (cell / "fit.log").read_text()
        # Lightning's own log lines land in every cell's log, not only the first one's.
        assert "GPU available" in log and "Seed set to 0" in log, log
        assert "I/O operation on closed file" not in log + err
        assert len(list(cell.glob("events.out.tfevents.*"))) == 1

    # The table is the run records' numbers (read here as plain JSON), one row per cell, grid order.
    records = _records(out)
    rows = _rows(out)
    assert [row["cell"] for row in rows] == list(CELLS)
    assert [int(row["n_poses"]) for row in rows] == [2, 4]
    for row in rows:
        metrics = records[row["cell"]]["metrics"]
        assert row["model"] == "paper_mlp" and row["leave_out_class"] == "3" and row["track"] == "test-tiny"
        assert int(row["param_count"]) == PAPER_MLP_PARAMS == records[row["cell"]]["model"]["n_params"]
        for key in ("train_acc", "in_test_acc", "out_test_acc"):
            assert float(row[key]) == metrics[key] and 0.0 <= metrics[key] <= 1.0
        assert len(row["in_test_acc_per_pose"].split(";")) == int(row["n_poses"])
        assert row["pred_init_out_test"] == ""  # no NTK callback in this sweep
        assert row["log_dir"] == f"cells/{row['cell']}"

    # A second invocation finds both cells finished and runs nothing.
    before = [(cell / "record.json").stat().st_mtime_ns for cell in cells]
    assert cli_main(["sweep", "run", str(spec_file), "--out", str(out), "--progress", "false"]) == 0
    assert "0 cells ran here" in capsys.readouterr().err
    assert [(cell / "record.json").stat().st_mtime_ns for cell in cells] == before

    # Deleting one record re-runs that cell only, now as a subprocess fit: the same numbers.
    table = (out / "results.csv").read_bytes()
    (cells[0] / "record.json").unlink()
    assert cli_main(["sweep", str(spec_file), "--out", str(out), "--progress", "false"]) == 0  # `sweep FILE` == `sweep run FILE`
    assert "1 cells ran here" in capsys.readouterr().err
    assert (cells[1] / "record.json").stat().st_mtime_ns == before[1]
    assert _records(out)[CELLS[0]]["metrics"] == records[CELLS[0]]["metrics"]
    assert (out / "results.csv").read_bytes() == table
    assert len(list(cells[0].glob("events.out.tfevents.*"))) == 1  # the old attempt's logs were cleared

    # Fig. 1C from the finished cells.
    assert cli_main(["sweep", "plot", str(out), "--output", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    "order out of range": (TINY.replace("n_angles: [2, 4]", "n_angles: [2, 400]"), "n_angles=400 is outside RotatedMNIST's range 1..360"),
    "unknown datamodule": (TINY.replace("RotatedMNIST", "ScaledMNIST"), "datamodule 'ScaledMNIST' is not an OrbitDataModule"),
    "data setting bad for one order": (TINY + "  data.held_out_poses: [3]\n", "n_angles=2, leave_out_class=3: held_out_poses=[3] is invalid"),
    "grid value in fit": (TINY + "  data.n_angles: 8\n", "set by the grid"),
    "data in model_fit": (TINY + "model_fit:\n  paper_mlp:\n    data.images_per_class: 9\n", "track's protocol"),
    "min_in_test_acc above 1": (TINY.replace("track:", "min_in_test_acc: 1.5\ntrack:"), "min_in_test_acc"),
    "config_files for a model not in grid": (TINY + "config_files:\n  paper_vit: models/paper_vit.yaml\n", "not in grid.model"),
    "missing config file": (TINY + "config_files:\n  paper_mlp: nowhere/paper_mlp.yaml\n", "nowhere/paper_mlp.yaml: no such file"),
    "config file not a fit config": (TINY + "config_files:\n  paper_mlp: pyproject.toml\n", "pyproject.toml: not valid YAML"),
    # Settings that make every cell fail or record nothing, and settings the sweep would replace.
    "fast_dev_run": (TINY + "  trainer.fast_dev_run: true\n", "trainer.fast_dev_run=True (model paper_mlp): every cell"),
    "no training batches": (TINY + "  trainer.limit_train_batches: 0\n", "trainer.limit_train_batches=0 (model paper_mlp)"),
    "no validation batches": (TINY + "  trainer.limit_val_batches: 0.0\n", "trainer.limit_val_batches=0.0 (model paper_mlp)"),
    "zero epochs": (TINY.replace("max_epochs: 1", "max_epochs: 0"), "trainer.max_epochs=0 (model paper_mlp)"),
    "validation never reached": (TINY + "  trainer.check_val_every_n_epoch: 2\n", "trainer.check_val_every_n_epoch=2"),
    "no checkpoints": (TINY + "model_fit:\n  paper_mlp:\n    trainer.enable_checkpointing: false\n", "trainer.enable_checkpointing=False"),
    "logger in fit": (TINY + "  trainer.logger: false\n", "trainer.logger (model paper_mlp): set by the sweep for every cell"),
    "logger option in fit": (TINY + "  trainer.logger.init_args.save_dir: elsewhere\n", "trainer.logger.init_args.save_dir (model"),
    "resume in fit": (TINY + "  ckpt_path: last\n", "ckpt_path (model paper_mlp): set by the sweep"),
}


@pytest.mark.parametrize(("content", "expected"), [
    ("api_token: s3cr3t-value\n", "has top-level keys that are no `orbitbench fit` section"),
    ("s3cr3t-value\n", "not a mapping"),
    ("key: [s3cr3t-value\n", "not valid YAML"),
    ("trainer:\n  logger:\n    class_path: CSVLogger # s3cr3t-value\n", "trainer.logger (model paper_mlp): set by the sweep"),
    ("trainer:\n  limit_train_batches: 0 # s3cr3t-value\n", "trainer.limit_train_batches=0 (model paper_mlp)"),
], ids=["foreign keys", "plain text", "bad yaml", "logger", "no training"])
def test_every_config_file_is_checked_before_any_cell_and_never_echoed(tmp_path, capsys, content, expected):
    """A config file may be any file (a sweep file is data): one line naming it, never its content."""
    config = tmp_path / "settings.yaml"
    config.write_text(content)
    out = tmp_path / "out"
    spec_file = _write(tmp_path, TINY + f"config_files:\n  paper_mlp: {config}\n")
    assert cli_main(["sweep", "run", str(spec_file), "--out", str(out), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and err.count("\n") == 1 and expected in err, err
    assert "s3cr3t" not in err and not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_files_fail_with_one_line_before_any_cell_and_write_nothing(tmp_path, capsys, case):
    text, expected = BAD_SWEEPS[case]
    out = tmp_path / "out"
    assert cli_main(["sweep", "run", str(_write(tmp_path, text)), "--out", str(out), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and err.count("\n") == 1, err
    assert expected in err
    assert not out.exists()


def test_missing_sweep_file_and_bad_launcher_options(tmp_path, capsys):
    assert cli_main(["sweep", "run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec_file, out = _write(tmp_path, TINY), tmp_path / "o"
    for flags, expected in ((["--jobs", "0"], "--jobs 0 is invalid"),
                            (["--address", "auto"], "--address is for --launcher ray"),
                            (["--jobs", "2", "--in_process", "true"], "--in_process runs one cell at a time"),
                            (["--submitit_parameters", "partition"], "--submitit_parameters: expected dict")):
        assert cli_main(["sweep", "run", str(spec_file), "--out", str(out), *flags]) == 2
        assert expected in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_cluster_package_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "o"
    assert cli_main(["sweep", "run", str(_write(tmp_path, TINY)), "--out", str(out), "--launcher", "ray"]) == 2
    assert capsys.readouterr().err == "orbitbench: --launcher ray needs the 'ray' package: pip install 'orbitbench[cluster]'\n"
    assert not out.exists()


def test_a_sweep_dir_refuses_a_different_grid_but_accepts_more_models(tmp_path):
    root = tmp_path / "out"
    spec = sweep.parse_sweep_text(TINY, "tiny")
    assert prepare_root(spec, root) == spec
    changed = sweep.parse_sweep_text(TINY.replace("[2, 4]", "[2, 8]"), "changed")
    with pytest.raises(OrbitbenchError, match="holds a different sweep"):
        prepare_root(changed, root)
    more = sweep.parse_sweep_text(TINY.replace("[paper_mlp]", "[paper_convnet]"), "more")
    merged = prepare_root(more, root)
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
                 "--data.leave_out_class=3", "--seed_everything=0", "--data.images_per_class=5",
                 "--trainer.logger.init_args.save_dir=/x/cell"):
        assert flag in argv
    # model_fit overrides fit for its model only.
    assert "--trainer.max_epochs=7" in argv and "--trainer.max_epochs=1" not in argv
    assert "--trainer.max_epochs=1" in sweep.fit_argv(spec, cells[2], Path("/x"))
    from orbitbench.leaderboard.integrity import track_protocol

    protocol = track_protocol(spec).data  # the one protocol definition: every DataModule setting, defaults included
    assert protocol["images_per_class"] == 5 and protocol["source"] == "mnist5k" and "batch_size" not in protocol
    assert spec.training_config("paper_mlp") == {"data.batch_size": 64, "trainer.max_epochs": 7}


def test_the_pose_axis_is_the_datamodules_declared_order_argument():
    shifted = sweep.parse_sweep_text(
        TINY.replace("RotatedMNIST", "TranslatedMNIST").replace("n_angles", "n_shifts"), "shift")
    assert shifted.n_poses == [2, 4]
    assert "--data.n_shifts=4" in sweep.fit_argv(shifted, shifted.cells()[1], Path("/x"))
    # A DataModule outside the package, named by its dotted path, declares its own axis.
    custom = sweep.parse_sweep_text(TINY.replace("RotatedMNIST", "sweep_helpers.FlippedMNIST")
                                    .replace("n_angles: [2, 4]", "n_flips: [2]"), "custom")
    assert custom.order_argument == "n_flips" and [c.cell_id for c in custom.cells()] == ["paper_mlp-n2-c3-s0"]
    with pytest.raises(OrbitbenchError, match=r"grid.n_flips.1: n_flips=4 is outside sweep_helpers.FlippedMNIST's range 1\.\.2"):
        sweep.parse_sweep_text(TINY.replace("RotatedMNIST", "sweep_helpers.FlippedMNIST")
                               .replace("n_angles: [2, 4]", "n_flips: [2, 4]"), "custom")


def test_a_model_config_file_comes_first_and_is_recorded(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("model:\n  init_args:\n    backbone_kwargs: {dropout: 0.25}\n")
    spec = sweep.parse_sweep_text(TINY + f"config_files:\n  paper_mlp: {config}\n", "tiny")
    argv = sweep.fit_argv(spec, spec.cells()[0], tmp_path)
    assert argv[:2] == ["fit", f"--config={config}"]  # the grid's flags after it win
    recorded = spec.training_config("paper_mlp")
    assert recorded["config_file"] == str(config)
    assert recorded["config_file_content"] == {"model": {"init_args": {"backbone_kwargs": {"dropout": 0.25}}}}


def _record(cell: sweep.Cell, predictions: dict | None = None) -> "RunRecord":  # noqa: F821
    from orbitbench.run.record import RunRecord

    return RunRecord.model_validate({
        "stage": "fit", "model": {"backbone": cell.model, "n_params": 10},
        "data": {"datamodule": "RotatedMNIST", "n_poses": cell.n_poses, "hparams": {"leave_out_class": cell.leave_out_class}},
        "seeds": {"seed_everything": cell.seed, "data_split_seed": 125},
        "metrics": {"train_acc": 0.9, "in_test_acc": 0.8, "out_test_acc": 0.25},
        "predictions": predictions, "epochs": 1, "global_step": 3, "log_dir": None, "last_checkpoint": None,
        "wall_time_s": 1.0, "versions": {}, "git_commit": None, "finished": "2026-11-27T10:00:00Z",
    })


def test_the_kernel_predictions_come_from_the_records_typed_predictions():
    spec = sweep.parse_sweep_text(TINY, "tiny")
    cell = spec.cells()[0]
    predictors = {"infinite": {"undefined": "no twin"}, "init": {"spectral_out_test_acc": 0.25},
                  "trained": {"spectral_out_test_acc": 0.75}}
    with_ntk = _record(cell, {"probe": {}, "network": {}, "predictors": predictors})
    result = result_from_record(spec, cell, with_ntk, "r")
    assert result.predicted == {"infinite": None, "init": 0.25, "trained": 0.75}
    assert result_from_record(spec, cell, _record(cell), "r").predicted["init"] is None
    # A record of another cell (a moved folder) is refused, not tabulated under the wrong cell.
    with pytest.raises(OrbitbenchError, match="not of cell paper_mlp-n4-c3-s0"):
        result_from_record(spec, spec.cells()[1], with_ntk, "r")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_settings_that_fit_rejects_stop_the_sweep_at_the_first_cell(tmp_path, capsys):
    bad = TINY.replace("trainer.max_epochs: 1", "trainer.max_epochs: many")
    out = tmp_path / "out"
    assert cli_main(["sweep", "run", str(_write(tmp_path, bad)), "--out", str(out), "--progress", "false", "--in_process", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orbitbench: cell {CELLS[0]} failed (exit 2)") and "max_epochs" in err
    assert err.count("\n") == 1
    assert not (out / "cells" / CELLS[1]).exists()  # not repeated for every cell


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_the_whole_in_process_sweep_and_keeps_nothing_half_done(tmp_path):
    """`kill <pid>` ends the sweep (Lightning alone would only flag it and go on with the next
    cell); the interrupted cell has no record, so a re-run redoes exactly that cell."""
    flag = tmp_path / "pause"
    flag.touch()
    spec_file, out = _write(tmp_path, _paused(flag)), tmp_path / "out"
    process = _sweep_process(spec_file, out, "--in_process", "true")
    log = out / "cells" / CELLS[0] / "fit.log"
    try:
        _wait_for(lambda: process.poll() is not None or (log.is_file() and "paused" in log.read_text()), what="training")
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a paused sweep behind when the test fails
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("orbitbench: sweep stopped by SIGTERM")
    assert not (out / "cells" / CELLS[0] / "record.json").exists()
    assert not (out / "cells" / CELLS[1]).exists()  # the sweep did not go on to the next cell
    assert sweep.read_sweep_dir(out).missing == sweep.read_sweep_dir(out).spec.cells()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_sigkilled_sweep_takes_its_fit_with_it_and_a_rerun_finishes_the_cell(tmp_path):
    flag = tmp_path / "pause"
    flag.touch()
    spec_file, out = _write(tmp_path, _paused(flag)), tmp_path / "out"
    process = _sweep_process(spec_file, out)
    first = out / "cells" / CELLS[0]
    try:
        _wait_for(lambda: process.poll() is not None or ((first / "fit.log").is_file() and "paused" in (first / "fit.log").read_text()),
                  what="the first cell's fit")
        fits = _fits_writing_to(first)
        assert fits and process.pid not in fits, "the fit runs in a child process"
        process.kill()  # SIGKILL: no handler runs in the sweep
        process.wait()
        _wait_for(lambda: not _fits_writing_to(first), seconds=30, what="the orphaned fit to die")
    finally:
        process.kill()
    flag.unlink()
    rerun = _sweep_process(spec_file, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "2 cells ran here" in err
    assert len(list(first.glob("events.out.tfevents.*"))) == 1  # the killed attempt was cleared
    assert [row["cell"] for row in _rows(out)] == list(CELLS)


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_two_runners_on_one_directory_split_the_cells_and_never_touch_a_claimed_folder(tmp_path):
    """A cell claimed by a live process is neither run nor cleared; two runners share the rest."""
    spec_file, out = _write(tmp_path, TINY.replace("leave_out_class: [3]", "leave_out_class: [3, 7]")), tmp_path / "out"
    spec = sweep.load_sweep_file(spec_file)
    held = spec.cells()[0]  # a live writer (this test) holds the first cell, with a file in its folder
    marker = out / "cells" / held.cell_id / "written-by-a-live-process"
    marker.parent.mkdir(parents=True)
    marker.write_text("keep")
    claim = try_claim(claim_path(out, held))
    runners = [_sweep_process(spec_file, out) for _ in range(2)]
    try:
        others = [c for c in spec.cells() if c != held]
        _wait_for(lambda: all((out / "cells" / c.cell_id / "record.json").is_file() for c in others), what="free cells")
        time.sleep(1.0)
        assert marker.read_text() == "keep" and all(r.poll() is None for r in runners), "runners wait for the held cell"
    finally:
        claim.release()
    errs = [runner.communicate(timeout=300)[1] for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], errs
    ran = [int(next(line for line in err.splitlines() if "cells ran here" in line).split(": ")[1].split()[0]) for err in errs]
    assert sum(ran) == len(spec.cells()), errs  # every cell exactly once, across both runners
    assert not marker.exists()  # released unfinished: cleared and run by one of the runners
    assert [row["cell"] for row in _rows(out)] == [c.cell_id for c in spec.cells()]
    for cell in spec.cells():
        assert (out / "cells" / cell.cell_id / "fit.log").read_text().count("$ orbitbench fit") == 1


def test_methods_of_one_model_are_aggregated_apart():
    from datetime import datetime, timezone

    from orbitbench.sweep import CellResult, aggregate

    def result(method: str, out_test: float, leave_out: int) -> CellResult:
        return CellResult(sweep="s", track="t", cell=f"c{method}{leave_out}", model="paper_mlp", method=method,
                          datamodule="RotatedMNIST", n_poses=4, leave_out_class=leave_out, seed=0, in_test_acc=0.5,
                          out_test_acc=out_test, wall_time_s=1.0, param_count=10, log_dir="cells/x", versions={},
                          finished=datetime.now(timezone.utc))  # fmt: skip

    results = [result("supervised", 0.0, 3), result("supervised", 0.2, 7),
               result("pose_consistency", 0.6, 3), result("pose_consistency", 0.4, 7)]
    stats = aggregate(results, "out_test_acc")
    assert set(stats) == {("paper_mlp", 4), ("paper_mlp+pose_consistency", 4)}
    assert stats[("paper_mlp", 4)][0] == pytest.approx(0.1) and stats[("paper_mlp+pose_consistency", 4)][0] == pytest.approx(0.5)


def test_sweep_table_gives_mean_se_and_t_interval_per_model_method_order(tmp_path) -> None:
    """`orbitbench sweep table DIR` from the cells' records alone (no leaderboard), checked against
    statistics computed here from the record files."""
    import csv as csv_module
    import io as io_module
    import json as json_module
    import statistics

    from scipy import stats as scipy_stats

    from orbitbench.cli import main

    sweep = TESTS / "fixtures/leaderboard/sweep"
    by_group: dict[tuple[str, int], list[float]] = {}
    for record_file in sorted((sweep / "cells").glob("*/record.json")):
        record = json_module.loads(record_file.read_text())
        model = record["model"]["backbone"]
        by_group.setdefault((model, record["data"]["n_poses"]), []).append(record["metrics"]["in_test_acc"])
    output = tmp_path / "table.csv"
    assert main(["sweep", "table", str(sweep), "--format", "csv", "--output", str(output)]) == 0
    rows = list(csv_module.DictReader(io_module.StringIO(output.read_text())))
    assert len(rows) == len(by_group) == 6
    for row in rows:
        values = by_group[row["model"], int(row["n_poses"])]
        n = len(values)
        se = statistics.stdev(values) / n**0.5
        half = scipy_stats.t.ppf(0.975, n - 1) * se
        assert int(row["cells"]) == n == 4 and row["method"] == "supervised"
        assert float(row["in_test_acc_mean"]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(row["in_test_acc_se"]) == pytest.approx(se, abs=1e-6)
        assert float(row["in_test_acc_ci_low"]) == pytest.approx(max(0, statistics.mean(values) - half), abs=1e-6)
        assert float(row["in_test_acc_ci_high"]) == pytest.approx(min(1, statistics.mean(values) + half), abs=1e-6)


def test_sweep_table_markdown_and_errors(tmp_path, capsys) -> None:
    from orbitbench.cli import main

    assert main(["sweep", "table", str(TESTS / "fixtures/leaderboard/sweep")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | method | n_poses | cells | out-test mean ± SE | out-test 95% CI |")
    assert sum(line.startswith("| ") for line in lines) == 7  # header + 6 rows
    assert any(line.startswith("| c4_pooled(paper_mlp) | supervised | 4 | 4 | 0.100 ± 0.041 |") for line in lines)
    assert main(["sweep", "table", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("orbitbench: ")


def test_a_model_fit_budget_adds_its_model_to_the_grid_and_survives_models(tmp_path) -> None:
    """CONTRIBUTING's route: one `model_fit` key gives a new model its budget (and a place in the
    grid); `sweep run --models` with that model keeps the budget, and the leaderboard's rule fields
    travel with it."""
    from orbitbench.sweep.spec import load_sweep_file

    text = TINY.replace("track:", "min_in_test_acc: 0.9\ntrack:") + "model_fit:\n  paper_vit:\n    trainer.max_epochs: 1\n"
    spec = load_sweep_file(_write(tmp_path, text))
    assert spec.grid.model[-1] == "paper_vit" and spec.min_in_test_acc == 0.9 and spec.ranked
    only = spec.with_models(["paper_vit"])
    assert only.grid.model == ["paper_vit"] and only.model_fit == {"paper_vit": {"trainer.max_epochs": 1}}
    assert only.training_config("paper_vit")["trainer.max_epochs"] == 1 and only.min_in_test_acc == 0.9


def test_an_in_process_runner_frees_each_cell_it_ran(tmp_path):
    """A finished fit leaves its trainer and module in reference cycles; with the cyclic collector off,
    as when a long-lived runner's full pass does not come round, none may survive the cell (else a
    runner grows by every cell's posed images and kernels until the machine runs out of memory)."""
    import gc

    import lightning as L

    from orbitbench.datamodules import RotatedMNIST
    from orbitbench.run.module import OrbitClassifier

    spec_file, out = _write(tmp_path, TINY), tmp_path / "out"
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        assert cli_main(["sweep", "run", str(spec_file), "--out", str(out), "--progress", "false", "--in_process", "true"]) == 0
        alive = [type(o) for o in gc.get_objects() if type(o) in (L.Trainer, OrbitClassifier, RotatedMNIST)]
    finally:
        if was_enabled:
            gc.enable()
    assert len(_records(out)) == len(CELLS) == 2  # both cells ran here
    # jsonargparse's parser context keeps the last cell's CLI (and so its objects) until the next one
    assert sorted(t.__name__ for t in alive) in ([], ["OrbitClassifier", "RotatedMNIST", "Trainer"]), alive
