"""The leaderboard rendered three ways from one table model: README.md, index.html, a PNG figure.

`track_tables` computes everything shown (score intervals, the paired difference to the
baseline, rank ranges, kernel predictions) once; the Jinja2 templates in `templates/` (Markdown
and HTML) only format it. The HTML page is self-contained (inline CSS, inline SVG plots drawn by
matplotlib in `charts`, a few lines of inline script for sorting): it opens from a file without
network, and fits a 1,400 px window.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from orbitbench.theory.registry import predictor, predictor_names
from orbitbench.leaderboard import integrity
from orbitbench.leaderboard.intervals import clip, paired_difference, rank_ranges, unit_scores
from orbitbench.leaderboard.schema import Entry
from orbitbench.leaderboard.charts import accuracy_svg, predicted_svg

BASELINE = "paper_mlp"


def shown_predictors() -> tuple[str, ...]:
    """The registered kernel predictors the table and figure show (`Predictor.shown`)."""
    return tuple(name for name in predictor_names() if predictor(name).shown)

FIGURE = "out_test_vs_angles.png"


@dataclass
class Row:
    """One entry as shown: its entry plus the numbers that depend on the rest of its track."""

    entry: Entry
    ranks: tuple[int, int]
    diff: tuple[float, float, float] | None  # entry - baseline, paired by unit: mean, low, high

    @property
    def rank(self) -> str:
        best, worst = self.ranks
        return str(best) if best == worst else f"{best}–{worst}"


def track_tables(entries: dict[str, Entry]) -> dict[str, list[Row]]:
    """Track -> rows ranked by mean score (ties: name), with rank ranges and baseline differences."""
    tracks: dict[str, list[Entry]] = {}
    for entry in entries.values():
        tracks.setdefault(entry.track, []).append(entry)
    tables = {}
    for track, group in sorted(tracks.items()):
        group.sort(key=lambda e: (-e.score.mean, e.name))
        units = {e.name: unit_scores(integrity.cell_units(e.cells)) for e in group}
        ranks = rank_ranges(units)
        baseline = next((e for e in group if e.model == BASELINE and e.method == "supervised"), None)
        tables[track] = [
            Row(e, ranks[e.name], None if baseline is None or e is baseline
                else paired_difference(units[e.name], units[baseline.name]))
            for e in group
        ]
    return tables


def _interval(mean: float, low: float, high: float, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    low, high = clip(low), clip(high)
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def _maybe(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _predicted(entry: Entry, predictor: str) -> str:
    """`0.150 (κ 0.12)`: predicted out-test and the prediction's agreement with the network."""
    if predictor not in integrity.method_kernel_predictors(entry.method):
        return "undefined"  # the method (its own column) adds its own loss: outside the theory
    value, kappa = entry.mean_predicted(predictor), entry.mean_kappa(predictor)
    return _maybe(value) + ("" if value is None or kappa is None else f" (κ {kappa:+.2f})")


def _at_scale(entry: Entry, predictor: str) -> str:
    """`0.294 (κ +0.30, m 16,000)`: the regression at the network's scale, averaged over orders."""
    found = entry.mean_at_scale(predictor)
    if found is None:
        return ""
    value, kappa, m = found
    return f"{value:.3f} (" + ("" if kappa is None else f"κ {kappa:+.2f}, ") + f"m {m:,})"


def _train(entry: Entry) -> str:
    values = [r.train.mean for r in entry.results if r.train is not None]
    return f"{sum(values) / len(values):.3f}" if len(values) == len(entry.results) else ""


def verified_text(entry: Entry) -> str:
    v = entry.verified
    return "reported" if v is None else f"verified ({len(v.cells)} cells, max diff {v.max_abs_diff:.1g}, {v.date.isoformat()})"


def md_text(text: str) -> str:
    """Free text inside Markdown: HTML's `&` `<` `>` as entities (no raw HTML, no entity tricks),
    then Markdown punctuation backslash-escaped (no links, images, emphasis or table cells)."""
    return re.sub(r"([\\`*_\[\]{}()#+!~|])", r"\\\1", html.escape(text, quote=False))


