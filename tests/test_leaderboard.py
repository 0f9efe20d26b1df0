"""`orbitbench leaderboard`: entries built from real run records, recomputed and checked.

The fixture sweep (tests/fixtures/leaderboard/sweep: sweep.yaml and each cell's record.json) was
written by a real run of tests/fixtures/leaderboard/sweeps/tiny.yaml on the embedded digits.
Expected numbers are computed here from the records' JSON with numpy / scipy, not by the code
under test; every forgery of the issue is built from these real entries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from orbitbench.cli import main as cli_main
from orbitbench import leaderboard
from orbitbench.run.record import LEGACY_DATA_NAMES
from orbitbench.errors import OrbitbenchError

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
SWEEP, SWEEPS = FIXTURES / "sweep", FIXTURES / "sweeps"
REPO = Path(__file__).parent.parent
MLP, GAP, C4 = "tiny-rot__paper_mlp.json", "tiny-rot__cnn_gap.json", "tiny-rot__c4_pooled_paper_mlp.json"


def _cli(capsys, root: Path, *args: str, sweeps: Path = SWEEPS) -> tuple[int, str, str]:
    code = cli_main(["leaderboard", args[0], "--root", str(root), "--sweeps", str(sweeps), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _records(model_slug: str) -> dict[str, dict]:
    """The fixture cells' records as written (schema 1), with the DataModule settings under today's
    names (`seeds_per_class` is `images_per_class` since, as `RunRecord` reads it)."""
    records = {p.parent.name: json.loads(p.read_text()) for p in sorted((SWEEP / "cells").glob(f"{model_slug}-n*/record.json"))}
    for record in records.values():
        hparams = record["data"]["hparams"]
        record["data"]["hparams"] = {LEGACY_DATA_NAMES.get(k, k): v for k, v in hparams.items()}
    return records


@pytest.fixture(scope="module")
def built_board(tmp_path_factory) -> Path:
    """A leaderboard with the fixture sweep's three entries, built and rendered (once per module)."""
    root = tmp_path_factory.mktemp("built") / "board"
    (root / "entries").mkdir(parents=True)
    common = ["--root", str(root), "--sweeps", str(SWEEPS)]
    assert cli_main(["leaderboard", "add", *common, str(SWEEP), "--authors", "[Ada Lovelace]", "--code", "https://example.org/net"]) == 0
    assert cli_main(["leaderboard", "build", *common]) == 0
    return root


@pytest.fixture
def board(built_board, tmp_path) -> Path:
    """A private copy of the built leaderboard."""
    root = tmp_path / "board"
    shutil.copytree(built_board, root)
    return root


def _tables(readme: str) -> dict[str, list[dict[str, str]]]:
    """Track -> rows of its table as {header: cell text}."""
    tables, track, header = {}, None, None
    for line in readme.splitlines():
        if line.startswith("## Track `"):
            track, header = line.split("`")[1], None
            tables[track] = []
        elif track and line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            else:
                tables[track].append(dict(zip(header, cells)))
    return tables


# ---- add: cells kept, numbers recomputed --------------------------------------------------------


