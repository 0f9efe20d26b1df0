"""What produced a result: the package versions and the git commit a run record and an entry carry."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from pathlib import Path

VERSIONED_PACKAGES = ("orbitbench", "torch", "lightning", "timm", "numpy")


def versions() -> dict[str, str]:
    """Python, the packages and the torch thread count that decide a result's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:  # CPU results are bit-identical only at the same intra-op thread count
        found["torch_threads"] = str(torch.get_num_threads())
    return found


CODE_FOLDERS = ("models", "datamodules", "orbitbench")  # where the zoo's builders and the package live


def _is_code(path: str) -> bool:
    """An untracked path (relative to the checkout's top, as porcelain prints it) that may have run:
    anything in a code folder (models/my_net.py, models/my_net.yaml) or a Python file anywhere (a
    `--model.backbone my_builder:net` beside the checkout's top)."""
    return path.startswith(tuple(f"{folder}/" for folder in CODE_FOLDERS)) or path.endswith(".py")


@lru_cache(maxsize=1)
def git_commit(here: Path | None = None) -> str | None:
    """The commit of the orbitbench checkout this code runs from, `<sha>+dirty` when the code that
    ran is not that commit: tracked files differ from it, or an untracked (not ignored) file may
    have run (`_is_code`: a new builder in models/ that no commit holds). None outside a git checkout."""
    here = here or Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=all"],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    if done.returncode != 0 or len(commit) != 40:
        return None
    changed = [line for line in status.stdout.splitlines() if not line.startswith("??") or _is_code(line[3:].strip('"'))]
    return commit + "+dirty" if status.returncode == 0 and changed else commit