def columns(rows: list[Row], ranked: bool = True) -> list[tuple[str, str, list[str]]]:
    """(key, header, cell texts) per column of a track's table; shared by Markdown and HTML. A track
    that is not ranked (a smoke track, `ranked: false` in its sweep file) has no Rank column."""
    orders = rows[0].entry.protocol.n_poses
    e = [row.entry for row in rows]
    cols = [
        ("rank", "Rank", [row.rank for row in rows]),
        ("entry", "Entry", [x.name for x in e]),
        ("model", "Model", [x.model for x in e]),
        ("method", "Method", [x.method for x in e]),
        ("invariance", "Invariance", [x.invariance for x in e]),
        ("params", "Params", [f"{x.param_count:,}" for x in e]),
        ("out_test", "Out-test [95% CI]", [_interval(x.score.mean, x.score.low, x.score.high) for x in e]),
        ("diff", f"Δ vs {BASELINE} [95% CI]", ["" if r.diff is None else _interval(*r.diff, signed=True) for r in rows]),
        ("in_test", "In-test", [f"{x.mean_in_test:.3f}" for x in e]),
        ("train", "Train (eval)", [_train(x) for x in e]),
        *((f"n{n}", f"out-test n={n}", [f"{x.results[i].out_test.mean:.3f} ± {x.results[i].out_test.std:.3f}" for x in e])
          for i, n in enumerate(orders)),
        *((f"pred_{p}", f"pred. {predictor(p).label} (κ)", [_predicted(x, p) for x in e]) for p in shown_predictors()),
        *((f"scale_{p}", f"{predictor(p).label} at scale (κ, m)", [_at_scale(x, p) for x in e])
          for p in shown_predictors() if any(x.mean_at_scale(p) is not None for x in e)),
        ("cells", "Cells", [str(len(x.cells)) for x in e]),
        ("verified", "Verified", [verified_text(x) for x in e]),
        ("date", "Date", [x.date.isoformat() for x in e]),
    ]
    return cols if ranked else [c for c in cols if c[0] != "rank"]


TEXT_COLUMNS = {"entry", "model", "method", "invariance", "verified", "date"}

# What each column means, where it is: the page's header tooltips and its legend.
COLUMN_HELP = {
    "rank": "Rank by out-test score; a range when the paired difference to a neighbour's interval includes 0",
    "entry": "The entry's name (leaderboard/entries/<track>__<name>.json), with its paper and code links",
    "model": "The architecture, by its model-zoo name (orbitbench models NAME describes it)",
    "method": "The training method: supervised, or a learnt-symmetry challenger (docs/CHALLENGERS.md)",
    "invariance": "Symmetry built into the architecture (built-in:c4 ...) or none",
    "params": "Trainable parameters, counted by building the model",
    "out_test": "The score: accuracy on the never-seen upright pose of the leave-out class, averaged over the "
                "track's group orders; mean and 95% t-interval over (leave-out class, seed) units",
    "diff": "Out-test minus the supervised paper MLP's, paired by unit, with its 95% interval",
    "in_test": "Accuracy on held-out digits in the poses seen in training, averaged over orders: did it learn the task?",
    "train": "Accuracy on the training split in eval mode, averaged over orders",
    "pred": "Out-test accuracy predicted by this kernel's spectral rule (Eq. 7), averaged like out-test; "
            "κ: Cohen's kappa against the network on the same digits (0: no more than chance); undefined for a "
            "method that adds its own loss (the theory describes networks trained on the labels alone)",
    "scale": "Out-test accuracy predicted by kernel regression on m points of the network's own training "
             "split (m: the smallest over the cells), scored on every out-test digit, averaged like out-test; "
             "κ against the network on the same digits (docs/THEORY.md §10)",
    "order": "Out-test at this group order: mean ± standard deviation over leave-out classes",
    "cells": "Finished cells (group order x leave-out class x seed) whose run records the entry holds",
    "verified": "verified: cells re-run by orbitbench leaderboard verify matched (hover for how many, the "
                "largest difference and the date); reported: not re-run yet",
    "date": "When the entry's last cell finished",
}


