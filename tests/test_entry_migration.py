"""Every committed leaderboard entry, as it was committed at schema 2 (tests/fixtures/legacy_entries:
the files of the last commit before schemas 3 and 4), migrates to exactly the committed file, and the
migrated entries pass `leaderboard check`; `check` refuses an old schema with one line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from orbitbench.cli import main as cli_main
from orbitbench.leaderboard.migrate import migrate_folder, migrated

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "tests" / "fixtures" / "legacy_entries"
ENTRIES = REPO / "leaderboard" / "entries"


def _legacy(name: str) -> dict:
    return json.loads(gzip.decompress((LEGACY / f"{name}.gz").read_bytes()))


LEGACY_NAMES = sorted(p.name.removesuffix(".gz") for p in LEGACY.glob("*.json.gz"))
SCHEMA_4_DATE = "2026-12-07"  # entries added since were written at schema 4 by `leaderboard add`


def _cell_metrics(entry: dict) -> list[dict]:
    return [c["metrics"] for c in entry["cells"]]


def _reseeded(name: str) -> bool:
    """The committed entry holds other cells than its schema-2 file: it was re-seeded since."""
    return _cell_metrics(json.loads((ENTRIES / name).read_text())) != _cell_metrics(_legacy(name))


def test_there_is_a_legacy_file_for_every_committed_entry_seeded_before_schema_4() -> None:
    committed = sorted(p.name for p in ENTRIES.glob("*.json"))
    assert set(LEGACY_NAMES) <= set(committed)  # no schema-2 entry was dropped
    for name in sorted(set(committed) - set(LEGACY_NAMES)):  # born at schema 4
        entry = json.loads((ENTRIES / name).read_text())
        assert entry["schema_version"] == 4 and entry["date"] >= SCHEMA_4_DATE, name


@pytest.mark.parametrize("name", LEGACY_NAMES)
def test_a_schema_2_entry_migrates_to_the_committed_file(tmp_path, name) -> None:
    """Byte for byte where the entry was not re-seeded since; a re-seeded one's schema-2 file still
    migrates, to an entry with its own cells, and only its cells differ from the committed file."""
    old = _legacy(name)
    assert old["schema_version"] == 2 and "seeds_per_class" in old["protocol"]["data"]
    folder = tmp_path / "entries"
    folder.mkdir()
    (folder / name).write_text(json.dumps(old))
    assert migrate_folder(folder) == [folder / name]
    if _reseeded(name):
        committed = json.loads((ENTRIES / name).read_text())
        assert json.loads((folder / name).read_text())["protocol"] == committed["protocol"]
    else:
        assert (folder / name).read_text() == (ENTRIES / name).read_text()
    assert migrate_folder(folder) == []  # a current entry is left as it is
    new = json.loads((folder / name).read_text())
    assert new["schema_version"] == 4 and "seeds_per_class" not in new["protocol"]["data"]
    assert [c["metrics"] for c in new["cells"]] == [c["metrics"] for c in old["cells"]]  # no measured number moved
    assert migrated(new) is new


def test_check_refuses_an_unmigrated_entry_with_one_line(tmp_path, capsys) -> None:
    root = tmp_path / "board"
    shutil.copytree(REPO / "leaderboard", root)
    name = "mnist5k-quick__paper_mlp.json"
    (root / "entries" / name).write_text(json.dumps(_legacy(name)))
    assert cli_main(["leaderboard", "check", "--root", str(root), "--sweeps", str(REPO / "sweeps")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("orbitbench: ") and "\n" not in err and "schema_version 2 is older" in err and "leaderboard migrate" in err, err
    assert cli_main(["leaderboard", "migrate", "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith("orbitbench leaderboard migrate: 1 entry rewritten")
    assert (root / "entries" / name).read_text() == (ENTRIES / name).read_text()


@pytest.mark.parametrize("bad", ["missing folder", "not JSON", "not an entry", "broken entry"])
def test_migrate_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, bad) -> None:
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    good = root / "entries" / "mnist5k-quick__paper_mlp.json"
    good.write_text(json.dumps(_legacy(good.name)))
    before = good.read_bytes()
    broken = root / "entries" / "z.json"
    if bad == "missing folder":
        shutil.rmtree(root / "entries")
    elif bad == "not JSON":
        broken.write_text("{bad")
    elif bad == "not an entry":
        broken.write_text("[1, 2]")
    else:
        broken.write_text(json.dumps({**_legacy(good.name), "cells": [{"cell": "x"}]}))
    assert cli_main(["leaderboard", "migrate", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orbitbench: ") and "\n" not in err, err
    if bad != "missing folder":
        assert good.read_bytes() == before  # nothing half-migrated: the good file is untouched too


@pytest.mark.parametrize("argv", [["--tolerance", "-1"], ["--tolerance", ".nan"], ["--tolerance", "0.5"],
                                  ["--sweeps", "/nonexistent/sweeps"]])
def test_verify_refuses_bad_settings_before_running_a_cell(tmp_path, capsys, argv) -> None:
    entry = tmp_path / "entry.json"
    shutil.copy(ENTRIES / "mnist5k-quick__paper_mlp.json", entry)
    assert cli_main(["leaderboard", "verify", str(entry), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orbitbench: ") and "\n" not in err, err
    assert entry.read_bytes() == (ENTRIES / "mnist5k-quick__paper_mlp.json").read_bytes()
