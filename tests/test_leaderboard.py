"""`orbitbench leaderboard`: entry schema, add from a sweep dir, build's ranking, check.

Fixture entries (tests/fixtures/leaderboard/entries) carry hand-chosen numbers; the expected
rankings and summaries below are worked out by hand from them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orbitbench import leaderboard
from orbitbench.errors import OrbitbenchError

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
REPO_LEADERBOARD = Path(__file__).parent.parent / "leaderboard"
ALPHA = "fixture-rot__alpha.json"


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "board"
    shutil.copytree(FIXTURES / "entries", root / "entries")
    return root


def _cli(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = leaderboard.main(["--root", str(root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tables(readme: str) -> dict[str, list[list[str]]]:
    """Track -> the rows of its table, each a list of cell texts."""
    tables: dict[str, list[list[str]]] = {}
    track = None
    for line in readme.splitlines():
        if line.startswith("## Track `"):
            track = line.split("`")[1]
            tables[track] = []
        elif track and line.startswith("| ") and not line.startswith("| Rank"):
            tables[track].append([cell.strip() for cell in line.strip("|").split("|")])
    return tables


def test_build_ranks_each_track_by_mean_out_test(board, capsys):
    code, out, _ = _cli(capsys, board, "build")
    assert code == 0
    tables = _tables((board / "README.md").read_text())
    assert list(tables) == ["fixture-rot", "fixture-shift"]
    rot = tables["fixture-rot"]
    # alpha out-test (0.10 + 0.30)/2 = 0.20; beta (0.40 + 0.60)/2 = 0.50; gamma (0.25 + 0.35)/2 = 0.30
    assert [(row[0], row[1]) for row in rot] == [("1", "beta"), ("2", "gamma"), ("3", "alpha")]
    assert [row[4] for row in rot] == ["**0.500**", "**0.300**", "**0.200**"]
    # in-test: beta (0.80 + 0.84)/2 = 0.82 -> gap +0.320; gamma 0.96 -> +0.660; alpha 0.91 -> +0.710
    assert [row[5] for row in rot] == ["0.820", "0.960", "0.910"]
    assert [row[6] for row in rot] == ["+0.320", "+0.660", "+0.710"]
    assert rot[0][7:9] == ["0.400 ± 0.050", "0.600 ± 0.050"]
    assert rot[1][3] == "1,290"
    # delta scores 0.90, higher than every rot entry, but is ranked only within its own track.
    assert [(row[0], row[1]) for row in tables["fixture-shift"]] == [("1", "delta")]
    assert (board / "out_test_vs_angles.png").read_bytes()[:4] == b"\x89PNG"
    assert _cli(capsys, board, "check") == (0, "4 entries valid\n", "")


def test_check_fails_when_the_readme_is_stale(board, capsys):
    assert _cli(capsys, board, "build")[0] == 0
    path = board / "entries" / ALPHA
    data = json.loads(path.read_text())
    data["results"][0]["out_test"]["mean"] = 0.95
    path.write_text(json.dumps(data))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "out of date" in err and "orbitbench leaderboard build" in err


def _mutations() -> dict[str, tuple[callable, str]]:
    def delete(key):
        return lambda e: e.pop(key)

    def setter(path, value):
        def apply(entry):
            target = entry
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value

        return apply

    return {
        "missing param_count": (delete("param_count"), "param_count: Field required"),
        "missing results": (delete("results"), "results: Field required"),
        "string param_count": (setter(["param_count"], "many"), "param_count: Input should be a valid integer"),
        "float param_count": (setter(["param_count"], 1.5), "param_count: Input should be a valid integer"),
        "bool as number": (setter(["results", 0, "out_test", "mean"], True), "results.0.out_test.mean"),
        "accuracy above 1": (setter(["results", 0, "out_test", "mean"], 1.2), "results.0.out_test.mean: Input should be less than or equal to 1"),
        "accuracy below 0": (setter(["results", 1, "in_test", "mean"], -0.1), "results.1.in_test.mean: Input should be greater than or equal to 0"),
        "spread above 0.5": (setter(["results", 0, "in_test", "std"], 0.7), "results.0.in_test.std"),
        "unknown field": (setter(["score"], 0.9), "score: Extra inputs are not permitted"),
        "orders differ from protocol": (setter(["protocol", "n_poses"], [2, 8]), "results are for n_poses [2, 4]"),
        "wrong count": (setter(["results", 0, "out_test", "n"], 3), "n must be 2"),
        "bad date": (setter(["date"], "yesterday"), "date: Input should be a valid date"),
        "unknown datamodule": (setter(["protocol", "datamodule"], "ScaledMNIST"), "protocol.datamodule"),
        "bad builder": (setter(["builder"], "paper_mlp"), "builder: String should match pattern"),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_check_rejects_each_bad_entry_with_one_line(board, capsys, case):
    mutate, expected = _mutations()[case]
    path = board / "entries" / ALPHA
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    code, out, err = _cli(capsys, board, "check")
    assert code == 2 and out == ""
    assert err.startswith(f"orbitbench: {path}: ") and err.count("\n") == 1, err
    assert expected in err


def test_check_rejects_invalid_json_duplicates_mixed_protocols_and_odd_names(board, capsys):
    entries = board / "entries"
    alpha = json.loads((entries / ALPHA).read_text())

    (entries / "fixture-rot__broken.json").write_text('{"name": "broken",')
    assert "not valid JSON" in _cli(capsys, board, "check")[2]
    (entries / "fixture-rot__broken.json").unlink()

    # The same experiment under another name is a duplicate.
    (entries / "fixture-rot__alpha2.json").write_text(json.dumps({**alpha, "name": "alpha2"}))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "duplicate of" in err and "fixture-rot__alpha.json" in err
    (entries / "fixture-rot__alpha2.json").unlink()

    # One track, one protocol: other images make another track.
    other = {**alpha, "name": "other", "config": {"trainer.max_epochs": 99},
             "protocol": {**alpha["protocol"], "data": {"seeds_per_class": 50, "source": "mnist5k"}}}
    (entries / "fixture-rot__other.json").write_text(json.dumps(other))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "protocol.data differs" in err and "new track" in err
    (entries / "fixture-rot__other.json").unlink()

    (entries / "alpha.json").write_text((entries / ALPHA).read_text())
    (entries / ALPHA).unlink()
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "file name must be 'fixture-rot__alpha.json'" in err


# ----------------------------------------------------------------------------------------------
# `leaderboard add` from a sweep directory
# ----------------------------------------------------------------------------------------------

SWEEP_YAML = """\
name: fixture
track: fixture-rot
datamodule: RotatedMNIST
grid:
  model: [paper_mlp]
  n_angles: [2, 4]
  leave_out_class: [3, 7]
  seed: [0]
