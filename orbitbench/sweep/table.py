"""`orbitbench sweep table`: a DomainBed-style results table straight from a sweep directory.

One row per (model, method, group order): the finished cells' accuracies as mean ± standard
error and a two-sided 95% Student-t interval over the cells (leave-out classes x seeds), in
Markdown for reading and CSV for analysis. Read from the cells' run records (`read_sweep_dir`),
so it needs no `leaderboard add`; unfinished cells are counted, not guessed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_text
from orbitbench.stats import t_interval
from orbitbench.sweep.results import read_sweep_dir

METRICS = {"out_test_acc": "out-test", "in_test_acc": "in-test", "train_acc": "train"}


@dataclass(frozen=True)
class Summary:
    """Mean, standard error and 95% t-interval of one metric over `n` cells (SE and interval NaN for n < 2;
    the interval clipped to the accuracy range)."""

    n: int
    mean: float
    se: float
    low: float
    high: float


def summarise(values: Sequence[float]) -> Summary:
    n = len(values)
    mean, low, high = t_interval(values)
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return Summary(n, mean, se, max(0.0, low), min(1.0, high))  # accuracies: the interval within [0, 1]


def table_rows(sweep_dir: Path) -> tuple[list[dict[str, object]], int]:
    """(rows, unfinished cell count): per (model, method, order) the summaries of every metric."""
    state = read_sweep_dir(sweep_dir)
    if not state.results:
        raise OrbitbenchError(f"{sweep_dir}: no finished cells yet (`orbitbench sweep run` first)")
    groups: dict[tuple[str, str, int], list] = {}
    for result in state.results.values():  # grid order: models, then methods, then orders
        groups.setdefault((result.model, result.method, result.n_poses), []).append(result)
    rows = []
    for (model, method, order), results in groups.items():
        row: dict[str, object] = {"model": model, "method": method, "n_poses": order, "cells": len(results)}
        for metric in METRICS:
            values = [getattr(r, metric) for r in results if getattr(r, metric) is not None]
            row[metric] = summarise(values) if values else None
        rows.append(row)
    return rows, len(state.missing)


def _markdown(rows: list[dict[str, object]], unfinished: int, sweep_dir: Path) -> str:
    def cell(summary: Summary | None, part: str) -> str:
        if summary is None:
            return "n/a"
        if part == "mean":
            return f"{summary.mean:.3f}" + ("" if math.isnan(summary.se) else f" ± {summary.se:.3f}")
        return "n/a (1 cell)" if math.isnan(summary.low) else f"[{summary.low:.3f}, {summary.high:.3f}]"

    head = ["model", "method", "n_poses", "cells"]
    for label in METRICS.values():
        head += [f"{label} mean ± SE", f"{label} 95% CI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (2 * len(METRICS))) + "|"]
    for row in rows:
        values = [str(row["model"]), str(row["method"]), str(row["n_poses"]), str(row["cells"])]
        for metric in METRICS:
            values += [cell(row[metric], "mean"), cell(row[metric], "ci")]
        lines.append("| " + " | ".join(values) + " |")
    note = (f"\nAccuracies over the finished cells of {sweep_dir} (leave-out classes x seeds); SE = standard "
            "error of the mean, CI = two-sided 95% Student-t interval (clipped to [0, 1]).")  # fmt: skip
    if unfinished:
        note += f" {unfinished} cell(s) not finished and left out."
    return "\n".join(lines) + "\n" + note + "\n"


def _csv(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "method", "n_poses", "cells"] + [f"{m}_{p}" for m in METRICS for p in ("mean", "se", "ci_low", "ci_high")])
    for row in rows:
        values = [row["model"], row["method"], row["n_poses"], row["cells"]]
        for metric in METRICS:
            summary = row[metric]
            parts = [] if summary is None else [summary.mean, summary.se, summary.low, summary.high]
            values += ["" if summary is None or math.isnan(v) else f"{v:.6g}" for v in parts] or [""] * 4
        writer.writerow(values)
    return buffer.getvalue()


def table(sweep_dir: Path, format: Literal["markdown", "csv"] = "markdown", output: Path | None = None) -> str:
    """Mean ± SE and 95% t-interval of train / in-test / out-test accuracy per model x method x group order.

    Args:
        sweep_dir: a sweep directory (`orbitbench sweep run` wrote it).
        format: `markdown` (to read, paste into a README) or `csv` (one row per model x method x order).
        output: also write the table to this file.
    """
    rows, unfinished = table_rows(Path(sweep_dir))
    text = _markdown(rows, unfinished, Path(sweep_dir)) if format == "markdown" else _csv(rows)
    if output is not None:
        atomic_write_text(Path(output), text)
    return text.rstrip("\n")
