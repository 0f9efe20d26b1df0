"""The translation track `mnist-cpu-shift` (sweeps/mnist_cpu_shift.yaml): its protocol as data, the
at-scale kernel regression on the exact whole-orbit path with the circular CNNs' twins, and a scratch
copy of the track reaching a leaderboard entry that `check` accepts, and refuses under the track's
in-test floor. Embedded MNIST only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from orbitbench.cli import main as cli_main
from orbitbench.datamodules import TranslatedMNIST
from orbitbench.models import create_model, model_info
from orbitbench.sweep.spec import check_runnable, load_sweep_file
from orbitbench.theory.at_scale import measure_at_scale
from orbitbench.theory.orbit_solve import check_exact, orbit_digits, orbit_regression
from orbitbench.theory.regression import ScaleOptions, materialize
from orbitbench.theory.twins import twin_kernel

ROOT = Path(__file__).resolve().parents[1]
TRACK = ROOT / "sweeps" / "mnist_cpu_shift.yaml"


def test_the_track_is_declared_as_issue_39_asks() -> None:
    spec = load_sweep_file(TRACK)
    assert (spec.track, spec.datamodule, spec.min_in_test_acc, getattr(spec, "ranked", True)) == (
        "mnist-cpu-shift", "TranslatedMNIST", 0.95, True)
    assert spec.grid.model == ["paper_mlp", "paper_convnet", "circ_cnn_fc", "circ_cnn_gap"]
    assert spec.grid.n_shifts == [4, 7] and spec.grid.leave_out_class == list(range(10))
    assert spec.fit["data.source"] == "mnist" and spec.fit["data.axis"] == "x"
    assert spec.fit["trainer.callbacks.regression_exact"] == "auto"
    check_runnable(spec)  # every model, config file and DataModule resolves
    for name in ("mnist_cpu_shift_challengers.yaml", "convergence/mnist_cpu_shift.yaml"):
        other = load_sweep_file(ROOT / "sweeps" / name)
        assert other.datamodule == "TranslatedMNIST" and other.fit["data.axis"] == "x", name
        check_runnable(other)
    assert load_sweep_file(ROOT / "sweeps" / "mnist_cpu_shift_challengers.yaml").track == "mnist-cpu-shift"


def _datamodule(n_shifts: int, leave_out_class: int = 3, **kwargs) -> TranslatedMNIST:
    dm = TranslatedMNIST(n_shifts=n_shifts, leave_out_class=leave_out_class, source="mnist5k", **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("name, n_shifts", [("circ_cnn_fc", 4), ("circ_cnn_gap", 7)])
def test_the_orbit_solve_with_a_cnn_twin_equals_a_direct_solve(name: str, n_shifts: int) -> None:
    """Shifts are pixel permutations and both twins pass the invariance check; the orbit path's
    outputs equal a direct solve on the same training pairs (the held-out unshifted poses of the
    leave-out class removed by the block leave-out formula)."""
    dm = _datamodule(n_shifts, images_per_class=8)
    twin = model_info(name).kernel_twin(channels=8, kernel_size=3)
    gram = lambda a, b=None: twin_kernel(twin, a, b)  # noqa: E731
    chosen = orbit_digits(dm, seed=3)
    assert check_exact(gram, dm, chosen) is None
    test = materialize(dm, torch.cat([dm.splits["out_test"][:6], dm.splits["in_test"][:6]]))
    count = 12
    found = orbit_regression(gram, dm, chosen, [count], test, 1e-10)
    train = dm.splits["train"]
    pairs = train[torch.isin(train[:, 0], chosen[:count])]
    assert count * n_shifts - len(pairs) == int((dm.digits.labels[chosen[:count]] == 3).sum())
    x = materialize(dm, pairs)
    k = twin_kernel(twin, x)
    y = torch.nn.functional.one_hot(dm.digits.labels[pairs[:, 0]], 10).double()
    ridge = 1e-10 * k.trace() * torch.eye(len(k), dtype=k.dtype)
    expected = twin_kernel(twin, test, x) @ torch.linalg.solve(k + ridge, y)
    got = found[len(pairs)]
    # CNN-GAP's kernel repeats one row per pose of a digit (Prop. 2): K is singular but for the ridge
    # (1e-10 of its trace), so both solves carry rounding amplified by ~1e10
    tolerance = 1e-6 if name == "circ_cnn_gap" else 1e-10
    assert float((got - expected).abs().max() / expected.abs().max()) <= tolerance
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_measure_at_scale_takes_the_orbit_path_with_both_cnn_twins() -> None:
    """The callback's at-scale measurement on a translation cell: `exact=require` succeeds (no
    fallback), and CNN-GAP's kernel regression predicts out-test as well as in-test (Prop. 2)."""
    dm = _datamodule(4, images_per_class=12)
    options = ScaleOptions(points=150, curve=(60, 150), in_test_points=40, out_test_points=12, bootstrap=100,
                           time_budget_s=0, exact="require")  # fmt: skip
    found = {}
    for name in ("circ_cnn_fc", "circ_cnn_gap"):
        torch.manual_seed(0)
        net = create_model(name, channels=8, kernel_size=3)
        twin = model_info(name).kernel_twin(channels=8, kernel_size=3)
        found[name] = measure_at_scale(dm, net, twin, ["infinite"], options)["predictors"]["infinite"]
        assert found[name]["scale_path"] == "orbit" and "scale_path_note" not in found[name], found[name]
        # whole orbits: at least the 150 points asked for, less than one orbit (4 poses) more
        assert 150 <= found[name]["regression_m"] < 154 and [c["m"] for c in found[name]["regression_curve"]][-1] == found[name]["regression_m"]
    gap = found["circ_cnn_gap"]
    assert gap["scale_out_test_acc"] >= gap["scale_in_test_acc"] - 0.2, gap


