"""Reading and writing files safely: bounded regular-file reads, atomic files, exclusive claims, write-once folders.

One mechanism for each concern, shared by training (the run record), the sweep (cells, results),
the leaderboard and the theory experiments:

- `atomic_write_text` / `atomic_write_bytes`: readers see the old file or the whole new one;
- `Claim`: an exclusive lock on a file (`flock`), released by the kernel when every process
  holding it has died, so a crash never leaves a stale lock; a child process handed the
  descriptor keeps the claim alive for as long as it runs;
- `WriteOnceFolder`: a folder built under `<name>.partial` and renamed into place when complete;
  an abandoned `.partial` (its writer died) is cleared by the next writer, a live one refuses it;
- `one_line_validation_error`: a pydantic report as the one line the CLI prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import stat
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orbitbench.errors import OrbitbenchError

if TYPE_CHECKING:
    from pydantic import ValidationError



def as_json_value(value: Any) -> Any:
    """Settings as they read back from JSON or YAML (tuples and sequences as lists, mappings and
    namespaces as dicts), so a checkpoint's, a record's and a command line's settings compare equal."""
    if isinstance(value, (list, tuple)):
        return [as_json_value(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: as_json_value(v) for k, v in dict(value).items()}
    return value


def make_dirs(path: Path) -> Path:
    """`mkdir -p`, with one clear line where the file system says no (read-only, a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OrbitbenchError(f"cannot create folder {path}: {error.strerror or error}") from None
    return path


MAX_TEXT_BYTES = 16 * 2**20  # a config, an entry, a run record: far below; /dev/zero or a 10 GB file: refused
MAX_DATA_BYTES = 64 * 2**20  # a data file (full MNIST's largest is 47 MB)


def open_regular_file(path: str | Path, what: str = "", max_bytes: int = MAX_TEXT_BYTES, follow_links: bool = True):
    """A binary handle on a regular file of at most `max_bytes` (by its size now), else one line.

    Opened with O_NONBLOCK, so a FIFO cannot hang the reader, and checked with fstat on the opened
    descriptor: a device, FIFO, socket or folder is refused whatever name or link led to it. With
    `follow_links=False` a symbolic link is refused itself (what a pull request can add)."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        if not follow_links and path.is_symlink():
            raise OrbitbenchError(f"{where}: is a symbolic link; expected a regular file")
        if path.is_dir():
            raise OrbitbenchError(f"{where}: is a folder, expected a file")
        if not path.exists():
            link = " (a symbolic link to a missing file)" if path.is_symlink() else ""
            raise OrbitbenchError(f"{where}: no such file{link}")
        fd = os.open(path, flags | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0)))
    except OSError as error:
        raise OrbitbenchError(f"{where}: cannot read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OrbitbenchError(f"{where}: not a regular file (a device, FIFO or socket); expected a file")
        if info.st_size > max_bytes:
            raise OrbitbenchError(f"{where}: {info.st_size:,} bytes, more than the {max_bytes:,} accepted")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes_file(path: str | Path, what: str = "", max_bytes: int = MAX_TEXT_BYTES, follow_links: bool = True) -> bytes:
    """The bytes of a regular file (`open_regular_file`), read up to `max_bytes` + 1 so a file
    that grows while it is read is refused too."""
    where = f"{what} {path}" if what else str(path)
    with open_regular_file(path, what, max_bytes, follow_links) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise OrbitbenchError(f"{where}: cannot read: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise OrbitbenchError(f"{where}: more than the {max_bytes:,} bytes accepted")
    return data


def read_text_file(path: str | Path, what: str = "", max_bytes: int = MAX_TEXT_BYTES, follow_links: bool = True) -> str:
    """The text of a file the user named (a config, an entry, a record): one line when it is
    missing, a folder, a dangling link, not a regular file, too large, unreadable or not UTF-8."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    data = read_bytes_file(path, what, max_bytes, follow_links)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OrbitbenchError(f"{where}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                              f"{error.start}); expected a text file") from None


MAX_YAML_VALUES = 1_000_000  # far above any config or sweep file; an alias bomb expands to billions


def check_yaml_size(text: str, where: str) -> None:
    """Refuse YAML whose aliases expand to more than `MAX_YAML_VALUES` values (a "billion laughs"
    file would fill the memory of whatever reads it) or that nests too deeply; counted on the
    composed node graph, where an alias is one shared node, so nothing is expanded or constructed."""
    import yaml

    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return  # the reader reports the syntax error itself
    except RecursionError:
        raise OrbitbenchError(f"{where}: YAML nested too deeply") from None
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
                node.value if isinstance(node, yaml.SequenceNode) else [])
            sizes[id(node)] = min(1 + sum(size(child) for child in children), MAX_YAML_VALUES + 1)
        return sizes[id(node)]

    try:
        total = sum(size(document) for document in documents if document is not None)
    except RecursionError:
        raise OrbitbenchError(f"{where}: YAML nested too deeply") from None
    if total > MAX_YAML_VALUES:
        raise OrbitbenchError(f"{where}: its YAML aliases expand to more than {MAX_YAML_VALUES:,} values "
                              "(an alias bomb?); expected a config file")


def check_config_args(argv: list[str]) -> None:
    """Every `--config FILE` of a command line is a readable UTF-8 text file of sane size (before
    the parser opens it, which would end in a traceback for a binary file or a folder, and fill
    the memory for an alias bomb)."""
    for i, token in enumerate(argv):
        path = argv[i + 1] if token == "--config" and i + 1 < len(argv) else (
            token.split("=", 1)[1] if token.startswith("--config=") else None)
        if path is not None:
            check_yaml_size(read_text_file(path, "--config"), f"--config {path}")


def check_can_create(path: str | Path, what: str) -> None:
    """`path` (a folder to be created later) is not under a file and its nearest existing folder
    is writable: one line now instead of a traceback from deep inside a logger later."""
    path = Path(path).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise OrbitbenchError(f"{what} {path}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK):
        raise OrbitbenchError(f"{what} {path}: {existing} is read-only")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write next to `path`, then rename: readers see the old file or the whole new one, never half."""
    path = Path(path)
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same filesystem
    try:
        with open(tmp, "xb") as handle:  # ordinary permissions (umask), unlike mkstemp's 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OrbitbenchError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class Claim:
    """An exclusive `flock` on `path` (created if missing); `None`-like failure via `try_claim`.

    flock locks belong to the open file, not the process: a child started with
    `pass_fds=[claim.fileno()]` holds the claim too, so it is free again only once the claimer
    and every child it handed it to have exited (however they died).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def fileno(self) -> int:
        return self._fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(path: Path, wait: bool = False) -> Claim | None:
    """Claim `path`, or return None at once if another process holds it (`wait=False`)."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise OrbitbenchError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Claim(path, fd)


class WriteOnceFolder:
    """A run folder written under `<final>.partial` and renamed to `<final>` by `commit()`.

    The `.partial` folder is claimed while it is written: a second writer of the same `final`
    refuses with one line; a `.partial` whose writer died (SIGKILL, power loss) is unclaimed and
    is cleared by the next writer. SIGTERM while writing becomes `SystemExit`, so the caller's
    cleanup (`discard`) runs instead of leaving the folder behind.
    """

    LOCK = ".writing"

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        if self.final.exists():
            raise OrbitbenchError(f"run folder {self.final} already exists; pass a new --out")
        self.path = make_dirs(self.final.with_name(self.final.name + ".partial"))
        claim = try_claim(self.path / self.LOCK)
        if claim is None:
            raise OrbitbenchError(f"{self.final} is being written by another process; pass another --out")
        self._claim: Claim | None = claim
        for stale in self.path.iterdir():  # left by a writer that died: ours now
            if stale.name != self.LOCK:
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()

    def commit(self) -> Path:
        """Rename into place (still claimed, so no second writer can step in), then unclaim."""
        if self.final.exists():
            self.discard()
            raise OrbitbenchError(f"run folder {self.final} appeared while this run was writing; result discarded")
        os.rename(self.path, self.final)
        (self.final / self.LOCK).unlink(missing_ok=True)
        self._release()
        return self.final

    def discard(self) -> None:
        if self._claim is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None


@contextlib.contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM raises SystemExit(128 + 15) so `finally` clauses run."""
    if sys.platform == "win32" or not _is_main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_raise_interrupted(what: str):
    """Within the block, SIGTERM and Ctrl-C raise `Interrupted` (exit 128 + signal, one line), after
    any handler installed before (a sweep's, which records the stop); Lightning's own SIGTERM
    handler calls this one too. Outside the main thread signals never arrive: nothing to do."""
    from orbitbench.errors import Interrupted

    if sys.platform == "win32" or not _is_main_thread():
        yield
        return
    signums = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def handler(signum, frame):
        before = previous[signum]
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)
        raise Interrupted(f"{what} stopped by {signal.Signals(signum).name}", signum)

    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def one_line_validation_error(source: str, error: ValidationError) -> str:
    """pydantic's multi-line report -> `source: field.path: message (got value)` on one line."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"{source}: not valid JSON ({first['msg']})"
    loc = ".".join(str(part) for part in first["loc"])
    where = f"{loc}: " if loc else ""
    message = first["msg"].removeprefix("Value error, ")
    # A model-level check names its fields itself; its input is the whole file.
    shown = first["loc"] and first["type"] not in ("missing", "model_type")
    got = f" (got {first['input']!r})" if shown else ""
    more = f" [+{error.error_count() - 1} more error(s)]" if error.error_count() > 1 else ""
    return f"{source}: {where}{message}{got}{more}".replace("\n", " ")
