"""The project README's result table is made from the leaderboard entries and kept current by `check`.

Expected numbers are computed here from the entries' cells (the run records' metrics), with
numpy, not by the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from orbitbench.cli import main as cli_main

REPO = Path(__file__).parent.parent
BLOCK = "<!-- leaderboard table: track=mnist5k-cpu -->\n{body}<!-- end leaderboard table -->\n"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the repository's leaderboard with a README beside it holding one stale table."""
    shutil.copytree(REPO / "leaderboard", tmp_path / "leaderboard")  # entries and their renderings
    (tmp_path / "README.md").write_text("# a project\n\n" + BLOCK.format(body="| stale |\n") + "\nprose stays\n")
    return tmp_path


def _cli(capsys, project: Path, command: str) -> tuple[int, str]:
    code = cli_main(["leaderboard", command, "--root", str(project / "leaderboard"), "--sweeps", str(REPO / "sweeps")])
    return code, capsys.readouterr().err


def _model_rows(readme: str) -> list[list[str]]:
    """The cells of every Markdown table row that names a model (its first cell in backticks)."""
    split = ([c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines())
    return [cells for cells in split if cells[0].startswith("`")]


def _rows(readme: str) -> dict[tuple[str, int], list[str]]:
    return {(cells[0].strip("`"), int(cells[1])): cells[2:] for cells in _model_rows(readme) if len(cells) == 7}


def test_check_refuses_a_stale_table_and_build_writes_it_from_the_cells(project, capsys):
    code, err = _cli(capsys, project, "check")
    assert code == 2 and "README.md: a leaderboard table is out of date" in err and err.count("\n") == 1
    assert _cli(capsys, project, "build")[0] == 0
    readme = (project / "README.md").read_text()
    assert readme.startswith("# a project\n") and readme.endswith("\nprose stays\n") and "| stale |" not in readme
    rows = _rows(readme)
    entry = json.loads((project / "leaderboard/entries/mnist5k-cpu__paper_mlp.json").read_text())
    for n in (4, 8):
        cells = [c for c in entry["cells"] if c["data"]["n_poses"] == n]
        assert len(cells) == 10  # all ten leave-out classes
        train, in_test, out_test, infinite, init = rows[("paper_mlp", n)]
        values = np.array([c["metrics"]["out_test_acc"] for c in cells])
        mean, interval = out_test.split(" ", 1)
        assert float(mean) == pytest.approx(values.mean(), abs=5e-4)
        half = scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        low, high = (float(v) for v in interval.strip("[]").split(","))
        assert (low, high) == pytest.approx((max(values.mean() - half, 0), min(values.mean() + half, 1)), abs=5e-3)
        assert float(in_test) == pytest.approx(np.mean([c["metrics"]["in_test_acc"] for c in cells]), abs=5e-4)
        predicted, kappa = init.split()
        assert float(predicted) == pytest.approx(np.mean([c["predicted"]["init"] for c in cells]), abs=5e-4)
        assert float(kappa.strip("()")) == pytest.approx(np.mean([c["kappa"]["init"] for c in cells]), abs=5e-3)
    # challengers are not rows: the kernel theory describes label-trained networks only
    assert not any(model.startswith("paper_mlp__") for model, _ in rows)
    assert ("paper_convnet", 8) in rows and rows[("paper_convnet", 8)][3] == "-"  # no analytic twin
    assert _cli(capsys, project, "check")[0] == 0


def test_a_table_naming_a_track_without_entries_is_one_line(project, capsys):
    (project / "README.md").write_text(BLOCK.replace("mnist5k-cpu", "no-such-track").format(body=""))
    code, err = _cli(capsys, project, "build")
    assert code == 2 and "names track 'no-such-track', which has no supervised entry" in err and err.count("\n") == 1


PAIRS = "<!-- leaderboard pairs: track=mnist-cpu -->\n{body}<!-- end leaderboard pairs -->\n"


def test_the_pairs_block_puts_a_model_beside_its_linearisation_cell_by_cell(project, capsys):
    """The committed `mnist-cpu` entries of paper_mlp and linearized(paper_mlp): the difference is
    paired by leave-out class and seed, its interval a t-interval over the pairs (scipy here)."""
    (project / "README.md").write_text(PAIRS.format(body="| stale |\n"))
    code, err = _cli(capsys, project, "check")
    assert code == 2 and "out of date" in err and err.count("\n") == 1
    assert _cli(capsys, project, "build")[0] == 0
    rows = {(cells[0].strip("`"), int(cells[1])): cells[2:] for cells in _model_rows((project / "README.md").read_text())}
    entries = project / "leaderboard/entries"
    net = json.loads((entries / "mnist-cpu__paper_mlp.json").read_text())
    lin = json.loads((entries / "mnist-cpu__linearized_paper_mlp.json").read_text())
    for n in (4, 8):
        by_class = [{c["data"]["hparams"]["leave_out_class"]: c["metrics"] for c in e["cells"] if c["data"]["n_poses"] == n}
                    for e in (net, lin)]  # fmt: skip
        classes = sorted(by_class[0])
        assert classes == sorted(by_class[1]) and len(classes) == 10
        diff = np.array([by_class[1][k]["out_test_acc"] - by_class[0][k]["out_test_acc"] for k in classes])
        in_test, out_test, difference, count, _ = rows[("paper_mlp", n)]
        assert int(count) == 10
        assert [float(v) for v in out_test.split(" / ")] == pytest.approx(
            [np.mean([m[k]["out_test_acc"] for k in classes]) for m in by_class], abs=5e-4)
        assert [float(v) for v in in_test.split(" / ")] == pytest.approx(
            [np.mean([m[k]["in_test_acc"] for k in classes]) for m in by_class], abs=5e-4)
        mean, interval = difference.split(" ", 1)
        half = scipy_stats.t.ppf(0.975, 9) * diff.std(ddof=1) / np.sqrt(10)
        assert float(mean) == pytest.approx(diff.mean(), abs=5e-4)
        assert [float(v) for v in interval.strip("[]").split(",")] == pytest.approx([diff.mean() - half, diff.mean() + half], abs=5e-3)
    assert _cli(capsys, project, "check")[0] == 0


def test_a_pairs_block_without_a_linearisation_is_one_line(project, capsys):
    (project / "README.md").write_text(PAIRS.replace("mnist-cpu", "mnist5k-cpu").format(body=""))
    code, err = _cli(capsys, project, "build")
    assert code == 2 and "has no model with a linearized(<model>) entry" in err and err.count("\n") == 1


SCALE = "<!-- leaderboard scale: track=mnist-cpu -->\n{body}<!-- end leaderboard scale -->\n"


def test_the_scale_block_pairs_the_network_with_each_kernel_at_scale(project, capsys):
    """The committed `mnist-cpu` paper_mlp entry: network minus kernel out-test paired by cell, its
    t-interval (scipy here), the kernel's in-test and kappa per cell, m the smallest of the order's."""
    (project / "README.md").write_text(SCALE.format(body="| stale |\n"))
    assert _cli(capsys, project, "check")[0] == 2
    assert _cli(capsys, project, "build")[0] == 0
    rows = {(cells[0].strip("`"), int(cells[1]), cells[3].strip("`")): cells
            for cells in _model_rows((project / "README.md").read_text())}
    entry = json.loads((project / "leaderboard/entries/mnist-cpu__paper_mlp.json").read_text())
    for n in (4, 8):
        cells = [c for c in entry["cells"] if c["data"]["n_poses"] == n]
        for name in ("infinite", "init"):
            _, _, network, _, m, kernel, gap, in_test, kappa = rows[("paper_mlp", n, name)]
            scale = [c["at_scale"][name] for c in cells]
            diff = np.array([c["metrics"]["out_test_acc"] - s["out_test"] for c, s in zip(cells, scale)])
            half = scipy_stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
            assert float(network) == pytest.approx(np.mean([c["metrics"]["out_test_acc"] for c in cells]), abs=5e-4)
            assert int(m.replace(",", "")) == min(s["m"] for s in scale) and (name != "infinite" or int(m.replace(",", "")) >= 16000)
            assert float(kernel) == pytest.approx(np.mean([s["out_test"] for s in scale]), abs=5e-4)
            mean, interval = gap.split(" ", 1)
            assert float(mean) == pytest.approx(diff.mean(), abs=5e-4)
            assert [float(v) for v in interval.strip("[]").split(",")] == pytest.approx([diff.mean() - half, diff.mean() + half], abs=5e-3)
            assert float(in_test) == pytest.approx(np.mean([s["in_test"] for s in scale]), abs=5e-4)
            kappas = [s["kappa"] for s in scale]
            low, high = (float(v) for v in kappa.split(" ", 1)[1].strip("[]").split(","))
            assert float(kappa.split(" ")[0]) == pytest.approx(np.mean(kappas), abs=5e-3)
            assert (low, high) == pytest.approx((min(kappas), max(kappas)), abs=5e-3)
    assert _cli(capsys, project, "check")[0] == 0


METHODS = "<!-- leaderboard methods: track=mnist-cpu -->\n{body}<!-- end leaderboard methods -->\n"


def test_the_methods_block_puts_each_method_beside_supervised_training_cell_by_cell(project, capsys):
    """The committed `mnist-cpu` entries of paper_mlp and its two challengers: in-test and out-test
    means over the paired cells, the method's t-interval and the paired difference's (scipy here)."""
    (project / "README.md").write_text(METHODS.format(body="| stale |\n"))
    code, err = _cli(capsys, project, "check")
    assert code == 2 and "out of date" in err and err.count("\n") == 1
    assert _cli(capsys, project, "build")[0] == 0
    rows = {(cells[0].strip("`"), cells[1].strip("`"), int(cells[2])): cells[3:]
            for cells in _model_rows((project / "README.md").read_text())}
    entries = project / "leaderboard/entries"
    net = json.loads((entries / "mnist-cpu__paper_mlp.json").read_text())
    assert {method for _, method, _ in rows} == {"pose_consistency", "latent_operator"}
    for method in ("pose_consistency", "latent_operator"):
        other = json.loads((entries / f"mnist-cpu__paper_mlp__{method}.json").read_text())
        for n in (4, 8):
            by_class = [{c["data"]["hparams"]["leave_out_class"]: c["metrics"] for c in e["cells"] if c["data"]["n_poses"] == n}
                        for e in (net, other)]  # fmt: skip
            classes = sorted(by_class[0])
            assert classes == sorted(by_class[1]) and len(classes) == 10
            in_test, out_test, difference, count = rows[("paper_mlp", method, n)]
            assert int(count) == 10
            assert [float(v) for v in in_test.split(" / ")] == pytest.approx(
                [np.mean([m[k]["in_test_acc"] for k in classes]) for m in by_class], abs=5e-4)
            values = np.array([by_class[1][k]["out_test_acc"] for k in classes])
            supervised, rest = out_test.split(" / ")
            mine, interval = rest.split(" ", 1)
            assert float(supervised) == pytest.approx(np.mean([by_class[0][k]["out_test_acc"] for k in classes]), abs=5e-4)
            assert float(mine) == pytest.approx(values.mean(), abs=5e-4)
            half = scipy_stats.t.ppf(0.975, 9) * values.std(ddof=1) / np.sqrt(10)
            assert [float(v) for v in interval.strip("[]").split(",")] == pytest.approx(
                [max(values.mean() - half, 0), min(values.mean() + half, 1)], abs=5e-3)
            diff = values - np.array([by_class[0][k]["out_test_acc"] for k in classes])
            mean, interval = difference.split(" ", 1)
            half = scipy_stats.t.ppf(0.975, 9) * diff.std(ddof=1) / np.sqrt(10)
            assert float(mean) == pytest.approx(diff.mean(), abs=5e-4)
            assert [float(v) for v in interval.strip("[]").split(",")] == pytest.approx(
                [diff.mean() - half, diff.mean() + half], abs=5e-3)
    assert _cli(capsys, project, "check")[0] == 0


def test_a_methods_block_without_a_method_entry_is_one_line(project, capsys):
    (project / "README.md").write_text(METHODS.replace("mnist-cpu", "mnist-cpu-shift").format(body=""))
    code, err = _cli(capsys, project, "build")
    assert code == 2 and "has no method entry beside a supervised entry" in err and err.count("\n") == 1