def test_add_keeps_every_cell_record_and_derives_the_numbers_from_them(board):
    entry = json.loads((board / "entries" / MLP).read_text())
    records = _records("paper_mlp")
    assert len(records) == 8 and sorted(c["cell"] for c in entry["cells"]) == sorted(records)
    for cell in entry["cells"]:
        record = records[cell["cell"]]
        # (fixture records predate the resolved-source fields, which read back as None)
        assert cell["data"] == {"digits": None, "n_images": None, **record["data"]} and cell["metrics"] == record["metrics"]
        assert cell["wall_time_s"] == record["wall_time_s"] and cell["seed"] == record["seeds"]["seed_everything"]
    # The protocol is what the cells ran: every DataModule setting but the grid axes and loading.
    hparams = next(iter(records.values()))["data"]["hparams"]
    assert entry["protocol"]["data"] == {k: v for k, v in hparams.items()
                                         if k not in ("n_angles", "leave_out_class", "batch_size", "num_workers", "data_dir", "download")}
    assert entry["protocol"]["data"]["images_per_class"] == 10 and entry["protocol"]["seeds"] == [0, 1]
    assert entry["provenance"]["git_commit"] == next(iter(records.values()))["git_commit"]
    assert entry["provenance"]["versions"]["torch"] and entry["authors"] == ["Ada Lovelace"]
    assert entry["method"] == "supervised" and entry["invariance"] == "none"
    # Per group order: mean and population std over the 4 cells (2 classes x 2 seeds).
    for result in entry["results"]:
        out = [r["metrics"]["out_test_acc"] for r in records.values() if r["data"]["n_poses"] == result["n_poses"]]
        assert result["out_test"]["mean"] == pytest.approx(np.mean(out), abs=1e-6)
        assert result["out_test"]["std"] == pytest.approx(np.std(out), abs=1e-6) and result["out_test"]["n"] == 4
    # The score: out-test averaged over group orders per (class, seed) unit, 95% t-interval over units.
    units: dict[tuple, list[float]] = {}
    for r in records.values():
        units.setdefault((r["data"]["hparams"]["leave_out_class"], r["seeds"]["seed_everything"]), []).append(r["metrics"]["out_test_acc"])
    scores = np.array([np.mean(v) for v in units.values()])
    half = stats.t.ppf(0.975, 3) * scores.std(ddof=1) / 2
    assert entry["score"]["mean"] == pytest.approx(scores.mean(), abs=1e-6) and entry["score"]["n"] == 4
    assert entry["score"]["low"] == pytest.approx(max(0.0, scores.mean() - half), abs=1e-6)
    assert entry["score"]["high"] == pytest.approx(min(1.0, scores.mean() + half), abs=1e-6)
    c4 = json.loads((board / "entries" / C4).read_text())
    assert c4["invariance"] == "built-in:c4"  # from the model registry


def test_build_renders_intervals_paired_differences_rank_ranges_and_badges(board, capsys):
    rows = _tables((board / "README.md").read_text())["tiny-rot"]
    entries = {p.name: json.loads(p.read_text()) for p in (board / "entries").glob("*.json")}
    by_name = {e["name"]: e for e in entries.values()}
    assert [r["Entry"] for r in rows] == sorted(by_name, key=lambda n: (-by_name[n]["score"]["mean"], n))
    for row in rows:
        e = by_name[row["Entry"]]
        assert row["Out-test [95% CI]"] == f"**{e['score']['mean']:.3f} [{e['score']['low']:.3f}, {e['score']['high']:.3f}]**"
        assert row["Verified"] == "reported" and row["Cells"] == "8"
        assert row["Invariance"] == e["invariance"] and row["Params"] == f"{e['param_count']:,}"
    # Paired by unit, against paper_mlp: differences of unit scores, t-interval over the 4 units.
    def units(e):
        out: dict[tuple, list[float]] = {}
        for c in e["cells"]:
            out.setdefault((c["data"]["hparams"]["leave_out_class"], c["seed"]), []).append(c["metrics"]["out_test_acc"])
        return {k: np.mean(v) for k, v in out.items()}
    base = units(by_name["paper_mlp"])
    for row in rows:
        if row["Entry"] == "paper_mlp":
            assert row["Δ vs paper_mlp [95% CI]"] == ""
            continue
        mine = units(by_name[row["Entry"]])
        d = np.array([mine[k] - base[k] for k in sorted(base)])
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if d.std() > 0 else 0.0
        assert row["Δ vs paper_mlp [95% CI]"] == f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"
    assert (board / "index.html").is_file() and (board / "out_test_vs_angles.png").read_bytes()[:4] == b"\x89PNG"
    assert _cli(capsys, board, "check") == (0, "3 entries valid\n", "")


def test_tracks_with_entries_come_before_the_empty_ones(board):
    """A reader opens the page on a ranked table, not on a track nobody has entered yet."""
    headings = [line for line in (board / "README.md").read_text().splitlines() if line.startswith("## Track")]
    assert headings == ["## Track `tiny-rot`", "## Track `tiny-one`"]  # by name the empty one would lead
    html = (board / "index.html").read_text()
    assert html.index("tiny-rot") < html.index("tiny-one")


def test_rank_ranges_tie_entries_whose_paired_interval_contains_zero():
    from orbitbench.leaderboard.intervals import rank_ranges

    # a is ahead of b and c in every unit by 0.2 +- 0.01; b and c differ by +-0.1 alternately (tied).
    units = [(c, 0) for c in range(6)]
    b = {u: 0.5 + (0.1 if i % 2 else -0.1) for i, u in enumerate(units)}
    c = {u: 0.5 for u in units}
    a = {u: 0.7 + 0.01 * (i % 2) + 0.1 * (i % 2 == 0) for i, u in enumerate(units)}
    assert rank_ranges({"a": a, "b": b, "c": c}) == {"a": (1, 1), "b": (2, 3), "c": (2, 3)}