def column_help(key: str) -> str:
    """The explanation of a column key (`n4`, `pred_init` share one per kind)."""
    if key.startswith(("pred_", "scale_")):
        return COLUMN_HELP[key.split("_", 1)[0]]
    if re.fullmatch(r"n\d+", key):
        return COLUMN_HELP["order"]
    return COLUMN_HELP[key]


def verified_badge(entry: Entry) -> str:
    """The page's one-word Verified cell; the details go in its tooltip."""
    return "reported" if entry.verified is None else f"verified ✓{len(entry.verified.cells)}"


def _protocol_line(rows: list[Row]) -> str:
    p = rows[0].entry.protocol
    data = ", ".join(f"{k}={v}" for k, v in p.data.items())
    return (f"{p.datamodule}, n_poses {p.n_poses}, leave-out classes {p.leave_out_classes}, seeds {p.seeds}; "
            f"data: {data}.")


INTRO = (
    "Can an architecture learn a symmetry it has only partly seen? Each track trains on every pose of every "
    "class except the upright pose of one leave-out class; **out-test** is the accuracy on those never-seen "
    "upright images, **in-test** on held-out images of seen (class, pose) combinations, **train** the accuracy "
    "on the training split in eval mode. An entry's score is its out-test accuracy averaged over the track's "
    "group orders, per (leave-out class, seed) unit; the table shows its mean and 95% t-interval over units, "
    "and the difference to the supervised paper MLP paired by unit. Two entries share a rank (shown as a range) unless "
    "their paired difference interval excludes 0. Every number is recomputed from the per-cell run records "
    "in the entry by `orbitbench leaderboard check`; *verified* entries had cells re-run by "
    "`orbitbench leaderboard verify` and matched, *reported* ones not yet. Pred. infinite / init: out-test "
    "accuracy predicted by the spectral error of the infinite-width and at-initialisation kernels, averaged "
    "like out-test, with κ, Cohen's kappa of that prediction against the network on the same digits, per "
    "cell (0: no more agreement than chance, whatever the accuracies; blank when the cells did not compute "
    "them; *undefined* for a training method whose extra loss the kernel theory does not describe, see "
    "docs/CHALLENGERS.md). Tracks are never ranked together."
)


