"""Loading a leaderboard cell's network: `orbitbench.load_model` and `orbitbench leaderboard load`.

On a committed `mnist5k-quick` entry (a cell trains in seconds): the first call re-runs the cell with
the entry's recorded settings, checks its metrics bit-identical and caches the checkpoint; the
network it returns scores the entry's own out-test and in-test accuracy on the cell's data; the
command line then reads the same checkpoint from the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import orbitbench
from orbitbench.datamodules import RotatedMNIST
from orbitbench.splits import split_accuracy

REPO = Path(__file__).resolve().parents[1]
ENTRY, CELL = "mnist5k-quick__paper_mlp", "paper_mlp-n2-c3-s0"
BOARD = {"root": REPO / "leaderboard", "sweeps": REPO / "sweeps"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orbitbench", "leaderboard", "load", *args], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ranked_cell_network_is_rerun_checked_cached_and_scores_the_entry(tmp_path, monkeypatch, one_thread) -> None:
    monkeypatch.setenv("ORBITBENCH_MODELS", str(tmp_path / "cache"))
    entry = json.loads((REPO / "leaderboard" / "entries" / f"{ENTRY}.json").read_text())
    cell = next(c for c in entry["cells"] if c["cell"] == CELL)

    network = orbitbench.load_model(ENTRY, CELL, **BOARD)
    cached = tmp_path / "cache" / ENTRY / f"{CELL}.ckpt"
    assert cached.is_file() and not network.training
    data = RotatedMNIST(**{k: v for k, v in cell["data"]["hparams"].items()})
    data.setup("fit")
    with torch.no_grad():
        assert split_accuracy(network, data, "out_test", "cpu") == pytest.approx(cell["metrics"]["out_test_acc"], abs=1e-6)
        assert split_accuracy(network, data, "in_test", "cpu") == pytest.approx(cell["metrics"]["in_test_acc"], abs=1e-6)

    out = tmp_path / "net.ckpt"
    again = cli(f"mnist5k-quick/{ENTRY.split('__')[1]}", "--cell", CELL, "--out", str(out), env={"ORBITBENCH_MODELS": str(tmp_path / "cache")})
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{CELL}: from the cache" in again.stdout and out.read_bytes() == cached.read_bytes()


@pytest.mark.parametrize(("args", "fragment"), [
    ((ENTRY, "--cell", "paper_mlp-n3-c3-s0"), "has no cell 'paper_mlp-n3-c3-s0'; its cells: paper_mlp-n2-c3-s0"),
    (("mnist5k-quick__no_such_model", "--cell", CELL), "no leaderboard entry 'mnist5k-quick__no_such_model'"),
    ((ENTRY,), "--cell is required"),
    ((ENTRY, "--cell", CELL, "--out", "no/such/folder/net.ckpt"), "--out no/such/folder/net.ckpt: expected a file name in an existing folder"),
])
def test_bad_requests_are_one_line_and_write_nothing(args, fragment, tmp_path) -> None:
    out = [] if "--out" in args else ["--out", str(tmp_path / "net.ckpt")]
    done = cli(*args, *out, env={"ORBITBENCH_MODELS": str(tmp_path / "cache")})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("orbitbench: ") and fragment in lines[0], done.stderr
    assert not (tmp_path / "net.ckpt").exists() and not (tmp_path / "cache").exists()
