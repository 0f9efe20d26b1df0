"""The kernel-predictor registry: a fourth predictor, registered in one call, is measured by the
callback and reaches the run record, the sweep's results.csv and the leaderboard's table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from orbitbench.cli import main as cli_main
from orbitbench.theory.registry import Predictor, predictor_names, register_predictor, unregister_predictor
from orbitbench.sweep import run as run_sweep
from orbitbench.theory.regression_cache import CACHE_ENV

ONE_CELL = Path(__file__).parent / "fixtures" / "leaderboard" / "sweeps" / "one_cell.yaml"


def pixel_gram(images: torch.Tensor, output, images2: torch.Tensor | None = None) -> torch.Tensor:
    """The linear kernel on raw pixels: the simplest kernel that is not one of the three."""
    left = images.flatten(1).double()
    return left @ (left if images2 is None else images2.flatten(1).double()).T


@pytest.fixture
def pixels_predictor():
    register_predictor(Predictor("pixels", measured="the linear kernel on raw pixels (test)", label="pixel kernel",
                                 color="tab:purple", when="once", kernel=lambda context: pixel_gram))  # fmt: skip
    yield
    unregister_predictor("pixels")


def test_names_are_registered_once_in_display_order() -> None:
    assert predictor_names()[:3] == ("infinite", "init", "trained")
    with pytest.raises(ValueError, match="already registered"):
        register_predictor(Predictor("init", measured="another", label="x", color="k"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fourth_predictor_goes_from_the_record_to_the_leaderboard_table(tmp_path, pixels_predictor, capsys, monkeypatch) -> None:
    assert predictor_names() == ("infinite", "init", "trained", "pixels")
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    spec = sweeps / "fourth.yaml"
    spec.write_text(ONE_CELL.read_text().replace("tiny-one", "tiny-fourth") + "\n".join([
        "  trainer.callbacks+: orbitbench.run.callbacks.EmpiricalNTKCallback", "  trainer.callbacks.n_seeds: 4",
        "  trainer.callbacks.probe_digits_per_class: 2", "  trainer.callbacks.train_per_class: 3",
        "  trainer.callbacks.in_test_per_class: 2", "  trainer.callbacks.figures: false",
        "  trainer.callbacks.empirical_points: 100", ""]))  # fmt: skip
    sweep = tmp_path / "sweep"
    cache = tmp_path / "regression-cache"  # the seeding shares its solves through it (regression_cache)
    monkeypatch.setenv(CACHE_ENV, str(cache))
    run_sweep(spec, out=sweep, in_process=True)
    assert any(cache.iterdir())
    (record_path,) = (sweep / "cells").glob("*/record.json")
    measured = json.loads(record_path.read_text())["predictions"]["predictors"]["pixels"]
    assert 0.0 <= measured["spectral_out_test_acc"] <= 1.0 and "regression_out_test_acc" in measured
    (row,) = csv.DictReader((sweep / "results.csv").open())
    assert float(row["pred_pixels_out_test"]) == measured["spectral_out_test_acc"]
    assert list(row).index("pred_pixels_out_test") == list(row).index("pred_trained_out_test") + 1
    # the regression at scale (every predictor with a Gram function, the registered one too)
    recorded = json.loads(record_path.read_text())["predictions"]["predictors"]
    assert int(row["pred_pixels_scale_m"]) == measured["regression_m"] == 100
    assert float(row["pred_pixels_scale_out_test"]) == measured["scale_out_test_acc"]
    assert float(row["pred_pixels_scale_kappa"]) == measured["scale_kappa"]
    assert int(row["pred_infinite_scale_m"]) == recorded["infinite"]["regression_m"] > 100

    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    where = ["--root", str(root), "--sweeps", str(sweeps)]
    assert cli_main(["leaderboard", "add", *where, str(sweep)]) == 0, capsys.readouterr().err
    (entry_path,) = (root / "entries").iterdir()
    entry = json.loads(entry_path.read_text())
    assert entry["cells"][0]["predicted"]["pixels"] == measured["spectral_out_test_acc"]
    assert entry["results"][0]["predicted"]["pixels"]["mean"] == measured["spectral_out_test_acc"]
    assert cli_main(["leaderboard", "build", *where]) == 0 and cli_main(["leaderboard", "check", *where]) == 0
    readme = (root / "README.md").read_text()
    header = next(line for line in readme.splitlines() if line.startswith("| Rank"))
    assert "pred. pixel kernel (κ)" in header and "pred. infinite (κ)" in header
    assert f"{measured['spectral_out_test_acc']:.3f}" in readme
    # the regression at scale in the entry: copied from the record, aggregated, shown, checked
    cell_scale = entry["cells"][0]["at_scale"]
    assert set(cell_scale) == {"infinite", "init", "trained", "pixels"}
    assert cell_scale["pixels"]["out_test"] == measured["scale_out_test_acc"]
    assert cell_scale["pixels"]["kappa"] == measured["scale_kappa"] and cell_scale["pixels"]["m"] == 100
    assert entry["results"][0]["at_scale"]["infinite"]["m"] == recorded["infinite"]["regression_m"]
    assert entry["results"][0]["at_scale"]["pixels"]["out_test"]["mean"] == measured["scale_out_test_acc"]
    assert "pixel kernel at scale (κ, m)" in header
    assert f"{measured['scale_out_test_acc']:.3f} (κ {measured['scale_kappa']:+.2f}, m 100)" in readme
    assert "pixel kernel at scale (κ, m)" in (root / "index.html").read_text()
    assert cli_main(["leaderboard", "verify", "--sweeps", str(sweeps), str(entry_path), "--cells", "1"]) == 0, capsys.readouterr().err
    assert json.loads(entry_path.read_text())["verified"]["max_abs_diff"] == 0.0
    # what `verify` compares: a re-run's cell differing in an at-scale number, or in m, is that far off
    from orbitbench.leaderboard.integrity import max_metric_difference, verify_cells
    from orbitbench.leaderboard.schema import Entry, EntryCell

    # an entry whose empirical kernels were sized by a time budget: the re-run takes the m the cell
    # holds (100 here), not what the budget buys on this machine (its first probe, 250, for a budget
    # too small for anything), so it re-runs bit for bit
    for path in cache.iterdir():  # and the cache is edited: a verification never reads it
        torch.save({m: torch.zeros_like(t) for m, t in torch.load(path, weights_only=True).items()}, path)
    budgeted = Entry.model_validate_json(entry_path.read_text())
    budgeted.config.update({"trainer.callbacks.empirical_points": None, "trainer.callbacks.time_budget_s": 1e-6})
    assert verify_cells(budgeted, 1) == ([entry["cells"][0]["cell"]], 0.0)

    cell = EntryCell.model_validate(entry["cells"][0])
    assert max_metric_difference(cell, cell) == 0.0
    moved = cell.model_copy(deep=True)
    moved.at_scale["pixels"].out_test = cell.at_scale["pixels"].out_test + 0.25
    assert max_metric_difference(cell, moved) == pytest.approx(0.25)
    moved = cell.model_copy(deep=True)
    moved.at_scale["infinite"].m = cell.at_scale["infinite"].m - 1
    assert max_metric_difference(cell, moved) == 1.0
    moved = cell.model_copy(deep=True)
    del moved.at_scale["init"]
    assert max_metric_difference(cell, moved) == float("inf")
    # a cell seeded before the regression at scale vouches for none: a re-run's are not compared
    moved.at_scale.clear()
    assert max_metric_difference(moved, cell) == 0.0
    capsys.readouterr()
    # a hand edit of either the cell's number or the aggregate is refused
    good = entry_path.read_text()
    for path, value in ((["cells", 0, "at_scale", "pixels", "out_test"], 0.999),
                        (["results", 0, "at_scale", "pixels", "m"], 16000)):  # fmt: skip
        edited = json.loads(good)
        target = edited
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        entry_path.write_text(json.dumps(edited, indent=1) + "\n")
        assert cli_main(["leaderboard", "check", *where]) != 0
        assert "orbitbench: " in capsys.readouterr().err
    entry_path.write_text(good)


def test_the_callback_figure_draws_every_registered_predictor(pixels_predictor) -> None:
    """No fixed colour list: a fourth predictor gets its own lines (a `zip` with three colours dropped it)."""
    from orbitbench.run.callbacks.kernel_predictions import predicted_vs_actual_figure

    entry = {"spectral_out_test_acc": 0.5, "regression_out_test_acc": 0.25}
    history = [{"step": s, "network": {"out_test_acc": 0.5, "out_test_ci": [0.4, 0.6]},
                "predictors": {name: entry for name in predictor_names()}} for s in (0, 10)]  # fmt: skip
    legend = [t.get_text() for t in predicted_vs_actual_figure(history).axes[0].get_legend().get_texts()]
    assert "pixels (Eq. 7)" in legend and "pixels (regression)" in legend and len(legend) == 1 + 2 * 4