def _templates():
    """The Jinja2 environment of `templates/` (HTML escaped, Markdown as written)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), undefined=StrictUndefined,
                       autoescape=select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)  # fmt: skip


def _tracks(entries: dict[str, Entry], about: dict[str, str] | None) -> list[tuple[str, list[Row]]]:
    """Every track with entries (ranked) and then the described tracks without any, by name."""
    tables = track_tables(entries)
    empty = [(track, []) for track in sorted(set(about or {}) - set(tables))]
    return [*tables.items(), *empty]


UNRANKED_NOTE = "(Not ranked, by its sweep file: its entries are listed by out-test, without ranks.)"


def render_readme(entries: dict[str, Entry], about: dict[str, str] | None = None, unranked: frozenset[str] = frozenset()) -> str:
    tracks = []
    for track, rows in _tracks(entries, about):
        described = md_text(" ".join(filter(None, [(about or {}).get(track, ""), UNRANKED_NOTE if track in unranked else ""])))
        if not rows:
            tracks.append({"name": track, "about": described, "rows": []})
            continue
        cols = columns(rows, track not in unranked)
        lines = [[f"`{v}`" if k == "model" else f"**{v}**" if k == "out_test" else md_text(v) if k == "method" else v
                  for k, _, vs in cols for v in [vs[i]]] for i in range(len(rows))]  # fmt: skip
        notes = []
        for e in (r.entry for r in rows if r.entry.notes or r.entry.authors or r.entry.paper or r.entry.code):
            parts = [md_text(", ".join(e.authors))] if e.authors else []
            parts += [f"[{label}](<{url}>)" for label, url in (("paper", e.paper), ("code", e.code)) if url]
            parts += [md_text(e.notes)] if e.notes else []
            notes.append(f"**{e.name}**: " + "; ".join(parts))
        tracks.append({
            "name": track, "about": described, "rows": rows, "protocol": _protocol_line(rows),
            "reproduce": ", ".join(f"`orbitbench sweep run sweeps/{n}.yaml`" for n in sorted({r.entry.sweep for r in rows})),
            "headers": [h for _, h, _ in cols], "aligns": ["---" if k in TEXT_COLUMNS else "---:" for k, _, _ in cols],
            "lines": lines, "described": notes,
        })  # fmt: skip
    text = _templates().get_template("README.md.j2").render(intro=INTRO, figure=FIGURE, tracks=tracks)
    return text.rstrip("\n") + "\n"


def _narrow(text: str) -> str:
    """An interval or `mean ± std` may wrap after its mean only (non-breaking spaces elsewhere):
    narrow columns keep the page within 1,400 px."""
    return text.replace(", ", ",\u00a0").replace("± ", "±\u00a0")


def render_html(entries: dict[str, Entry], about: dict[str, str] | None = None, unranked: frozenset[str] = frozenset()) -> str:
    """The static page: per track a sortable table, its plot of out-test vs group order and, when
    cells carry kernel predictions, predicted vs actual out-test."""
    tracks = []
    for track, rows in _tracks(entries, about):
        item: dict = {"name": track, "rows": [],
                      "about": " ".join(filter(None, [(about or {}).get(track, ""), UNRANKED_NOTE if track in unranked else ""]))}
        tracks.append(item)
        if not rows:
            continue
        cols = columns(rows, track not in unranked)
        for i, row in enumerate(rows):
            e = row.entry
            sort_values = {"rank": row.ranks[0], "out_test": e.score.mean, "params": e.param_count,
                           "diff": "" if row.diff is None else row.diff[0]}  # fmt: skip
            item["rows"].append({
                "entry": e.name, "verified": e.verified is not None, "badge": verified_badge(e),
                "links": [(label, url) for label, url in (("paper", e.paper), ("code", e.code)) if url],
                "cells": [{"key": k, "text": _narrow(vs[i]), "value": str(sort_values.get(k, vs[i]))} for k, _, vs in cols],
            })  # fmt: skip
        shown = [r.entry for r in rows]
        item.update(
            protocol=_protocol_line(rows),
            columns=[{"key": k, "header": h, "type": "text" if k in TEXT_COLUMNS else "num", "help": column_help(k)}
                     for k, h, _ in cols],
            notes=[(r.entry.name, "; ".join(filter(None, [", ".join(r.entry.authors), r.entry.notes])))
                   for r in rows if r.entry.notes or r.entry.authors],
            accuracy_svg=accuracy_svg(track, shown), predicted_svg=predicted_svg(track, shown, shown_predictors()),
        )  # fmt: skip
    data = json.dumps({t: [r.entry.name for r in rows] for t, rows in track_tables(entries).items()})
    intro = INTRO.replace("**", "").replace("*", "").replace("`", "")
    return _templates().get_template("index.html.j2").render(intro=intro, tracks=tracks, data=data)


def render_figure(entries: dict[str, Entry]) -> bytes:
    """One panel per track: out-test accuracy vs group order, mean ± std band per entry."""
    from orbitbench.plots import Curve, Panel, accuracy_png

    panels = [
        Panel(f"track {track}", rows[0].entry.protocol.n_poses, "group order (n_angles / n_shifts)", "out-test accuracy",
              [Curve(r.entry.name, [p.n_poses for p in r.entry.results], [p.out_test.mean for p in r.entry.results],
                     [p.out_test.std for p in r.entry.results]) for r in rows])
        for track, rows in track_tables(entries).items()
    ]
    return accuracy_png(panels, width=7.5, dpi=110, empty_text="no entries yet")
