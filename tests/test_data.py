"""MNIST sources: the embedded subset, IDX files written by the tests, and their failure modes."""

from __future__ import annotations

import gzip
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitbench.data import DataSourceError, Digits, load_digits, read_idx
from orbitbench.errors import OrbitbenchError


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, truncate: int = 0) -> None:
    """Write `array` (uint8) as an IDX file the way MNIST's files are laid out."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(data[: len(data) - truncate] if truncate else data)


def mnist_folder(root: Path, digits: Digits, count: int) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", digits.images[:count].numpy())
    write_idx(raw / "train-labels-idx1-ubyte", digits.labels[:count].numpy())
    return raw


def test_embedded_subset_is_real_mnist(mnist5k: Digits) -> None:
    assert mnist5k.source == "mnist5k"
    assert mnist5k.images.shape == (5000, 28, 28) and mnist5k.images.dtype == torch.uint8
    assert mnist5k.class_counts().tolist() == [500] * 10
    # MNIST digits are centred strokes on a black background: the top row is empty everywhere.
    assert mnist5k.images[:, 0, :].max() == 0 and mnist5k.images[:, 14, 14].float().mean() > 100
    assert mnist5k.images.max() == 255 and 0.10 < (mnist5k.images > 0).float().mean() < 0.25


# The published class counts of MNIST's 60,000 training digits.
MNIST_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_auto_never_uses_files_that_are_not_full_mnist(tmp_path: Path, mnist5k: Digits, capsys) -> None:
    assert load_digits("auto", tmp_path).source == "mnist5k"
    assert capsys.readouterr().err == ""  # nothing installed is no warning
    mnist_folder(tmp_path, mnist5k, 300)  # well-formed IDX files, but not the published ones
    assert load_digits("auto", tmp_path).source == "mnist5k"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"orbitbench: warning: .*train-images-idx3-ubyte is corrupt or altered \(sha256 \w{12}\.\.\., full MNIST's is "
        r"ba891046e650\.\.\.\), so it is not used; .*; source auto uses the embedded 5,000-digit subset", lines[0])
    with pytest.raises(DataSourceError, match="train-images-idx3-ubyte is corrupt or altered"):
        load_digits("mnist", tmp_path)
    assert load_digits(str(tmp_path / "MNIST" / "raw")).source.startswith("idx:")  # your own files, as a path: read


def test_the_default_folder_is_the_users_cache_from_any_directory(monkeypatch, tmp_path: Path) -> None:
    from orbitbench.data import data_root

    monkeypatch.delenv("ORBITBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert data_root() == tmp_path / "xdg" / "orbitbench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_root() == Path.home() / ".cache" / "orbitbench" / "data"
    monkeypatch.setenv("ORBITBENCH_DATA", "~/elsewhere")
    assert data_root() == Path.home() / "elsewhere" and data_root("here") == Path("here")


def test_installed_full_mnist_is_the_published_training_set(installed_mnist: Path, mnist5k: Digits) -> None:
    digits = load_digits("mnist", installed_mnist.parent.parent)
    assert digits.source == "mnist" and digits.images.shape == (60000, 28, 28)
    assert digits.class_counts().tolist() == MNIST_CLASS_COUNTS
    first = {bytes(image.numpy()): int(label) for image, label in zip(digits.images[:5848], digits.labels[:5848])}
    assert all(first.get(bytes(image.numpy())) == int(label) for image, label in zip(mnist5k.images, mnist5k.labels))


def copy_train_files(installed: Path, root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copyfile(installed / name, raw / name)
    return raw


def test_one_tampered_byte_is_refused(installed_mnist: Path, tmp_path: Path, capsys) -> None:
    raw = copy_train_files(installed_mnist, tmp_path)
    images = bytearray((raw / "train-images-idx3-ubyte").read_bytes())
    images[16 + 28 * 28 * 1234 + 400] ^= 0x01  # one pixel of digit 1234: still a valid IDX file
    (raw / "train-images-idx3-ubyte").write_bytes(images)
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte is corrupt or altered .* not used") as error:
        load_digits("mnist", tmp_path)
    assert "\n" not in str(error.value)
    assert load_digits("auto", tmp_path).source == "mnist5k"
    assert capsys.readouterr().err.count("\n") == 1
    images[16 + 28 * 28 * 1234 + 400] ^= 0x01  # the same file restored is used again
    (raw / "train-images-idx3-ubyte").write_bytes(images)
    assert len(load_digits("auto", tmp_path)) == 60000


def test_idx_path_sources_read_plain_and_gzip(tmp_path: Path, mnist5k: Digits) -> None:
    raw = mnist_folder(tmp_path, mnist5k, 50)
    assert torch.equal(load_digits(str(raw)).images, mnist5k.images[:50])
    assert torch.equal(load_digits(str(raw / "train-images-idx3-ubyte")).labels, mnist5k.labels[:50])
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (zipped / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
    assert torch.equal(load_digits(str(zipped)).images, mnist5k.images[:50])


def test_explicit_full_mnist_never_falls_back(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"full MNIST not found: expected .*train-images-idx3-ubyte"):
        load_digits("mnist", tmp_path)


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ({"magic": 0x00000802}, r"wrong magic number 0x00000802, expected 0x00000803"),
        ({"truncate": 100}, r"truncated IDX payload: .* expected 39200"),
    ],
)
def test_corrupt_image_file_is_named(tmp_path: Path, mnist5k: Digits, corruption: dict, message: str) -> None:
    raw = mnist_folder(tmp_path, mnist5k, 50)
    write_idx(raw / "train-images-idx3-ubyte", mnist5k.images[:50].numpy(), **corruption)
    with pytest.raises(DataSourceError, match=message) as error:
        load_digits(str(raw))
    assert "train-images-idx3-ubyte" in str(error.value)


def test_label_count_mismatch_is_named(tmp_path: Path, mnist5k: Digits) -> None:
    raw = mnist_folder(tmp_path, mnist5k, 50)
    write_idx(raw / "train-labels-idx1-ubyte", mnist5k.labels[:49].numpy())
    with pytest.raises(DataSourceError, match=r"49 labels for 50 images"):
        load_digits(str(raw))


def test_truncated_header_and_unknown_source(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(DataSourceError, match="truncated IDX header"):
        read_idx(tmp_path / "short", ndim=1)
    with pytest.raises(DataSourceError, match="unknown data source 'mnist10k'"):
        load_digits("mnist10k")
    with pytest.raises(DataSourceError, match=r"data source '.*missing/train-images-idx3-ubyte' does not exist"):
        load_digits(str(tmp_path / "missing" / "train-images-idx3-ubyte"))


def test_subsample_per_class_is_seeded_and_balanced(mnist5k: Digits) -> None:
    a, b, c = (mnist5k.subsample_per_class(13, seed) for seed in (1, 1, 2))
    assert a.class_counts().tolist() == [13] * 10
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    with pytest.raises(ValueError, match=r"images_per_class=501 .* expected 1\.\.500"):
        mnist5k.subsample_per_class(501, 0)


def test_sample_per_class_draws_the_asked_counts_reproducibly(mnist5k: Digits) -> None:
    from orbitbench.data import sample_per_class

    counts = {7: 3, 0: 2}
    a, b = (sample_per_class(mnist5k.labels, counts, seed=4) for _ in range(2))
    assert list(a) == [7, 0] and all(torch.equal(a[c], b[c]) for c in counts)
    for label, index in a.items():
        assert index.numel() == counts[label] and index.unique().numel() == counts[label]
        assert (mnist5k.labels[index] == label).all()
    assert not torch.equal(sample_per_class(mnist5k.labels, counts, seed=5)[7], a[7])
    with pytest.raises(OrbitbenchError, match=r"class 7 \(seed digits\) has 500 candidates, fewer than the 501 asked for"):
        sample_per_class(mnist5k.labels, {7: 501}, seed=0, what="seed digits")


def idx_header(*shape: int) -> bytes:
    return struct.pack(">I", 0x0800 | len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def test_an_idx_header_announcing_a_huge_array_is_refused_before_reading(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(2**32 - 1, 2**32 - 1, 2**16) + bytes(100))  # numpy's product would overflow
    with pytest.raises(DataSourceError, match=r"announces shape \(4294967295, 4294967295, 65536\) .* more than"):
        read_idx(path, ndim=3)
    path.write_bytes(idx_header(60000, 28, 28) + bytes(100))
    with pytest.raises(DataSourceError, match=r"truncated IDX payload: 100 bytes, expected 47040000"):
        read_idx(path, ndim=3)
