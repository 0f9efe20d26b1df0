"""Every accuracy-vs-group-order figure the project draws (the sweep's Fig. 1C, the leaderboard's).

Callers describe panels and curves as plain data; this module owns the look (log2 x axis with the
group orders as ticks, mean line with a ± std band, legend outside the axes) and returns PNG bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field


@dataclass
class Curve:
    """One line: means (and stds, drawn as a band when `band`) at group orders `xs`."""

    label: str
    xs: list[int]
    means: list[float]
    stds: list[float]
    color_key: str = ""  # curves sharing a key share a colour (a model's in- and out-test)
    dashed: bool = False
    band: bool = True


@dataclass
class Panel:
    title: str
    orders: list[int]  # the x ticks
    xlabel: str
    ylabel: str = "accuracy"
    curves: list[Curve] = field(default_factory=list)


def accuracy_png(panels: list[Panel], width: float = 7.0, dpi: int = 120, empty_text: str = "nothing to plot") -> bytes:
    """Panels side by side as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(panels))
    fig, axes = plt.subplots(1, count, figsize=(width * count, 4), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[0], panels):
        colors: dict[str, str] = {}
        for curve in panel.curves:
            color = colors.setdefault(curve.color_key or curve.label, palette[len(colors) % len(palette)])
            marker = "s" if curve.dashed else "o"
            ax.plot(curve.xs, curve.means, "--" if curve.dashed else "-", marker=marker, color=color,
                    mfc="none" if curve.dashed else color, label=curve.label)
            if curve.band:
                ax.fill_between(curve.xs, [m - s for m, s in zip(curve.means, curve.stds)],
                                [m + s for m, s in zip(curve.means, curve.stds)], color=color, alpha=0.15, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(panel.orders, [str(n) for n in panel.orders])
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, ylim=(-0.02, 1.02), title=panel.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves stay visible
    if not panels:
        axes[0][0].text(0.5, 0.5, empty_text, ha="center", va="center")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