fit:
  data.source: mnist5k
  data.seeds_per_class: {spc}
  trainer.max_epochs: 12
"""
# (n_angles, leave-out class) -> (in-test, out-test), chosen by hand:
#   n=2: out 0.2, 0.4 -> mean 0.3, std 0.1; in 0.8, 0.9 -> mean 0.85, std 0.05
#   n=4: out 0.5, 0.7 -> mean 0.6, std 0.1; in 0.9, 0.9 -> mean 0.9, std 0
#   ranking score: (0.3 + 0.6) / 2 = 0.45, between beta (0.50) and gamma (0.30)
CELL_ACCURACIES = {(2, 3): (0.8, 0.2), (2, 7): (0.9, 0.4), (4, 3): (0.9, 0.5), (4, 7): (0.9, 0.7)}


def _sweep_dir(tmp_path: Path, spc: int = 30, overrides: dict | None = None) -> Path:
    """A finished sweep directory as `orbitbench sweep run` leaves it (sweep.yaml + each cell's record.json)."""
    root = tmp_path / f"sweep{spc}"
    root.mkdir()
    (root / "sweep.yaml").write_text(SWEEP_YAML.format(spc=spc))
    for (n, c), (in_test, out_test) in CELL_ACCURACIES.items():
        cell = f"paper_mlp-n{n}-c{c}-s0"
        metrics = {"train_acc": 0.95, "in_test_acc": in_test, "out_test_acc": out_test,
                   "in_test_acc_per_pose": [in_test] * n, **(overrides or {}).get((n, c), {})}
        record = {
            "stage": "fit", "model": {"backbone": "paper_mlp", "n_params": 468864},
            "data": {"datamodule": "RotatedMNIST", "n_poses": n, "hparams": {"leave_out_class": c, "seeds_per_class": spc}},
            "seeds": {"seed_everything": 0, "data_split_seed": 125}, "metrics": metrics, "epochs": 12,
            "global_step": 100, "log_dir": str(root / "cells" / cell), "last_checkpoint": None, "wall_time_s": 3.0,
            "versions": {"torch": "2.14.1"}, "git_commit": None, "finished": f"2026-11-2{n}T05:00:00+00:00",
        }
        (root / "cells" / cell).mkdir(parents=True)
        (root / "cells" / cell / "record.json").write_text(json.dumps(record))
    return root


def test_add_summarises_a_sweep_and_build_ranks_it(board, tmp_path, capsys):
    sweep_dir = _sweep_dir(tmp_path)
    code, out, err = _cli(capsys, board, "add", str(sweep_dir), "--name", "mlp12", "--model", "paper_mlp")
    assert code == 0, err
    entry = json.loads((board / "entries" / "fixture-rot__mlp12.json").read_text())
    assert entry["builder"] == "orbitbench.models.paper:paper_mlp"
    assert entry["param_count"] == 468864 and entry["seeds"] == [0] and entry["date"] == "2026-11-24"
    assert entry["config"] == {"trainer.max_epochs": 12}
    assert entry["protocol"] == {"datamodule": "RotatedMNIST", "n_poses": [2, 4], "leave_out_classes": [3, 7],
                                 "data": {"seeds_per_class": 30, "source": "mnist5k"}}
    n2, n4 = entry["results"]
    assert n2["out_test"] == pytest.approx({"mean": 0.3, "std": 0.1, "n": 2})
    assert n2["in_test"] == pytest.approx({"mean": 0.85, "std": 0.05, "n": 2})
    assert n4["out_test"] == pytest.approx({"mean": 0.6, "std": 0.1, "n": 2})
    assert n4["in_test"] == pytest.approx({"mean": 0.9, "std": 0.0, "n": 2})
    assert n2["train"]["mean"] == pytest.approx(0.95) and n2["spectral_predicted"] is None

    assert _cli(capsys, board, "build")[0] == 0
    rot = _tables((board / "README.md").read_text())["fixture-rot"]
    assert [row[1] for row in rot] == ["beta", "mlp12", "gamma", "alpha"]
    assert rot[1][4] == "**0.450**" and rot[1][6] == "+0.425"  # in-test (0.85 + 0.9)/2 = 0.875

    # Adding it again is refused; --replace overwrites.
    code, _, err = _cli(capsys, board, "add", str(sweep_dir), "--name", "mlp12", "--model", "paper_mlp")
    assert code == 2 and "already exists" in err
    assert _cli(capsys, board, "add", str(sweep_dir), "--name", "mlp12", "--model", "paper_mlp", "--replace")[0] == 0


def _refused(capsys, board: Path, sweep_dir: Path, expected: str) -> None:
    before = sorted(p.name for p in (board / "entries").iterdir())
    code, out, err = _cli(capsys, board, "add", str(sweep_dir))
    assert code == 2 and err.startswith("orbitbench: ") and err.count("\n") == 1, err
    assert expected in err
    assert sorted(p.name for p in (board / "entries").iterdir()) == before  # nothing written


def test_add_refuses_incomplete_malformed_or_foreign_sweeps(board, tmp_path, capsys):
    incomplete = _sweep_dir(tmp_path)
    (incomplete / "cells" / "paper_mlp-n4-c7-s0" / "record.json").unlink()
    _refused(capsys, board, incomplete, "incomplete for paper_mlp: 1 cells have no result (e.g. paper_mlp-n4-c7-s0)")

    malformed = _sweep_dir(tmp_path, spc=31, overrides={(2, 3): {"out_test_acc": 1.5}})
    _refused(capsys, board, malformed, "record.json: metrics.out_test_acc: Input should be less than or equal to 1")

    _refused(capsys, board, tmp_path, "is not a sweep directory")

    # Same track, other images: the track's protocol would no longer be one protocol.
    other_protocol = _sweep_dir(tmp_path, spc=50)
    _refused(capsys, board, other_protocol, "protocol.data differs")


def test_entry_parse_error_is_an_orbitbench_error():
    with pytest.raises(OrbitbenchError, match=r"^x\.json: param_count"):
        data = json.loads((FIXTURES / "entries" / ALPHA).read_text())
        data["param_count"] = 0
        leaderboard.parse_entry(json.dumps(data), "x.json")


def test_repository_leaderboard_is_valid_and_rendered(capsys):
    """The committed entries pass the schema and README.md matches them (`leaderboard check`)."""
    code, out, err = _cli(capsys, REPO_LEADERBOARD, "check")
    assert code == 0, err
