"""The `orbitbench` console script: help, version and unknown commands, as a user runs it."""

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
        "orbitbench: unknown command 'frobnicate'; expected one of fit, validate, test, theory, sweep, "
        "leaderboard, predict-kernel (see `orbitbench --help`)"
    ]
