"""Run folders are claimed before the Trainer is built, so two runs never share one.

Lightning picks `version_N` by listing the folder when the logger first asks, so two identical
fits started together both log into `version_0` (mixed event files, `last.ckpt` beside
`last-v1.ckpt`, one record overwriting the other). Here the folder is taken first:

- a new run creates `version_N` with one atomic `mkdir` (the next number is retried on EEXIST)
  and hands its name to the logger as `version`; only a folder created this way is the run's to
  remove or mark FAILED when it fails (`orbitbench.run.checkpoints.discard_failed_run`);
- every run also holds an `orbitbench.io.Claim` on `<folder>/.orbitbench.lock` while it runs
  (released by the kernel however the process ends), so resuming a run (`--ckpt_path last`) or
  logging into a folder given by name while another process writes there is one error line;
- under DDP the command line is re-run per rank: rank 0 claims and passes the folders on in
  `ORBITBENCH_RUN_FOLDERS`, the other ranks log into those without claiming.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.io import Claim, make_dirs, try_claim

LOCK = ".orbitbench.lock"
RANK_ENV = "ORBITBENCH_RUN_FOLDERS"  # rank 0's folders, for the ranks DDP starts from the same command line
NAMED_LOGGERS = ("TensorBoardLogger", "CSVLogger")


@dataclass
class ClaimedFolder:
    """A run folder this process holds; `created`: made by this process (so its to clean up)."""

    path: Path
    claim: Claim | None
    created: bool
    parents_made: tuple[Path, ...] = ()  # folders above `path` this process created, outermost first

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None


def _lock(path: Path) -> Claim:
    claim = try_claim(path / LOCK)
    if claim is None:
        raise OrbitbenchError(f"run folder {path} is in use by another orbitbench process; wait for it to "
                              "finish, or start a new run (without --ckpt_path last or a fixed logger version)")
    return claim


def claim_new(candidates: Iterable[Path]) -> ClaimedFolder:
    """The first of `candidates` this process creates (atomic `mkdir`), claimed."""
    for path in candidates:
        parents_made = _missing_parents(path)
        make_dirs(path.parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except FileNotFoundError:  # the parent was removed meanwhile (a failed run cleaning up): again
            make_dirs(path.parent)
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
        except OSError as error:
            raise OrbitbenchError(f"cannot create folder {path}: {error.strerror or error}") from None
        return ClaimedFolder(path, _lock(path), created=True, parents_made=parents_made)
    raise OrbitbenchError("no free run folder")  # candidates are unbounded in practice


def _missing_parents(path: Path) -> tuple[Path, ...]:
    return tuple(reversed([parent for parent in Path(path).absolute().parents if not parent.exists()]))


def versions(parent: Path) -> Iterator[Path]:
    """`<parent>/version_N` from one past the largest existing N, for ever (TensorBoard's numbering)."""
    while True:
        numbers = [int(m.group(1)) for p in (parent.iterdir() if parent.is_dir() else [])
                   if (m := re.fullmatch(r"version_(\d+)", p.name))]
        yield parent / f"version_{max(numbers, default=-1) + 1}"


def numbered(parent: Path, stem: str) -> Iterator[Path]:
    """`<parent>/<stem>`, then `<stem>-2`, `<stem>-3`, ... (evaluations started in the same second)."""
    yield parent / stem
    count = 2
    while True:
        yield parent / f"{stem}-{count}"
        count += 1


def claim_existing(path: Path) -> ClaimedFolder:
    """A folder named by the user (or a run being resumed): created if missing, claimed either way."""
    existed, parents_made = path.exists(), _missing_parents(path)
    make_dirs(path)
    return ClaimedFolder(path, _lock(path), created=not existed, parents_made=parents_made)


def _is_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK"))


def claim_run_folders(config, new_folder_parent: Path, held: Iterable[ClaimedFolder] = ()) -> list[ClaimedFolder]:
    """Give every file-writing logger of the subcommand's `config` (and the Trainer's
    `default_root_dir` when there is no logger) a folder this process holds; set its `version`.
    `held`: folders claimed already (an evaluation's, `checkpoints.place_eval_run`), not claimed twice."""
    inherited = json.loads(os.environ.get(RANK_ENV) or "{}") if not _is_rank_zero() else None
    claimed: dict[Path, ClaimedFolder] = {folder.path: folder for folder in held}  # parent or folder -> claim

    def take(key: Path, new: bool) -> ClaimedFolder:
        if key not in claimed:
            claimed[key] = (claim_new(versions(key)) if new else claim_existing(key))
        return claimed[key]

    logger = config.trainer.logger
    loggers = logger if isinstance(logger, list) else [logger]
    named = [each for each in loggers if each is not None and not isinstance(each, bool)
             and str(each.class_path).endswith(NAMED_LOGGERS)]
    for each in named:
        args = each.init_args
        parent = Path(str(args.get("save_dir") or "."), str(args.get("name") or ""))
        version = args.get("version")
        if inherited is not None:  # another DDP rank: rank 0's folder, no claim
            args.version = inherited.get(str(parent), version)
        elif version is None:
            args.version = take(parent, new=True).path.name
        else:
            take(parent / (version if isinstance(version, str) else f"version_{version}"), new=False)
    if logger in (False, None):
        root = config.trainer.get("default_root_dir")
        if inherited is not None:
            config.trainer.default_root_dir = inherited.get("default_root_dir", root)
        elif root:
            take(Path(root), new=False)
        else:
            # No logger: Lightning would write config.yaml, record.json and checkpoints/ into the
            # working folder. They go where a logged run's would, `<runs>/<run name>/version_N`.
            config.trainer.default_root_dir = str(take(new_folder_parent, new=True).path)
    held_paths = {folder.path for folder in held}
    if inherited is None:
        shared = {str(key): folder.path.name for key, folder in claimed.items() if folder.path.parent == key}
        if logger in (False, None) and config.trainer.get("default_root_dir"):
            shared["default_root_dir"] = str(config.trainer.default_root_dir)
        os.environ[RANK_ENV] = json.dumps(shared)
    return [folder for folder in claimed.values() if folder.path not in held_paths]


def release_all(folders: list[ClaimedFolder], failed: bool = False) -> None:
    """Unclaim; after a failure, also remove the folders this process created and never used
    (settings refused after the claim: nothing but the lock file in them)."""
    os.environ.pop(RANK_ENV, None)
    for folder in folders:
        unused = failed and folder.created and folder.path.is_dir() and {p.name for p in folder.path.iterdir()} <= {LOCK}
        if unused:
            remove(folder)
        folder.release()


def remove(folder: ClaimedFolder) -> None:
    """Remove a folder this process created, and the folders it created above it where empty."""
    shutil.rmtree(folder.path, ignore_errors=True)
    for parent in reversed(folder.parents_made):
        with contextlib.suppress(OSError):  # kept where another run's folder is beside it
            parent.rmdir()


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC / EFBIG / EDQUOT anywhere in the chain (a checkpoint or log that did not fit)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False
