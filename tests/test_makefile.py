"""The Makefile installs only what is stale: `make run` / `make test` on an up-to-date venv run the
command and nothing else (no pip, no install banner); a venv last pointed at another checkout, or a
changed pyproject.toml, re-installs. Read from `make --dry-run` against a venv folder of stamps."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def dry_run(target: str, venv: Path, data: Path) -> str:
    env = {**os.environ, "ORBITBENCH_DATA": str(data)}
    done = subprocess.run([MAKE, "--dry-run", "--no-print-directory", target, f"VENV={venv}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def up_to_date(tmp_path) -> tuple[Path, Path]:
    """A venv folder whose stamps say: built from this pyproject.toml, editable-installed from this checkout;
    and a data folder holding full MNIST's four files."""
    venv, data = tmp_path / "venv", tmp_path / "data"
    venv.mkdir()
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    (venv / f".installed-{hashlib.sha256((REPO / 'pyproject.toml').read_bytes()).hexdigest()[:16]}").touch()
    time.sleep(0.01)
    editable = venv / f".editable-{hashlib.sha256(str(REPO).encode()).hexdigest()[:16]}"
    editable.touch()
    future = time.time() + 5  # newer than pyproject.toml even if a checkout touched it just now
    os.utime(editable, (future, future))
    return venv, data


def test_run_and_test_install_nothing_when_nothing_changed(up_to_date) -> None:
    venv, data = up_to_date
    run = dry_run("run", venv, data)
    assert "pip" not in run and "orbitbench data" not in run
    assert f"{venv}/bin/orbitbench fit --config models/paper_mlp.yaml" in run and "--config configs/make_run.yaml --data.source auto" in run
    test = dry_run("test", venv, data)
    assert "pip" not in test and "pytest" in test


def test_another_checkout_or_missing_data_reinstall_only_what_is_stale(up_to_date) -> None:
    venv, data = up_to_date
    for stamp in venv.glob(".editable-*"):
        stamp.rename(venv / ".editable-0000000000000000")  # the venv was last pointed at another checkout
    text = dry_run("run", venv, data)
    assert "pip install -q --no-deps --no-build-isolation -e . -e examples/orbitbench-plugin-example" in text
    assert "pip install -q --upgrade pip" not in text  # the venv itself is kept
    (data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert "orbitbench data --fetch true" in dry_run("run", venv, data)


def test_a_fresh_clone_with_the_same_pyproject_keeps_the_cached_venv(up_to_date) -> None:
    """A clone's pyproject.toml is newer than a cached venv's stamp; the stamp is named by the file's
    hash, so the venv is kept (only the checkout's editable install is redone)."""
    venv, data = up_to_date
    (stamp,) = venv.glob(".installed-*")
    os.utime(stamp, (1_000_000_000, 1_000_000_000))  # 2001: older than any checkout
    for editable in venv.glob(".editable-*"):
        os.utime(editable, (1_000_000_000, 1_000_000_000))
    text = dry_run("test", venv, data)
    assert "pip install -q --upgrade pip" not in text and "-m venv" not in text
    assert "pip install -q --no-deps --no-build-isolation -e ." in text
    stamp.rename(venv / ".installed-0000000000000000")  # another pyproject.toml: a new venv
    assert "pip install -q --upgrade pip" in dry_run("test", venv, data)
