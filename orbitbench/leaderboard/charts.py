"""The static page's plots as inline SVG drawn by matplotlib: full legends, text kept as text.

Each entry gets its own (colour, marker) pair (20 colours x 8 markers), and its full name in a
legend under the axes, so 13 or more entries stay apart. Every data marker is a group carrying
`class="point"`, `data-entry`, `data-x` and `data-y` (plus `data-predictor`, `data-n` in the
predicted-vs-actual plot), and the legend is `<g class="legend">`: a test, or a reader's tools,
checks the plot against the entries without reading pixels. The SVG is deterministic (no date,
fixed ids), so `leaderboard check` can compare pages byte for byte.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence

from scipy import stats as scipy_stats

from orbitbench.leaderboard.schema import Entry

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
WIDTH_IN = 6.6  # inches at 72 px each: two plots side by side inside the 1,400 px page


def style(index: int) -> tuple[str, str]:
    """The index-th entry's (colour, marker): distinct for the first 160 entries."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    return colours[(index * 2) % 20 if index < 10 else (index * 2 + 1) % 20], MARKERS[(index // 20 + index) % len(MARKERS)]


def _half_width(std: float, n: int) -> float:
    """95% t half-width of a mean from a population std over n cells (0 when n = 1: not drawn)."""
    if n < 2:
        return 0.0
    return float(scipy_stats.t.ppf(0.975, n - 1)) * std * math.sqrt(n / (n - 1)) / math.sqrt(n)


def _figure(legend_rows: int):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, 3.4 + 0.17 * legend_rows), layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure, kind: str, track: str, title: str, points: list[dict[str, str]]) -> str:
    """The figure as an SVG element: deterministic, text as text, point groups annotated; ids
    unique per (plot kind, track), as several SVGs share one HTML document."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"orbitbench-{kind}-{track}"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML
    for index, attributes in enumerate(points):
        data = " ".join(f'{k}="{html.escape(v)}"' for k, v in attributes.items())
        text = text.replace(f'<g id="{_point_id(index)}">', f'<g id="{kind}-{track}-pt{index}" class="point" {data}>', 1)
    text = text.replace('<g id="legend">', f'<g id="legend-{kind}-{track}" class="legend">', 1)
    label = html.escape(title)
    text = re.sub(r"<svg ", f'<svg class="plot" data-plot="{kind}" role="img" aria-label="{label}" ', text, count=1)
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # RDF with links: not needed
    return text.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1).strip()  # HTML knows xlink:href


def _point_id(index: int) -> str:
    return f"pt{index}"


def _legend(figure, axes, count: int) -> None:
    legend = figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7,
                           frameon=False, handlelength=2.2)  # fmt: skip
    legend.set_gid("legend")


def accuracy_svg(track: str, entries: Sequence[Entry]) -> str:
    """Out-test accuracy vs group order (log2 axis): one line per entry, 95% t-interval bars."""
    orders = entries[0].protocol.n_poses
    figure, axes = _figure((len(entries) + 1) // 2)
    points: list[dict[str, str]] = []
    for i, entry in enumerate(entries):
        colour, marker = style(i)
        xs = [r.n_poses for r in entry.results]
        means = [r.out_test.mean for r in entry.results]
        halves = [_half_width(r.out_test.std, r.out_test.n) for r in entry.results]
        axes.plot(xs, means, "-", color=colour, marker=marker, ms=5, lw=1.4, label=entry.name)
        for x, mean, half in zip(xs, means, halves):
            if half > 0:
                axes.plot([x, x], [max(0, mean - half), min(1, mean + half)], color=colour, alpha=0.5, lw=1)
            axes.plot([x], [mean], linestyle="none", marker=marker, ms=5, color=colour, gid=_point_id(len(points)))
            points.append({"data-entry": entry.name, "data-x": str(x), "data-y": f"{mean:.6f}"})
    axes.set_xscale("log", base=2)
    axes.set_xticks(orders, [str(n) for n in orders])
    axes.minorticks_off()
    title = f"track {track}: out-test accuracy vs group order"
    axes.set(xlabel="group order (n_angles / n_shifts)", ylabel="out-test accuracy", ylim=(-0.02, 1.02), title=title)
    axes.title.set_fontsize(9)
    axes.grid(alpha=0.3)
    _legend(figure, axes, len(entries))
    return _svg(figure, "out_test_vs_order", track, title, points)


def predicted_svg(track: str, entries: Sequence[Entry], predictors: Sequence[str]) -> str:
    """Kernel-predicted vs network out-test accuracy, one marker per (entry, predictor, group order):
    filled for the first predictor, open for the others; empty when no entry's cells carry predictions."""
    shown = [(i, e, j, p) for i, e in enumerate(entries) for j, p in enumerate(predictors) if e.mean_predicted(p) is not None]
    if not shown:
        return ""
    figure, axes = _figure((len(shown) + 1) // 2)
    points: list[dict[str, str]] = []
    axes.plot([0, 1], [0, 1], "--", color="#bbbbbb", lw=1)
    for i, entry, j, predictor in shown:
        colour, marker = style(i)
        face = colour if j == 0 else "none"
        axes.plot([], [], linestyle="none", marker=marker, color=colour, mfc=face, label=f"{entry.name} ({predictor})")
        for r in entry.results:
            x, y = r.predicted[predictor].mean, r.out_test.mean
            axes.plot([x], [y], linestyle="none", marker=marker, ms=5, color=colour, mfc=face, gid=_point_id(len(points)))
            points.append({"data-entry": entry.name, "data-predictor": predictor, "data-n": str(r.n_poses),
                           "data-x": f"{x:.6f}", "data-y": f"{y:.6f}"})  # fmt: skip
    title = f"track {track}: predicted vs network out-test (filled: {predictors[0]}, open: others)"
    axes.set(xlabel="kernel-predicted out-test accuracy", ylabel="network out-test accuracy",
             xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=title)  # fmt: skip
    axes.title.set_fontsize(9)
    axes.grid(alpha=0.3)
    _legend(figure, axes, len(shown))
    return _svg(figure, "predicted_vs_actual", track, title, points)