# ---- forgeries: each one line from `check`, naming the field ---------------------------------------


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set(*path_and_value):
    *path, value = path_and_value

    def apply(entry):
        target = entry
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return apply


FORGERIES = {
    "out-test raised to 0.95": (_set("results", 0, "out_test", "mean", 0.95), "results (n_poses=2).out_test does not match the cells"),
    "score raised to 0.99": (_set("score", "mean", 0.99), "score does not match the cells"),
    "cell and aggregates edited together": (_set("cells", 0, "metrics", "out_test_acc", 0.99), "results (n_poses=2).out_test does not match"),
    "model that does not exist": (_set("model", "paper_mlp_xxl"), "model: unknown model 'paper_mlp_xxl'"),
    "model swapped for another real one": (_set("model", "paper_convnet"), "builder is 'orbitbench.models.paper:paper_mlp' but 'paper_convnet'"),
    "param_count 7": (_set("param_count", 7), "param_count is 7 but building paper_mlp gives 468864"),
    "cell param count 7": (_set("cells", 3, "model", "n_params", 7), "reports 7 parameters; paper_mlp has 468864"),
    "protocol edited": (_set("protocol", "data", "images_per_class", 50), "protocol does not match the cells (data.images_per_class is 50"),
    "a cell trained on other images": (_set("cells", 2, "data", "hparams", "images_per_class", 50), "ran different data.images_per_class (10 vs 50)"),
    "every cell on other held-out poses": (lambda e: [c["data"]["hparams"].update(held_out_poses=[0, 1]) for c in e["cells"]],
                                           "the cells' data.held_out_poses is [0, 1], the track's is [0]; a new protocol needs a new track"),
    "a cell missing": (lambda e: e["cells"].pop(), "no cell for (n_poses, leave_out_class, seed)"),
    "dummy config key": (_set("config", "dummy", 1), "config: 'dummy' is not an `orbitbench fit` setting"),
    "config epochs differ from the cells'": (_set("config", "trainer.max_epochs", 50), "config trainer.max_epochs is 50 but cell"),
    "notes with a newline": (_set("notes", "fine\n## Injected heading\n| 1 | fake | row |"), "notes: must be one plain line"),
    "notes with a table pipe": (_set("notes", "a | b"), "notes: must be one plain line"),
    "author with html": (_set("authors", ["<script>x</script>"]), "authors: must be one plain line"),
    "method with a newline": (_set("method", "supervised\n# big"), "method: String should match pattern"),
    "paper link not a URL": (_set("paper", "javascript:alert(1)"), "paper: String should match pattern"),
    "unknown invariance": (_set("invariance", "invariant"), "invariance: String should match pattern"),
    "unknown track": (_set("track", "other-track"), "file name must be"),
    "init prediction claimed for a challenger": (
        lambda e: [e.update(method="pose_consistency")] + [c["model"].update(method="pose_consistency") or
                                                           c.update(predicted={"init": 0.9}, kappa={"init": 0.5})
                                                           for c in e["cells"]],
        "has a 'init' kernel prediction, which method 'pose_consistency' does not define (it defines trained)"),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_check_rejects_each_forgery_with_one_line_naming_the_field(board, capsys, case):
    change, expected = FORGERIES[case]
    path = board / "entries" / MLP
    _edit(path, change)
    code, out, err = _cli(capsys, board, "check")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"orbitbench: {path}: ") and expected in err, err


def test_copies_are_duplicates_and_the_track_must_exist(board, capsys):
    entries = board / "entries"
    mlp = json.loads((entries / MLP).read_text())
    (entries / "tiny-rot__copy.json").write_text(json.dumps({**mlp, "name": "copy"}))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "duplicate of" in err and MLP in err
    # A dummy key does not make a copy a new experiment: it is not a fit setting at all.
    (entries / "tiny-rot__copy.json").write_text(json.dumps({**mlp, "name": "copy", "config": {**mlp["config"], "trainer.dummy": 1}}))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "config: 'trainer.dummy' is not an `orbitbench fit` setting" in err
    (entries / "tiny-rot__copy.json").unlink()
    other = {**mlp, "track": "other-track"}
    (entries / MLP).unlink()
    (entries / "other-track__paper_mlp.json").write_text(json.dumps(other))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "track 'other-track' is not defined by any sweeps/*.yaml" in err


