"""`orbitbench sweep agreement`: do two models fail on the same out-test digits, cell by cell?

Accuracies can match while the digits differ. This pairs the finished cells of two models (same
group order, leave-out class, seed and method; in one sweep directory or two), runs both last
checkpoints on the cell's split, and reports per-digit agreement of their right/wrong calls:
Cohen's kappa (0 = no more than two independent classifiers at the same accuracies, 1 = the same
digits fail) with a percentile bootstrap interval over digits (resampled within each cell), per
cell and pooled over cells. The question it was written for: does a network fail where its own
linearisation fails (`--model_b 'linearized(<model>)'`, docs/THEORY.md §9)?
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from orbitbench.errors import OrbitbenchError
from orbitbench.run.predict_kernel import load_checkpoint
from orbitbench.run.record import RECORD_FILE, load_record
from orbitbench.sweep.results import SweepState, cell_dir, read_sweep_dir

__all__ = ["AgreementReport", "CellAgreement", "agreement", "format_agreement", "kappa"]

SPLITS = ("out_test", "in_test")


@dataclass(frozen=True)
class CellAgreement:
    """One pair of cells: digits compared, both accuracies, same predicted digit, kappa [95% bootstrap]."""

    cell_a: str
    cell_b: str
    n: int
    acc_a: float
    acc_b: float
    same_prediction: float
    kappa: float
    low: float
    high: float


@dataclass(frozen=True)
class AgreementReport:
    model_a: str
    model_b: str
    split: str
    cells: list[CellAgreement]
    pooled: CellAgreement  # every cell's digits together (cell ids: "all")


def kappa(a: Tensor, b: Tensor) -> Tensor:
    """Cohen's kappa of right/wrong calls along the last dimension: bool [..., n] -> [...]; 0 where
    chance agreement is 1 (nothing varies), as `orbitbench.theory.agreement`."""
    p, q = a.double().mean(-1), b.double().mean(-1)
    observed = (a == b).double().mean(-1)
    chance = p * q + (1 - p) * (1 - q)
    return torch.where(chance < 1, (observed - chance) / (1 - chance).clamp_min(1e-300), torch.zeros_like(chance))


def _calls(root: Path, cell, split: str) -> tuple[Tensor, Tensor, Tensor]:
    """(pairs int64 [M, 2], predicted digit [M], label [M]) of a finished cell's last checkpoint."""
    record = load_record(cell_dir(root, cell) / RECORD_FILE)
    path = Path(record.last_checkpoint or "")
    path = path if path.is_absolute() else cell_dir(root, cell) / path
    if not path.is_file():
        raise OrbitbenchError(f"{cell_dir(root, cell)}: no last checkpoint ({path}); per-digit agreement needs it")
    model, dm, _, _ = load_checkpoint(path)
    pairs = dm.splits[split]
    net = model.net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(dm.materialize(chunk[:, 0], chunk[:, 1])).argmax(1) for chunk in pairs.split(2048)])
    return pairs, predicted, dm.digits.labels[pairs[:, 0]]


def _summary(a_id: str, b_id: str, right_a: list[Tensor], right_b: list[Tensor], same: Tensor,
             n_boot: int, generator: torch.Generator) -> CellAgreement:
    """Kappa of the concatenated cells, its bootstrap over digits resampled within each cell."""
    samples_a, samples_b = [], []
    for a, b in zip(right_a, right_b):
        index = torch.randint(len(a), (n_boot, len(a)), generator=generator)  # [R, n]
        samples_a.append(a[index])
        samples_b.append(b[index])
    boot = kappa(torch.cat(samples_a, 1), torch.cat(samples_b, 1))  # [R]
    a, b = torch.cat(right_a), torch.cat(right_b)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)).tolist()
    return CellAgreement(a_id, b_id, len(a), float(a.double().mean()), float(b.double().mean()),
                         float(same.double().mean()), float(kappa(a, b)), low, high)  # fmt: skip


