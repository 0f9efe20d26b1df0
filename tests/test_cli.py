"""The `orbitbench` console script: one front end for every command, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orbitbench


def run(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("orbitbench", path=str(Path(sys.executable).parent))
    assert script is not None, "the orbitbench console script is not installed next to this Python"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60)


def test_version_and_help_from_the_console_script() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"orbitbench {orbitbench.__version__}"
    help_ = run("--help")
    assert help_.returncode == 0
    for command in ("fit", "theory", "sweep", "leaderboard"):
        assert command in help_.stdout


def test_unknown_command_is_one_line_and_exit_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "orbitbench: unknown command 'frobnicate'; expected one of fit, validate, test, predict, theory, sweep, "
        "leaderboard, models, predict-kernel (see `orbitbench --help`)"
    ]


REPO = Path(__file__).resolve().parents[1]


def test_group_help_lists_commands_without_importing_torch() -> None:
    # `orbitbench theory --help` must answer at once: it may not import the experiments (torch).
    code = ("import sys; from orbitbench.cli import main; assert main(['theory', '--help']) == 0; "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    for experiment in ("toy", "pairs", "cnn", "seeds", "multiclass"):
        assert f"  {experiment} " in result.stdout


def test_function_commands_take_config_files_and_report_bad_values_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text(f"spec: {REPO / 'sweeps/cpu_quick.yaml'}\nout: {tmp_path / 'sweep'}\nmodels: [paper_mlp]\n")
    listed = run("sweep", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines and all(line.startswith("todo  paper_mlp-n") for line in lines)
    bad = run("sweep", "run", str(REPO / "sweeps/cpu_quick.yaml"), "--jobs", "many")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["orbitbench: --jobs: expected int, got 'many'"]
    unknown = run("sweep", "frobnicate", "--x")
    assert unknown.returncode == 2 and "unknown command sweep 'frobnicate'" in unknown.stderr
    assert not (tmp_path / "sweep").exists()


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    result = run("theory", "toy", "--out", str(blocker / "toy"), "--orbit_sizes", "[4]", "--distances", "[1.0]")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"orbitbench: cannot create folder {blocker}/toy.partial: Not a directory"]