def test_notes_are_escaped_in_markdown_and_html(board, capsys):
    _edit(board / "entries" / MLP, _set("notes", "see [this](http://x) **now** # _here_"))
    assert _cli(capsys, board, "build")[0] == 0
    readme = (board / "README.md").read_text()
    assert r"see \[this\]\(http://x\) \*\*now\*\* \# \_here\_" in readme and "[this](http://x)" not in readme
    page = (board / "index.html").read_text()
    assert "see [this](http://x) **now** # _here_" in page  # HTML: text, never markup


def test_check_fails_when_a_rendering_is_stale(board, capsys):
    (board / "index.html").write_text((board / "index.html").read_text().replace("paper_mlp", "paper_mlq"))
    code, _, err = _cli(capsys, board, "check")
    assert code == 2 and "index.html is out of date" in err


# ---- add refuses --------------------------------------------------------------------------------


def _copy_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    shutil.copytree(SWEEP, root)
    return root


def test_add_refuses_a_cell_whose_data_differs_from_the_track_naming_the_setting(tmp_path, capsys):
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    sweep = _copy_sweep(tmp_path)
    record = sweep / "cells" / "paper_mlp-n2-c3-s0" / "record.json"
    _edit(record, _set("data", "hparams", "in_test_fraction", 0.5))
    code, _, err = _cli(capsys, root, "add", str(sweep), "--models", "[paper_mlp]")
    assert code == 2 and err.count("\n") == 1
    assert "ran different data.in_test_fraction (0.5 vs 0.1)" in err or "data.in_test_fraction is 0.5" in err, err
    assert list((root / "entries").iterdir()) == []
    _edit(record, _set("data", "hparams", "in_test_fraction", 0.1))
    for r in (sweep / "cells").glob("paper_mlp-*/record.json"):
        _edit(r, _set("data", "hparams", "in_test_fraction", 0.2))
    code, _, err = _cli(capsys, root, "add", str(sweep), "--models", "[paper_mlp]")
    assert code == 2 and "a cell's data.in_test_fraction is 0.2, the track's is 0.1; it is not track 'tiny-rot'" in err


def test_add_refuses_an_incomplete_sweep_and_bad_free_text(tmp_path, capsys):
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    sweep = _copy_sweep(tmp_path)
    shutil.rmtree(sweep / "cells" / "cnn_gap-n4-c7-s1")
    code, _, err = _cli(capsys, root, "add", str(sweep), "--models", "[cnn_gap]")
    assert code == 2 and "incomplete for cnn_gap: 1 cells have no result (e.g. cnn_gap-n4-c7-s1)" in err
    code, _, err = _cli(capsys, root, "add", str(sweep), "--models", "[paper_mlp]", "--notes", "two\nlines")
    assert code == 2 and "notes: must be one plain line" in err and list((root / "entries").iterdir()) == []


# ---- kernel predictions ------------------------------------------------------------------------