def _scratch_track(tmp_path: Path) -> tuple[Path, Path]:
    """The track's sweep file with one documented override, so that it runs in a minute: embedded data,
    one leave-out class, a few steps, the GAP model alone, small kernel samples and no floor."""
    spec = yaml.safe_load(TRACK.read_text())
    spec["min_in_test_acc"] = 0.0
    spec["grid"].update(model=["circ_cnn_gap"], leave_out_class=[3])
    spec["fit"].update({"data.source": "mnist5k", "trainer.callbacks.regression_points": 60,
                        "trainer.callbacks.regression_curve": [30, 60], "trainer.callbacks.time_budget_s": 0,
                        "trainer.callbacks.regression_test_points": 20, "trainer.callbacks.n_seeds": 4})  # fmt: skip
    spec["model_fit"] = {"circ_cnn_gap": {**spec["model_fit"]["circ_cnn_gap"], "trainer.max_steps": 3,
                                          "trainer.val_check_interval": 3, "trainer.callbacks.regression_points": 60,
                                          "trainer.callbacks.regression_curve": [30, 60],
                                          "trainer.callbacks.regression_test_points": 20,
                                          "trainer.callbacks.regression_out_test_points": 10}}  # fmt: skip
    spec["config_files"] = {"circ_cnn_gap": str(ROOT / "models" / "circ_cnn_gap.yaml")}
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    path = sweeps / "mnist_cpu_shift.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return sweeps, path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_scratch_copy_of_the_track_reaches_an_entry_and_the_floor_refuses_it(tmp_path: Path, capsys) -> None:
    from orbitbench.sweep import run as run_sweep

    sweeps, path = _scratch_track(tmp_path)
    out = tmp_path / "sweep"
    run_sweep(path, out=out, in_process=True, progress=False)
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/record.json"))]
    assert len(records) == 2 and {r["data"]["group"] for r in records} == {"translation"}
    for record in records:
        infinite = record["predictions"]["predictors"]["infinite"]
        assert infinite["scale_path"] == "orbit" and infinite["regression_m"] >= 1, infinite
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    where = ["--root", str(root), "--sweeps", str(sweeps)]
    assert cli_main(["leaderboard", "add", *where, str(out)]) == 0, capsys.readouterr().err
    (entry,) = (root / "entries").iterdir()
    assert entry.name == "mnist-cpu-shift__circ_cnn_gap.json"
    assert json.loads(entry.read_text())["invariance"] == "built-in:circular-shift"
    assert cli_main(["leaderboard", "build", *where]) == 0, capsys.readouterr().err
    assert cli_main(["leaderboard", "check", *where]) == 0, capsys.readouterr().err
    capsys.readouterr()
    path.write_text(path.read_text().replace("min_in_test_acc: 0.0", "min_in_test_acc: 0.95"))
    assert cli_main(["leaderboard", "check", *where]) != 0
    assert "below the track's min_in_test_acc 0.95" in capsys.readouterr().err
