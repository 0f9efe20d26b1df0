"""Safe writers (`orbitbench.io`), on real processes: claims die with their holders, a write-once
folder is refused to a second live writer, reclaimed from a dead one, and never left behind by
SIGTERM (`orbitbench theory` end to end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitbench.errors import OrbitbenchError
from orbitbench.io import WriteOnceFolder, atomic_write_text, try_claim

REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from orbitbench.io import {what}; x = {make}; print('ready', flush=True); time.sleep(600)"


def _holder(what: str, make: str) -> subprocess.Popen:
    """A process that takes something (`make`) and sleeps: kill it to see what it leaves behind."""
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(what=what, make=make)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_claim_is_exclusive_and_freed_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / "cell.lock"
    holder = _holder("try_claim", f"try_claim({str(lock)!r})")
    try:
        assert try_claim(lock) is None  # held by a live process
    finally:
        holder.kill()
        holder.wait()
    claim = try_claim(lock)  # SIGKILL left no stale lock
    assert claim is not None
    assert try_claim(lock) is None  # exclusive within one process too (another open file)
    claim.release()
    assert try_claim(lock) is not None


def test_a_write_once_folder_refuses_a_live_writer_and_reclaims_a_dead_ones(tmp_path):
    final = tmp_path / "run"
    holder = _holder("WriteOnceFolder", f"WriteOnceFolder({str(final)!r}); (x.path / 'half.csv').write_text('1,')")
    try:
        with pytest.raises(OrbitbenchError, match="is being written by another process"):
            WriteOnceFolder(final)
        assert (tmp_path / "run.partial" / "half.csv").exists()  # the refusal touched nothing
    finally:
        holder.kill()
        holder.wait()
    folder = WriteOnceFolder(final)  # the dead writer's half-written folder is ours now, emptied
    assert [p.name for p in folder.path.iterdir()] == [WriteOnceFolder.LOCK]
    atomic_write_text(folder.path / "summary.json", "{}\n")
    assert folder.commit() == final
    assert sorted(p.name for p in final.iterdir()) == ["summary.json"] and not folder.path.exists()
    with pytest.raises(OrbitbenchError, match="already exists"):
        WriteOnceFolder(final)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "table.csv"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and os.listdir(path.parent) == ["table.csv"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_theory_killed_with_sigterm_leaves_no_partial_folder(tmp_path):
    out = tmp_path / "toy"
    command = [sys.executable, "-m", "orbitbench", "theory", "toy", "--out", str(out),
               "--orbit_sizes", "[1500,1500,1500,1500]", "--distances", "[0.1,0.2,0.3]"]  # long enough to be killed
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    partial = tmp_path / "toy.partial"
    deadline = time.monotonic() + 120
    try:
        while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert not partial.exists() and not out.exists()


def test_an_untracked_builder_marks_the_commit_dirty(tmp_path: Path) -> None:
    """A record names the code that ran: a new models/ file no commit holds makes it `<sha>+dirty`;
    untracked notes and ignored files do not."""
    from orbitbench.provenance import git_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "models").mkdir()
    (tmp_path / "orbitbench").mkdir()
    (tmp_path / "models" / "paper.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("models/*.pyc\nrun.py\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "zoo")
    sha = git("rev-parse", "HEAD").strip()
    here = tmp_path / "orbitbench"
    assert git_commit(here) == sha
    git_commit.cache_clear()  # one answer per process otherwise
    (tmp_path / "NOTES.txt").write_text("not code\n")
    (tmp_path / "models" / "cache.pyc").write_bytes(b"ignored")
    (tmp_path / "run.py").write_text("ignored\n")
    assert git_commit(here) == sha
    (tmp_path / "models" / "my_net.py").write_text("def my_net(num_classes): ...\n")
    git_commit.cache_clear()  # one answer per process otherwise
    assert git_commit(here) == sha + "+dirty"
    (tmp_path / "models" / "my_net.py").unlink()
    (tmp_path / "my_builder.py").write_text("def net(num_classes): ...\n")  # a dotted-path builder at the top
    git_commit.cache_clear()  # one answer per process otherwise
    assert git_commit(here) == sha + "+dirty"
