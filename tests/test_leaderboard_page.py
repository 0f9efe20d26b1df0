"""The static leaderboard page (`leaderboard/index.html`) opened in a real headless Chromium.

`chromium --dump-dom` prints the DOM after the page's scripts ran; the page sorts on load from
`?sort=<column>&dir=asc|desc` and clicks headers from `?click=<column>,...` (its own click
handlers), so sorting is checked without a DevTools connection. The expected orders and plot
points are computed here from the entry files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from orbitbench.cli import main as cli_main

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (`apt-get install -y chromium`; .ci/run installs it)")


class _Dom(HTMLParser):
    """Rows of every board table (entry names in order, their cells) and every plot marker."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.points: list[dict[str, str]] = []
        self.legends: dict[str, list[str]] = {}  # legend id -> its texts
        self.width: int | None = None
        self.badge_lines: int | None = None
        self.headers: dict[str, dict[str, str]] = {}  # track -> column key -> header tooltip
        self.badge_titles: dict[str, str] = {}  # entry -> its Verified badge's tooltip
        self.legend_terms: dict[str, list[str]] = {}  # track -> the <details> legend's terms
        self._section: str | None = None
        self._in_dt = False
        self.ready = False
        self._track = self._row = self._key = None
        self._groups: list[str | None] = []  # open <g> elements: the legend id, or None
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
            self.width = int(a["data-width"])
            self.badge_lines = int(a["data-badge-lines"])
        if tag == "section" and a.get("id", "").startswith("track-"):
            self._section = a["id"].removeprefix("track-")
        if tag == "dt" and self._section:
            self._in_dt = True
            self.legend_terms.setdefault(self._section, []).append("")
        if tag == "th" and self._track:
            self.headers.setdefault(self._track, {})[a["data-key"]] = a.get("title", "")
        if tag == "span" and "badge" in (a.get("class") or "") and self._row is not None:
            self.badge_titles[self._row["_entry"]] = a.get("title", "").replace("\u00a0", " ")
        if tag == "g":
            legend = a["id"] if "legend" in (a.get("class") or "") else None
            self._groups.append(legend or (self._groups[-1] if self._groups else None))
            if legend:
                self.legends[legend] = []
        if tag == "text":
            self._in_text = True
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
        if tag == "g" and self._groups:
            self._groups.pop()
        if tag == "text":
            self._in_text = False
        if tag == "table":
            self._track = None
        if tag == "td":
            self._key = None
        if tag == "dt":
            self._in_dt = False

    def handle_data(self, data):
        if self._in_dt and self._section:
            self.legend_terms[self._section][-1] += data
        if self._row is not None and self._key:
            self._row[self._key] += data.replace("\u00a0", " ")  # intervals: non-breaking spaces inside
        if self._in_text and self._groups and self._groups[-1]:
            self.legends[self._groups[-1]].append(data.strip())


def _dom(page: Path, query: str = "", width: int = 1400) -> _Dom:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900", "--dump-dom",
         f"file://{page.resolve()}{query}"],
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
    from orbitbench.leaderboard.crosscheck import verification_digest
    from orbitbench.leaderboard.schema import Entry, Verified

    verified = Verified(date=dt.date.fromisoformat(data["date"]), cells=[data["cells"][0]["cell"]], max_abs_diff=0.0,
                        tolerance=0.0, commit=None, digest="0" * 64)
    verified = verified.model_copy(update={"digest": verification_digest(Entry.model_validate_json(path.read_text()), verified)})
    data["verified"] = json.loads(verified.model_dump_json())
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
        assert row["verified"] == ("verified ✓1" if e["verified"] else "reported")
        assert dom.badge_titles[row["_entry"]].startswith("verified (1 cells, max diff 0") if e["verified"] else True
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


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def full_board(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """The repository's own entries (13 on the small-data track `mnist5k-cpu`) built into a scratch board."""
    root = tmp_path_factory.mktemp("full") / "board"
    shutil.copytree(REPO / "leaderboard" / "entries", root / "entries")
    assert cli_main(["leaderboard", "build", "--root", str(root), "--sweeps", str(REPO / "sweeps")]) == 0
    entries = {p.stem: json.loads(p.read_text()) for p in (root / "entries").glob("*.json")}  # names repeat across tracks
    return root / "index.html", entries


@pytest.mark.timeout(300)
def test_legends_name_every_entry_in_full_and_the_page_fits_1400_px(full_board):
    path, entries = full_board
    dom = _dom(path, width=1400)
    assert dom.width is not None and dom.width <= 1400, f"the page is {dom.width} px wide"
    tracks: dict[str, set[str]] = {}
    for e in entries.values():
        tracks.setdefault(e["track"], set()).add(e["name"])
    assert max(len(names) for names in tracks.values()) >= 13
    for track, names in tracks.items():
        legend = dom.legends[f"legend-out_test_vs_order-{track}"]
        assert sorted(legend) == sorted(names), track  # every name, uncut, once
        # ids are <kind>-<track>-pt<i>: a prefix alone would take mnist-cpu-shift's points for mnist-cpu's
        plotted = {p["data-entry"] for p in dom.points if re.fullmatch(rf"out_test_vs_order-{re.escape(track)}-pt\d+", p["id"])}
        assert plotted == names


@pytest.mark.timeout(300)
def test_every_entry_of_a_track_has_its_own_colour_and_marker(full_board):
    import re

    text = full_board[0].read_text()
    styles: dict[str, set[tuple[str, str]]] = {}
    # Each point group: <g ... class="point" data-entry="NAME" ...> <g clip-path=...> <use xlink:href="#MARKER" ... style="fill: #C...
    for name, marker, colour in re.findall(
            r'<g id="out_test_vs_order-mnist5k-cpu-pt\d+" class="point" data-entry="([^"]+)"[^>]*>\s*(?:<defs>.*?</defs>\s*)?'
            r'<g clip-path="[^"]+">\s*<use xlink:href="#(\w+)"[^>]*style="fill: (#\w+)', text, flags=re.S):
        styles.setdefault(name, set()).add((marker, colour))
    assert len(styles) >= 13 and all(len(s) == 1 for s in styles.values())
    assert len({next(iter(s)) for s in styles.values()}) == len(styles)  # no two entries look alike


@pytest.mark.timeout(300)
def test_every_column_is_explained_where_it_is_and_verified_stays_on_one_line():
    """The committed page (leaderboard/index.html) in Chromium at 1,400 px: each header carries its
    explanation as a tooltip, each track's legend names every column, the Verified badge wraps to no
    second line, and the smoke track has no Rank column (`ranked: false` in sweeps/cpu_quick.yaml)."""
    from orbitbench.leaderboard.render import column_help

    dom = _dom(Path(__file__).resolve().parents[1] / "leaderboard" / "index.html")
    assert dom.badge_lines == 1 and dom.width <= 1400
    assert set(dom.headers) >= {"mnist-cpu", "mnist5k-quick"}
    for track, headers in dom.headers.items():
        assert all(title == column_help(key) and len(title) > 20 for key, title in headers.items()), track
        assert len(dom.legend_terms[track]) == len(headers)
    assert "rank" in dom.headers["mnist-cpu"] and not {"mnist5k-quick", "mnist5k-cpu"} & {t for t, h in dom.headers.items() if "rank" in h}
    assert all(title.startswith("verified (") for title in dom.badge_titles.values() if title != "reported")
