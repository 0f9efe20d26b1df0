"""Inline SVG plots for the static page: no script, no network, one element per data point.

Every marker carries `data-entry`, `data-x` and `data-y`, so a test (or a reader's tools) can
check the plot against the entries without reading pixels.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from scipy import stats as scipy_stats

from orbitbench.leaderboard.schema import Entry

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 300, 48, 170, 24, 40


def _half_width(std: float, n: int) -> float:
    """95% t half-width of a mean from a population std over n cells (0 when n = 1: not drawn)."""
    if n < 2:
        return 0.0
    return float(scipy_stats.t.ppf(0.975, n - 1)) * std * math.sqrt(n / (n - 1)) / math.sqrt(n)


def _frame(title: str, xlabel: str, ylabel: str, xticks: list[tuple[float, str]], sx, sy, kind: str) -> list[str]:
    parts = [f'<svg class="plot" data-plot="{kind}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{LEFT}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="#999"/>']
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = sy(value)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{value:g}</text>')
    for x, label in xticks:
        parts.append(f'<text x="{sx(x):.1f}" y="{H - BOTTOM + 14}" font-size="10" text-anchor="middle">{html.escape(label)}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="12" y="{(TOP + H - BOTTOM) / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(TOP + H - BOTTOM) / 2})">{html.escape(ylabel)}</text>')
    return parts


def _legend(labels: Sequence[tuple[str, str]]) -> list[str]:
    return [f'<rect x="{W - RIGHT + 10}" y="{TOP + 14 * i}" width="10" height="10" fill="{color}"/>'
            f'<text x="{W - RIGHT + 24}" y="{TOP + 14 * i + 9}" font-size="10">{html.escape(label)}</text>'
            for i, (label, color) in enumerate(labels)]


def accuracy_svg(track: str, entries: Sequence[Entry]) -> str:
    """Out-test accuracy vs group order (log2 axis): one line per entry, 95% t-interval bars."""
    orders = entries[0].protocol.n_poses
    lo, hi = math.log2(min(orders)), math.log2(max(orders))
    span = (hi - lo) or 1.0
    sx = lambda n: LEFT + 10 + (W - LEFT - RIGHT - 20) * (math.log2(n) - lo) / span  # noqa: E731
    sy = lambda v: H - BOTTOM - (H - TOP - BOTTOM) * v  # noqa: E731
    parts = _frame(f"track {track}: out-test accuracy vs group order", "group order (n_angles / n_shifts)",
                   "out-test accuracy", [(n, str(n)) for n in orders], sx, sy, "out_test_vs_order")
    labels = []
    for i, entry in enumerate(entries):
        color = PALETTE[i % len(PALETTE)]
        labels.append((entry.name, color))
        points = [(r.n_poses, r.out_test.mean, _half_width(r.out_test.std, r.out_test.n)) for r in entry.results]
        path = " ".join(f"{'M' if j == 0 else 'L'}{sx(n):.1f},{sy(m):.1f}" for j, (n, m, _) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for n, mean, half in points:
            if half > 0:
                parts.append(f'<line x1="{sx(n):.1f}" x2="{sx(n):.1f}" y1="{sy(min(1, mean + half)):.1f}" '
                             f'y2="{sy(max(0, mean - half)):.1f}" stroke="{color}" stroke-opacity="0.5"/>')
            parts.append(f'<circle class="point" cx="{sx(n):.1f}" cy="{sy(mean):.1f}" r="3" fill="{color}" '
                         f'data-entry="{html.escape(entry.name)}" data-x="{n}" data-y="{mean:.6f}"/>')
    return "".join(parts + _legend(labels) + ["</svg>"])


def predicted_svg(track: str, entries: Sequence[Entry], predictors: Sequence[str]) -> str:
    """Kernel-predicted vs network out-test accuracy, one marker per (entry, predictor, group order);
    empty when no entry's cells carry predictions."""
    sx = lambda v: LEFT + (W - LEFT - RIGHT) * v  # noqa: E731
    sy = lambda v: H - BOTTOM - (H - TOP - BOTTOM) * v  # noqa: E731
    markers, labels = [], []
    for i, entry in enumerate(entries):
        color = PALETTE[i % len(PALETTE)]
        for j, predictor in enumerate(predictors):
            if entry.mean_predicted(predictor) is None:
                continue
            labels.append((f"{entry.name} ({predictor})", color))
            for r in entry.results:
                x, y = r.predicted[predictor].mean, r.out_test.mean
                shape = (f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}"' if j == 0 else
                         f'<rect x="{sx(x) - 3:.1f}" y="{sy(y) - 3:.1f}" width="6" height="6" fill="none" stroke="{color}"')
                markers.append(f'{shape} class="point" data-entry="{html.escape(entry.name)}" data-predictor="{predictor}" '
                               f'data-n="{r.n_poses}" data-x="{x:.6f}" data-y="{y:.6f}"/>')
    if not markers:
        return ""
    parts = _frame(f"track {track}: predicted vs network out-test (circle: {predictors[0]}, square: others)",
                   "kernel-predicted out-test accuracy", "network out-test accuracy",
                   [(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)], sx, sy, "predicted_vs_actual")
    parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" stroke="#bbb" stroke-dasharray="4 3"/>')
    return "".join(parts + markers + _legend(labels) + ["</svg>"])
