"""The static leaderboard page (`leaderboard/index.html`) opened in a real headless Chromium.

`chromium --dump-dom` prints the DOM after the page's scripts ran; the page sorts on load from
`?sort=<column>&dir=asc|desc` and clicks headers from `?click=<column>,...` (its own click
handlers), so sorting is checked without a DevTools connection. The expected orders and plot
points are computed here from the entry files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from orbitbench.cli import main as cli_main
from orbitbench import leaderboard

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`apt-get install -y chromium`; .ci/run installs it)")


class _Dom(HTMLParser):
    """Rows of every board table (entry names in order, their cells) and every plot marker."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.points: list[dict[str, str]] = []
        self.ready = False
        self._track = self._row = self._key = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
        if tag == "table" and "board" in (a.get("class") or ""):
            self._track = a["data-track"]
            self.tables[self._track] = []
        elif tag == "tr" and self._track and "data-entry" in a:
            self._row = {"_entry": a["data-entry"]}
            self.tables[self._track].append(self._row)
        elif tag == "td" and self._row is not None:
            self._key = a["data-key"]
            self._row[self._key] = ""
        elif a.get("class") == "point":
            self.points.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._track = None
        if tag == "td":
            self._key = None

    def handle_data(self, data):
        if self._row is not None and self._key:
            self._row[self._key] += data


def _dom(page: Path, query: str = "") -> _Dom:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{page.resolve()}{query}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(done.stdout)
    assert parsed.ready, "the page's script did not run"
    return parsed


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("page") / "board"
    (root / "entries").mkdir(parents=True)
    sweeps = ["--root", str(root), "--sweeps", str(FIXTURES / "sweeps")]
    assert cli_main(["leaderboard", "add", *sweeps, str(FIXTURES / "sweep")]) == 0
    # One verified entry, as `leaderboard verify` records it (the re-run itself is tested elsewhere).
    path = root / "entries" / "tiny-rot__cnn_gap.json"
    data = json.loads(path.read_text())
    data["verified"] = {"date": "2026-11-27", "cells": [data["cells"][0]["cell"]], "max_abs_diff": 0.0,
                        "tolerance": 0.0, "commit": None}
    path.write_text(json.dumps(data))
    assert cli_main(["leaderboard", "build", *sweeps]) == 0
    entries = {e["name"]: e for e in (json.loads(p.read_text()) for p in (root / "entries").glob("*.json"))}
    return root / "index.html", entries


@pytest.mark.timeout(300)
def test_rendered_rows_badges_and_plot_match_the_entries(page):
    path, entries = page
    dom = _dom(path)
    rows = dom.tables["tiny-rot"]
    assert [r["_entry"] for r in rows] == sorted(entries, key=lambda n: (-entries[n]["score"]["mean"], n))
    for row in rows:
        e = entries[row["_entry"]]
        assert row["out_test"] == f"{e['score']['mean']:.3f} [{e['score']['low']:.3f}, {e['score']['high']:.3f}]"
        assert row["params"] == f"{e['param_count']:,}" and row["model"] == e["model"]
        assert row["verified"].startswith("verified (1 cells") if e["verified"] else row["verified"] == "reported"
    plotted = {(p["data-entry"], int(p["data-x"])): float(p["data-y"]) for p in dom.points if "data-predictor" not in p}
    expected = {(name, r["n_poses"]): r["out_test"]["mean"] for name, e in entries.items() for r in e["results"]}
    assert plotted == pytest.approx(expected, abs=1e-6)


@pytest.mark.timeout(300)
def test_sorting_from_the_query_string_and_by_clicking_headers(page):
    path, entries = page
    by_params = sorted(entries, key=lambda n: entries[n]["param_count"])
    assert [r["_entry"] for r in _dom(path, "?sort=params&dir=asc").tables["tiny-rot"]][0] == by_params[0]
    names = sorted(entries)
    assert [r["_entry"] for r in _dom(path, "?click=entry").tables["tiny-rot"]] == names  # one click: ascending
    assert [r["_entry"] for r in _dom(path, "?click=entry,entry").tables["tiny-rot"]] == names[::-1]  # again: reversed


@pytest.mark.timeout(300)
def test_the_page_needs_no_network(page):
    text = page[0].read_text()
    assert "<link" not in text and "src=" not in text and "@import" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