def _models(state: SweepState, model: str | None, what: str) -> str:
    found = list(dict.fromkeys(c.model for c in state.spec.cells()))
    if model is None:
        if len(found) != 1:
            raise OrbitbenchError(f"{state.root}: its grid has models {found}; choose one with --{what}")
        return found[0]
    if model not in found:
        raise OrbitbenchError(f"{state.root}: no model {model!r} in its grid (it has {', '.join(found)})")
    return model


def agreement(sweep_a: Path, sweep_b: Path | None = None, model_a: str | None = None, model_b: str | None = None,
              split: str = "out_test", n_boot: int = 2000, seed: int = 0) -> AgreementReport:
    """Per-digit agreement (Cohen's kappa of right/wrong calls, 95% bootstrap interval) of two models' cells.

    Args:
        sweep_a: the sweep directory of model A.
        sweep_b: the sweep directory of model B (default: `sweep_a`).
        model_a: model A (default: the only model of sweep A's grid).
        model_b: model B (default: `linearized(<model A>)`).
        split: out_test (the held-out poses) or in_test.
        n_boot: bootstrap resamples.
        seed: the bootstrap's random draw.
    """
    if split not in SPLITS:
        raise OrbitbenchError(f"--split {split!r}; accepted: {', '.join(SPLITS)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise OrbitbenchError(f"--n_boot {n_boot!r}; accepted: an integer >= 10")
    state_a = read_sweep_dir(sweep_a)
    state_b = state_a if sweep_b is None else read_sweep_dir(sweep_b)
    model_a = _models(state_a, model_a, "model_a")
    model_b = _models(state_b, model_b or f"linearized({model_a})", "model_b")
    key = lambda c: (c.n_poses, c.leave_out_class, c.seed, c.method)  # noqa: E731
    cells_b = {key(c): c for c in state_b.spec.cells() if c.model == model_b and c.cell_id in state_b.results}
    pairs = [(c, cells_b[key(c)]) for c in state_a.spec.cells()
             if c.model == model_a and c.cell_id in state_a.results and key(c) in cells_b]  # fmt: skip
    if not pairs:
        raise OrbitbenchError(f"no finished cells of {model_a!r} ({state_a.root}) and {model_b!r} ({state_b.root}) "
                              "share a group order, leave-out class, seed and method")  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    rows, right_a, right_b, same = [], [], [], []
    for cell_a, cell_b in pairs:
        pairs_a, predicted_a, labels = _calls(state_a.root, cell_a, split)
        pairs_b, predicted_b, _ = _calls(state_b.root, cell_b, split)
        if not torch.equal(pairs_a, pairs_b):
            raise OrbitbenchError(f"cells {cell_a.cell_id} and {cell_b.cell_id} do not hold the same {split} digits "
                                  "(different data settings); they cannot be compared digit by digit")  # fmt: skip
        if not len(labels):
            continue
        a, b, s = predicted_a == labels, predicted_b == labels, predicted_a == predicted_b
        rows.append(_summary(cell_a.cell_id, cell_b.cell_id, [a], [b], s, n_boot, generator))
        right_a, right_b, same = [*right_a, a], [*right_b, b], [*same, s]
    if not rows:
        raise OrbitbenchError(f"the paired cells have no {split} digits")
    pooled = _summary("all", "all", right_a, right_b, torch.cat(same), n_boot, generator)
    return AgreementReport(model_a, model_b, split, rows, pooled)


def format_agreement(report: AgreementReport) -> str:
    """One line per pair of cells and the pooled line."""
    head = (f"per-digit agreement on {report.split}: A = {report.model_a}, B = {report.model_b} "
            "(kappa of right/wrong calls, 95% bootstrap interval over digits)")  # fmt: skip
    lines = [head, f"{'cell A':<28} {'n':>6} {'acc A':>7} {'acc B':>7} {'same':>6} {'kappa':>6}  95% interval"]
    for row in [*report.cells, report.pooled]:
        lines.append(f"{row.cell_a:<28} {row.n:>6} {row.acc_a:>7.3f} {row.acc_b:>7.3f} {row.same_prediction:>6.3f} "
                     f"{row.kappa:>6.3f}  [{row.low:.3f}, {row.high:.3f}]")  # fmt: skip
    lines.append("same: both predicted the same digit; kappa 0 = no more than chance at these accuracies")
    return "\n".join(lines)