def test_kernel_predictions_are_aggregated_shown_and_plotted(tmp_path, capsys):
    sweep = _copy_sweep(tmp_path)
    expected: dict[int, dict[str, list[float]]] = {}
    expected_kappa: dict[int, dict[str, list[float]]] = {}
    for i, path in enumerate(sorted((sweep / "cells").glob("paper_mlp-*/record.json"))):
        record = json.loads(path.read_text())
        values = {"infinite": 0.1 + 0.05 * i, "init": 0.3 + 0.01 * i, "trained": 0.5}
        kappas = {"infinite": 0.2 - 0.1 * i, "init": 0.0, "trained": 0.5}
        record["schema_version"], record["predictions"] = 2, {"probe": {}, "network": {}, "predictors": {
            k: {"spectral_out_test_acc": v, "kappa": kappas[k], "other": 1} for k, v in values.items()}}
        path.write_text(json.dumps(record))
        for k, v in values.items():
            expected.setdefault(record["data"]["n_poses"], {}).setdefault(k, []).append(v)
            expected_kappa.setdefault(record["data"]["n_poses"], {}).setdefault(k, []).append(kappas[k])
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    assert _cli(capsys, root, "add", str(sweep))[0] == 0
    assert _cli(capsys, root, "build")[0] == 0
    entry = json.loads((root / "entries" / MLP).read_text())
    for result in entry["results"]:
        for name, values in expected[result["n_poses"]].items():
            assert result["predicted"][name]["mean"] == pytest.approx(np.mean(values), abs=1e-6)
    gap = json.loads((root / "entries" / GAP).read_text())
    assert all(r["predicted"] == {} for r in gap["results"])
    rows = {r["Entry"]: r for r in _tables((root / "README.md").read_text())["tiny-rot"]}
    means = {k: np.mean([np.mean(expected[n][k]) for n in expected]) for k in ("infinite", "init")}
    kappa = {k: np.mean([np.mean(expected_kappa[n][k]) for n in expected]) for k in ("infinite", "init")}
    for k in ("infinite", "init"):
        assert rows["paper_mlp"][f"pred. {k} (κ)"] == f"{means[k]:.3f} (κ {kappa[k]:+.2f})"
    assert rows["cnn_gap"]["pred. infinite (κ)"] == ""
    page = (root / "index.html").read_text()
    assert 'data-plot="predicted_vs_actual"' in page
    for n, by_name in expected.items():
        out = [r["out_test"]["mean"] for r in entry["results"] if r["n_poses"] == n][0]
        assert f'data-entry="paper_mlp" data-predictor="infinite" data-n="{n}" data-x="{np.mean(by_name["infinite"]):.6f}" data-y="{out:.6f}"' in page
    # Forging a prediction is caught like any other number.
    _edit(root / "entries" / MLP, _set("results", 0, "predicted", "init", "mean", 0.9))
    code, _, err = _cli(capsys, root, "check")
    assert code == 2 and "results (n_poses=2).predicted does not match the cells" in err


# ---- the repository's leaderboard --------------------------------------------------------------


def test_repository_leaderboard_is_valid_and_rendered(capsys):
    """The committed entries are recomputed from their cells; README.md and index.html match them."""
    code, out, err = _cli(capsys, REPO / "leaderboard", "check", sweeps=REPO / "sweeps")
    assert code == 0, err


def test_the_track_files_define_their_protocols():
    from orbitbench.leaderboard.integrity import load_tracks

    tracks = load_tracks(REPO / "sweeps")
    assert {"mnist5k-quick", "mnist5k-cpu"} <= set(tracks)
    cpu = tracks["mnist5k-cpu"].protocol
    assert cpu.leave_out_classes == list(range(10)) and cpu.n_poses == [4, 8]
    assert cpu.data["images_per_class"] == 20 and cpu.data["source"] == "mnist5k"
    # the challengers' and steerable sweep files are on the same track: same protocol, checked on load
    assert tracks["mnist5k-cpu"].path.name in {"cpu_track.yaml", "cpu_track_challengers.yaml", "cpu_track_steerable.yaml"}
    # the ranked track on full MNIST: its three sweep files agree (checked on load), on the paper's data
    full = tracks["mnist-cpu"].protocol
    assert full.n_poses == [4, 8] and full.leave_out_classes == list(range(10)) and full.seeds == [0]
    assert full.data["source"] == "mnist" and full.data["images_per_class"] is None  # all 60,000 digits
    paper = tracks["mnist-paper"].protocol
    assert paper.n_poses == [2, 4, 8, 16] and paper.data["interpolation"] == "nearest" and paper.data["source"] == "mnist"
    assert tracks["mnist-paper-gpu"].protocol.n_poses == [2, 4, 8, 16, 32, 64]


def test_a_track_names_its_data_source(tmp_path):
    """`auto` is full MNIST on one machine and the subset on another: no track may rest on it."""
    from orbitbench.leaderboard.integrity import load_tracks

    sources = {name: track.protocol.data["source"] for name, track in load_tracks(REPO / "sweeps").items()}
    assert sources["mnist-paper"] == "mnist" and set(sources.values()) == {"mnist", "mnist5k"}
    text = (REPO / "sweeps" / "cpu_quick.yaml").read_text()
    assert "data.source: mnist5k" in text
    (tmp_path / "cpu_quick.yaml").write_text(text.replace("data.source: mnist5k", "data.source: auto"))
    with pytest.raises(OrbitbenchError, match=r"cpu_quick\.yaml: track 'mnist5k-quick' has data.source auto, which resolves per machine"):
        load_tracks(tmp_path)


