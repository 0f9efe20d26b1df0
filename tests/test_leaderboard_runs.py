"""The leaderboard on real runs: a sweep whose config file changes the data is refused, and
`leaderboard verify` re-runs cells bit-identically (CPU, same process settings) or says how far off."""

from __future__ import annotations

import json
import sys
import shutil
from pathlib import Path

import pytest

from orbitbench.cli import main as cli_main
from orbitbench import leaderboard
from orbitbench.sweep import run as run_sweep

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
SWEEPS = FIXTURES / "sweeps"

ONE_CELL = SWEEPS / "one_cell.yaml"


def _cli(root: Path, *args: str) -> int:
    where = ["--sweeps", str(SWEEPS)] if args[0] == "verify" else ["--root", str(root), "--sweeps", str(SWEEPS)]
    return cli_main(["leaderboard", args[0], *where, *args[1:]])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_verify_reruns_cells_and_records_it_and_a_forged_cell_fails(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    run_sweep(ONE_CELL, out=sweep, in_process=True)
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    assert _cli(root, "add", str(sweep)) == 0
    path = root / "entries" / "tiny-one__paper_mlp.json"
    assert _cli(root, "verify", str(path), "--cells", "1") == 0, capsys.readouterr().err
    verified = json.loads(path.read_text())["verified"]
    assert verified["max_abs_diff"] == 0.0 and len(verified["cells"]) == 1 and verified["tolerance"] == 0.0
    assert "rebuilt" in capsys.readouterr().out
    assert _cli(root, "check") == 0  # right after verify: the pages were rebuilt with the verification
    readme = (root / "README.md").read_text()
    assert f"verified (1 cells, max diff 0, {verified['date']})" in readme
    capsys.readouterr()

    # Re-adding the same cells to change the notes keeps the verification; new cells drop it.
    assert _cli(root, "add", str(sweep), "--replace", "true", "--notes", "fixed note") == 0
    again = json.loads(path.read_text())
    assert again["notes"] == "fixed note" and again["verified"] == verified
    rerun = tmp_path / "rerun"
    run_sweep(ONE_CELL, out=rerun, in_process=True)  # same numbers, but new cells (times, dates)
    assert _cli(root, "add", str(rerun), "--replace", "true") == 0
    assert json.loads(path.read_text())["verified"] is None
    assert _cli(root, "add", str(sweep), "--replace", "true") == 0
    capsys.readouterr()

    # A cell edited together with every aggregate passes `check` but not a re-run of that cell.
    from orbitbench.leaderboard.integrity import recompute
    from orbitbench.leaderboard.schema import Entry

    from orbitbench.leaderboard.crosscheck import cells_digest, split_sizes

    entry = Entry.model_validate_json(path.read_text())
    forged = []
    for c in entry.cells:  # a consistent forgery: a whole count of the out-test images, per pose too
        n_out = split_sizes(c.data.hparams, c.n_poses)[3]
        acc = (round(c.metrics.out_test_acc * n_out) + (1 if c.metrics.out_test_acc < 0.5 else -1)) / n_out
        per_pose = [None if v is None else acc for v in c.metrics.out_test_acc_per_pose]
        forged.append(c.model_copy(update={"metrics": c.metrics.model_copy(update={"out_test_acc": acc, "out_test_acc_per_pose": per_pose})}))
    results, score = recompute(forged)
    path.write_text(entry.model_copy(update={"cells": forged, "results": results, "score": score, "verified": None,
                                             "cells_digest": cells_digest(forged)}).model_dump_json())
    assert _cli(root, "build") == 0
    code = _cli(root, "verify", str(path), "--cells", "1")
    err = capsys.readouterr().err
    assert code == 2 and "differs by up to" in err and "not verified" in err
    assert json.loads(path.read_text())["verified"] is None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_config_file_with_a_data_block_is_refused_with_the_setting_it_changed(tmp_path, capsys):
    other = tmp_path / "other_data.yaml"
    other.write_text("data:\n  init_args:\n    held_out_poses: [0, 1]\n")
    spec = tmp_path / "one_cell.yaml"
    spec.write_text(ONE_CELL.read_text() + f"  config: {other}\n")
    sweep = tmp_path / "sweep"
    run_sweep(spec, out=sweep, in_process=True)
    record = json.loads((sweep / "cells" / "paper_mlp-n4-c3-s0" / "record.json").read_text())
    assert record["data"]["hparams"]["held_out_poses"] == [0, 1]  # the fit really ran another protocol
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    capsys.readouterr()  # the sweep's progress lines
    code = _cli(root, "add", str(sweep))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "a cell's data.held_out_poses is [0, 1], the track's is [0]; it is not track 'tiny-one'" in err, err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_with_methods_gives_one_entry_per_method_that_verifies(tmp_path, capsys, monkeypatch):
    """`grid.method` -> one entry per (model, method), its method taken from the cells; verify re-runs
    the method (not supervised); an entry claiming another method than its cells is refused."""
    sweeps = tmp_path / "sweeps"  # an entry's sweep is one of the board's sweep files
    shutil.copytree(SWEEPS, sweeps)
    monkeypatch.setattr(sys.modules[__name__], "SWEEPS", sweeps)
    spec = sweeps / "one_cell.yaml"
    spec.write_text(ONE_CELL.read_text().replace("  model: [paper_mlp]\n",
                                                  "  model: [paper_mlp]\n  method: [supervised, pose_consistency]\n"))
    sweep = tmp_path / "sweep"
    run_sweep(spec, out=sweep, in_process=True)
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    assert _cli(root, "add", str(sweep)) == 0
    entries = {p.name: json.loads(p.read_text()) for p in (root / "entries").iterdir()}
    assert sorted(entries) == ["tiny-one__paper_mlp.json", "tiny-one__paper_mlp__pose_consistency.json"]
    method_entry = entries["tiny-one__paper_mlp__pose_consistency.json"]
    assert method_entry["method"] == "pose_consistency" and entries["tiny-one__paper_mlp.json"]["method"] == "supervised"
    losses = [e["cells"][0]["metrics"]["in_test_loss"] for e in (method_entry, entries["tiny-one__paper_mlp.json"])]
    assert losses[0] != losses[1]  # really another training
    path = root / "entries" / "tiny-one__paper_mlp__pose_consistency.json"
    assert _cli(root, "verify", str(path), "--cells", "1") == 0, capsys.readouterr().err
    assert json.loads(path.read_text())["verified"]["max_abs_diff"] == 0.0
    capsys.readouterr()

    method_entry = json.loads(path.read_text())
    path.write_text(json.dumps({**method_entry, "method": "supervised"}))
    code = _cli(root, "check")
    err = capsys.readouterr().err
    assert code == 2 and "trained by method 'pose_consistency', not 'supervised'" in err, err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_track_on_a_datamodule_outside_the_package_reaches_a_verified_entry(tmp_path, capsys, monkeypatch):
    """CONTRIBUTING's dotted-path DataModule (tests/sweep_helpers.py): its cells record the class by
    import path, so the entry's protocol matches the track and `verify` rebuilds the same data."""
    monkeypatch.setenv("ORBITBENCH_TRUSTED_PACKAGES", "sweep_helpers")  # the user's own package, trusted the documented way
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    spec = sweeps / "flips.yaml"
    spec.write_text(ONE_CELL.read_text().replace("RotatedMNIST", "sweep_helpers.FlippedMNIST")
                    .replace("n_angles: [4]", "n_flips: [2]").replace("tiny-one", "tiny-flips"))  # fmt: skip
    sweep = tmp_path / "sweep"
    run_sweep(spec, out=sweep, in_process=True)
    record = json.loads(next((sweep / "cells").glob("*/record.json")).read_text())
    assert record["data"]["datamodule"] == "sweep_helpers.FlippedMNIST" and record["data"]["group"] == "flip"
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    where = ["--root", str(root), "--sweeps", str(sweeps)]
    assert cli_main(["leaderboard", "add", *where, str(sweep)]) == 0, capsys.readouterr().err
    (path,) = (root / "entries").iterdir()
    assert json.loads(path.read_text())["protocol"]["datamodule"] == "sweep_helpers.FlippedMNIST"
    assert cli_main(["leaderboard", "verify", "--sweeps", str(sweeps), str(path), "--cells", "1"]) == 0, capsys.readouterr().err
    assert json.loads(path.read_text())["verified"]["max_abs_diff"] == 0.0
    assert cli_main(["leaderboard", "build", *where]) == 0 and cli_main(["leaderboard", "check", *where]) == 0
