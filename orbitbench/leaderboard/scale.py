"""The kernel regression at the network's scale in an entry (docs/THEORY.md §10): what a cell keeps
of its run record, and what a group order's statistics derive from its cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from orbitbench.leaderboard.schema import EntryCell, KappaStat, ScalePrediction, ScaleStat, summarize
from orbitbench.run.record import RunRecord


def cell_at_scale(record: RunRecord, defined: Iterable[str]) -> dict[str, ScalePrediction]:
    """predictor -> its at-scale regression, for the predictors `defined` that measured one."""
    measured = record.predictions.predictors if record.predictions is not None else {}
    out = {}
    for name in defined:
        found = measured.get(name)
        if found is None or None in (found.scale_out_test_acc, found.scale_in_test_acc, found.regression_m):
            continue
        out[name] = ScalePrediction(
            out_test=float(found.scale_out_test_acc), in_test=float(found.scale_in_test_acc),
            kappa=None if found.scale_kappa is None else float(found.scale_kappa),
            kappa_ci=None if found.scale_kappa_ci is None else [float(v) for v in found.scale_kappa_ci],
            m=int(found.regression_m))  # fmt: skip
    return out


def order_at_scale(group: Sequence[EntryCell], names: Iterable[str]) -> dict[str, ScaleStat]:
    """predictor -> statistics over the cells of one group order; only where every cell has it."""
    out = {}
    for name in names:
        found = [c.at_scale[name] for c in group if name in c.at_scale]
        if not found or len(found) != len(group):
            continue
        kappas = [s.kappa for s in found if s.kappa is not None]
        out[name] = ScaleStat(
            out_test=summarize([s.out_test for s in found]), in_test=summarize([s.in_test for s in found]),
            kappa=summarize(kappas, KappaStat) if len(kappas) == len(found) else None, m=min(s.m for s in found))  # fmt: skip
    return out


def value_pairs(entry: EntryCell, again: EntryCell) -> list[tuple[float | None, float | None]]:
    """The at-scale numbers an entry's cell holds, paired with a re-run's (a verification compares
    them; a re-run that lacks one is off by inf). A cell seeded before the at-scale regression existed
    vouches for none, so the numbers a re-run adds are not compared."""
    pairs: list[tuple[float | None, float | None]] = []
    a, b = entry, again
    for name in a.at_scale:
        x, y = a.at_scale.get(name), b.at_scale.get(name)
        for field in ("out_test", "in_test", "kappa"):
            pairs.append((None if x is None else getattr(x, field), None if y is None else getattr(y, field)))
        pairs.append((None if x is None else float(x.m), None if y is None else float(y.m)))
    return pairs


def rerun_settings(cell: EntryCell) -> dict[str, Any]:
    """Fit settings that make a re-run regress each empirical kernel on the m the cell holds: that m
    came from a time budget (`time_budget_s`), which another machine, or another load, spends on a
    different m. Analytic twins regress on a fixed number of points and need none."""
    pinned = {name: found.m for name, found in cell.at_scale.items() if name != "infinite"}
    return {"trainer.callbacks.empirical_points": pinned} if pinned else {}