def test_parse_entry_error_is_one_orbitbench_line():
    with pytest.raises(OrbitbenchError, match=r"^x\.json: not valid JSON"):
        leaderboard.parse_entry('{"name": ', "x.json")


def test_param_count_is_that_of_the_network_the_method_trains():
    """`latent_operator` adds an encoder to its backbone: the count `check` recomputes is the whole
    trained network's, the same as the LightningModule's own `net`."""
    from orbitbench.leaderboard.integrity import built_param_count
    from orbitbench.run.module import OrbitClassifier

    for method in ("supervised", "pose_consistency", "latent_operator"):
        module = OrbitClassifier("paper_mlp", method=method)
        assert built_param_count("paper_mlp", None, method) == sum(p.numel() for p in module.net.parameters())
    assert built_param_count("paper_mlp", None, "latent_operator") > built_param_count("paper_mlp", None)


def test_the_baseline_difference_is_to_the_supervised_paper_mlp(board):
    """A challenger on the paper MLP backbone sorts above the supervised MLP, yet the Δ column of
    every other entry is still paired against the supervised one."""
    from orbitbench.leaderboard.render import track_tables

    mlp = leaderboard.parse_entry((board / "entries" / MLP).read_text(), MLP)
    gap = leaderboard.parse_entry((board / "entries" / GAP).read_text(), GAP)
    challenger = mlp.model_copy(update={"name": "paper_mlp__pose_consistency", "method": "pose_consistency",
                                        "score": mlp.score.model_copy(update={"mean": 2.0})})
    rows = {r.entry.name: r for r in track_tables({"a": challenger, "b": mlp, "c": gap})["tiny-rot"]}
    assert rows["paper_mlp"].diff is None and rows["paper_mlp__pose_consistency"].diff is not None
    mlp_scores = [c.metrics.out_test_acc for c in mlp.cells]
    gap_scores = [c.metrics.out_test_acc for c in gap.cells]
    assert rows["cnn_gap"].diff[0] == pytest.approx(np.mean(gap_scores) - np.mean(mlp_scores), abs=1e-9)


def test_a_re_seed_replaces_an_entry_whose_track_file_has_moved_on(board, tmp_path, capsys):
    """A re-seed changes the track's sweep file first; the entry it replaces then no longer matches
    the file. `add --replace` checks the new entry and every other one, not the one it replaces."""
    sweeps, sweep = tmp_path / "sweeps", _copy_sweep(tmp_path)
    shutil.copytree(SWEEPS, sweeps)
    setting = "model_fit:\n  paper_mlp:\n    trainer.log_every_n_steps: 7\n"
    for spec in (sweeps / "tiny.yaml", sweep / "sweep.yaml"):
        spec.write_text(spec.read_text().replace("model_fit: {}\n", "") + setting)
    code, _, err = _cli(capsys, board, "check", sweeps=sweeps)
    assert code == 2 and MLP in err and "log_every_n_steps" in err and err.count("\n") == 1
    before = {p.name: p.read_bytes() for p in (board / "entries").iterdir()}
    code, _, err = _cli(capsys, board, "add", str(sweep), "--models", "[paper_mlp]", sweeps=sweeps)
    assert code == 2 and "already exists; pass --replace" in err  # still refused without --replace
    assert _cli(capsys, board, "add", str(sweep), "--models", "[paper_mlp]", "--replace", "true", sweeps=sweeps)[0] == 0
    after = {p.name: p.read_bytes() for p in (board / "entries").iterdir()}
    assert after.keys() == before.keys() and after[MLP] != before[MLP]
    assert json.loads(after[MLP])["config"]["trainer.log_every_n_steps"] == 7
    assert {n: b for n, b in after.items() if n != MLP} == {n: b for n, b in before.items() if n != MLP}
    # the other entries are still checked: one that no longer matches the file refuses the add
    (sweeps / "tiny.yaml").write_text((sweeps / "tiny.yaml").read_text() + "  cnn_gap:\n    trainer.log_every_n_steps: 9\n")
    code, _, err = _cli(capsys, board, "add", str(sweep), "--models", "[paper_mlp]", "--replace", "true", sweeps=sweeps)
    assert code == 2 and GAP in err and err.count("\n") == 1
