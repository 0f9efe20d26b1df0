"""`orbitbench sweep agreement`: per-digit kappa between two models' cells, on two tiny real sweeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orbitbench.errors import OrbitbenchError
from orbitbench.sweep import run
from orbitbench.sweep.agreement import agreement, format_agreement, kappa

pytestmark = [pytest.mark.timeout(400), pytest.mark.usefixtures("one_thread")]

SWEEP = """\
name: {name}
track: test-tiny
datamodule: RotatedMNIST
grid:
  model: ['{model}']
  n_angles: [4]
  leave_out_class: [3, 7]
  seed: [0]
fit:
  trainer.max_epochs: 2
  data.source: mnist5k
  data.images_per_class: 10
  data.batch_size: 64
"""


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny sweeps on the same protocol: paper_mlp and its linearisation (2 cells each)."""
    folder = tmp_path_factory.mktemp("agreement")
    roots = []
    for name, model in (("plain", "paper_mlp"), ("lin", "linearized(paper_mlp)")):
        spec = folder / f"{name}.yaml"
        spec.write_text(SWEEP.format(name=name, model=model))
        run(spec, out=folder / name, in_process=True, progress=False)
        roots.append(folder / name)
    return roots[0], roots[1]


def test_kappa_against_hand_counts() -> None:
    a = torch.tensor([True, True, False, False, True, False, True, True])
    b = torch.tensor([True, False, False, False, True, True, True, True])
    # observed 6/8; p = q = 5/8: chance 25/64 + 9/64 = 34/64; kappa = (48/64 - 34/64) / (30/64) = 14/30
    assert float(kappa(a, b)) == pytest.approx(14 / 30, abs=1e-12)
    assert float(kappa(a, a)) == pytest.approx(1.0)
    assert float(kappa(torch.ones(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))) == 0.0


def test_a_model_agrees_with_itself_and_pairs_with_its_linearisation(sweeps) -> None:
    plain, linear = sweeps
    itself = agreement(plain, plain, "paper_mlp", "paper_mlp", n_boot=200)
    assert [r.cell_a for r in itself.cells] == ["paper_mlp-n4-c3-s0", "paper_mlp-n4-c7-s0"]
    assert all(r.same_prediction == 1.0 and r.acc_a == r.acc_b for r in itself.cells)
    assert itself.pooled.n == 20  # 10 upright 3s and 10 upright 7s
    report = agreement(plain, linear, n_boot=200)  # model B defaults to linearized(paper_mlp)
    assert report.model_b == "linearized(paper_mlp)" and [r.cell_b for r in report.cells] == [
        "linearized_paper_mlp-n4-c3-s0", "linearized_paper_mlp-n4-c7-s0"]
    pooled = report.pooled
    assert pooled.n == 20 and -1 <= pooled.low <= pooled.kappa <= pooled.high <= 1
    # the accuracies are the cells' own recorded out-test accuracies, recomputed from the checkpoints
    from orbitbench.sweep import read_sweep_dir

    recorded = {c: r.out_test_acc for c, r in read_sweep_dir(linear).results.items()}
    assert [r.acc_b for r in report.cells] == pytest.approx([recorded[r.cell_b] for r in report.cells], abs=1e-9)
    assert "kappa" in format_agreement(report) and "all" in format_agreement(report)


def test_bad_requests_are_one_line(sweeps) -> None:
    plain, linear = sweeps
    with pytest.raises(OrbitbenchError, match="no model 'paper_vit'"):
        agreement(plain, linear, model_b="paper_vit")
    with pytest.raises(OrbitbenchError, match="--split 'train'"):
        agreement(plain, linear, split="train")


def test_the_command_line(sweeps) -> None:
    plain, linear = sweeps
    done = subprocess.run([sys.executable, "-m", "orbitbench", "sweep", "agreement", str(plain), "--sweep_b", str(linear),
                           "--n_boot", "100"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "B = linearized(paper_mlp)" in done.stdout and "linearized-paper_mlp-n4-c3-s0" not in done.stdout
