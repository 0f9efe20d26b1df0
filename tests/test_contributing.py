"""CONTRIBUTING.md's route onto the ranked track, run as the page shows it.

The commands between the `contributing-route` markers are read out of CONTRIBUTING.md and run with
bash in a scratch checkout (a copy of `sweeps/mnist_cpu.yaml`, an empty leaderboard), so the test
fails when the page drifts from what works. The override the page documents, and nothing else, is
applied to the copy: the embedded subset, leave-out classes 3 / 7, one epoch, `min_in_test_acc` 0.
The `pip install` line is not run: `make install` installs the example package it names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SRC = REPO / "examples" / "orbitbench-plugin-example" / "src"
MARKERS = re.compile(r"<!-- contributing-route: start -->\s*```bash\n(.*?)```\s*<!-- contributing-route: end -->", re.S)


def route_commands() -> str:
    """The documented block, minus the `pip install` of the example package (installed already)."""
    (block,) = MARKERS.findall((REPO / "CONTRIBUTING.md").read_text())
    return "".join(line + "\n" for line in block.splitlines() if not line.startswith("pip install"))


def documented_override(sweep_text: str) -> str:
    """What CONTRIBUTING.md says its test changes in the copy: data source, classes, epochs, floor, kernel scale."""
    text = sweep_text.replace("data.source: mnist\n", "data.source: mnist5k\n")
    text = text.replace("leave_out_class: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "leave_out_class: [3, 7]")
    text = text.replace("min_in_test_acc: 0.95", "min_in_test_acc: 0.0")
    for at_scale, small in (("regression_points: 16000\n", "regression_points: 1000\n"),
                            ("regression_curve: [1000, 4000, 16000]\n", "regression_curve: [500, 1000]\n"),
                            ("  trainer.callbacks.time_budget_s: 60\n", "  trainer.callbacks.time_budget_s: 5\n")):
        assert text.count(at_scale) == 1, f"sweeps/mnist_cpu.yaml changed shape: {at_scale!r}"
        text = text.replace(at_scale, small)
    assert text.count("mnist5k") == 1 and "[3, 7]" in text and "min_in_test_acc: 0.0" in text, "sweeps/mnist_cpu.yaml changed shape"
    return text


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE_SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def orbitbench_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("orbitbench: ")]


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_the_contributing_route_runs_as_written_and_the_convergence_rule_refuses_a_network_that_did_not_learn(tmp_path) -> None:
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "leaderboard" / "entries").mkdir(parents=True)
    sweep = tmp_path / "sweeps" / "mnist_cpu.yaml"
    sweep.write_text(documented_override((REPO / "sweeps" / "mnist_cpu.yaml").read_text()))
    script = route_commands().replace("trainer.max_epochs: 10", "trainer.max_epochs: 1")
    script = script.replace("trainer.check_val_every_n_epoch: 10", "trainer.check_val_every_n_epoch: 1")

    done = bash(script, tmp_path)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    entry_path = tmp_path / "leaderboard" / "entries" / "mnist-cpu__tiny_orbit_mlp.json"
    entry = json.loads(entry_path.read_text())
    assert entry["model"] == "tiny_orbit_mlp" and entry["sweep"] == "mnist_cpu" and len(entry["cells"]) == 4
    assert entry["config"]["trainer.max_epochs"] == 1 and entry["authors"] == ["Your Name"]
    assert "tiny_orbit_mlp" in (tmp_path / "leaderboard" / "README.md").read_text()
    assert "1 entries valid" in done.stdout

    # The track's own rule back in place: the one-epoch network (in-test far below 0.95) is refused.
    sweep.write_text(sweep.read_text().replace("min_in_test_acc: 0.0", "min_in_test_acc: 0.95"))
    before = entry_path.read_bytes()
    for command in ("orbitbench leaderboard check",
                    "orbitbench leaderboard add runs/sweeps/tiny_orbit_mlp --models '[tiny_orbit_mlp]' --replace true"):
        refused = bash(command, tmp_path)
        assert refused.returncode == 2, refused.stderr[-2000:]
        (line,) = orbitbench_lines(refused.stderr)
        assert "below the track's min_in_test_acc 0.95 (sweeps/mnist_cpu.yaml)" in line and "not learnt the task" in line
        assert "Traceback" not in refused.stderr
    assert entry_path.read_bytes() == before
