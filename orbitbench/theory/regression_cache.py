"""Regression outputs at scale shared between runs that would compute the same ones (opt-in).

A kernel regression's outputs depend on the kernel, the training and scored images, the targets and
the sizes, not on the network that is judged against them: the analytic twin of `paper_mlp` gives the
same outputs in the `paper_mlp` cell of a track and in its challengers' cells on the same split, and
so does `init` wherever the initial weights are the same. With `ORBITBENCH_REGRESSION_CACHE=<folder>`
each solve is stored under a digest of all of these (the images and weights by content) and of the
code that computes it, and a later run with the same digest reads it instead of solving again.

The cache is an input nobody checks, so `leaderboard verify` re-runs cells without it: an edited
file can move a seeded number, never a verified one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_bytes

__all__ = ["CACHE_ENV", "cache_folder", "cached_solve", "network_identity", "tensor_digest", "without_cache"]

CACHE_ENV = "ORBITBENCH_REGRESSION_CACHE"
log = logging.getLogger(__name__)
Solve = Callable[[Sequence[int], int], dict[int, Tensor]]
# the modules whose code decides the outputs: an edit to any of them gives new digests
_CODE = ("regression.py", "scale_kernels.py", "orbit_solve.py", "twins.py", "ntk.py", "at_scale.py", "regression_cache.py")


def cache_folder() -> Path | None:
    found = os.environ.get(CACHE_ENV, "")
    return Path(found).expanduser() if found else None


@contextlib.contextmanager
def without_cache() -> Iterator[None]:
    """Runs inside it never read or write the cache (a verification's re-run)."""
    before = os.environ.pop(CACHE_ENV, None)
    try:
        yield
    finally:
        if before is not None:
            os.environ[CACHE_ENV] = before


def _code_digest() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256(torch.__version__.encode())
    for name in _CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def network_identity(network: nn.Module, dtype: torch.dtype) -> str:
    """The empirical kernel's identity: the module's structure and every parameter and buffer's bytes."""
    digest = hashlib.sha256(f"{network!r}|{dtype}".encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(f"{name}|{tensor_digest(tensor)}".encode())
    return digest.hexdigest()


def tensor_digest(tensor: Tensor) -> str:
    """A tensor's content digest (shape, dtype and bytes): equal digests, bitwise-equal tensors."""
    data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    return f"{tuple(tensor.shape)}|{tensor.dtype}|{hashlib.sha256(data).hexdigest()}"


def cached_solve(solve: Solve, identity: str, inputs: Callable[[int, int], Sequence[Tensor]], reg: float) -> Solve:
    """`solve` with its outputs stored under a digest of the code, `identity` (the kernel), the
    inputs of the largest size (`inputs(m, draw)`: training images, targets and scored images) and
    the sizes; `solve` itself where no cache folder is set."""
    folder = cache_folder()
    if folder is None:
        return solve
    code = _code_digest()

    def cached(sizes: Sequence[int], draw: int) -> dict[int, Tensor]:
        digest = hashlib.sha256(f"{code}|{identity}|{sorted(sizes)}|{draw}|{reg!r}".encode())
        train, targets, scored = inputs(max(sizes), draw)
        for tensor in (train, targets, scored):
            digest.update(tensor_digest(tensor).encode())
        path = folder / f"{digest.hexdigest()}.pt"
        found = _read(path, sizes, (len(scored), targets.shape[1]))
        if found is not None:
            return found
        outputs = solve(sizes, draw)
        buffer = io.BytesIO()
        torch.save({int(m): t.contiguous() for m, t in outputs.items()}, buffer)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OrbitbenchError as error:  # a cache that cannot be written costs time, not the run
            log.warning("%s (the regression is not cached)", str(error).removeprefix("orbitbench: "))
        return outputs

    return cached


def _read(path: Path, sizes: Sequence[int], shape: tuple[int, int]) -> dict[int, Tensor] | None:
    """The stored outputs, or None where there are none or they are not float64 [U, C] outputs of
    these sizes (a file written by anything else is solved again and replaced)."""
    try:
        found = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001  none yet, truncated or foreign
        return None
    if not (isinstance(found, dict) and set(found) == set(sizes)
            and all(isinstance(t, Tensor) and t.dtype == torch.float64 and tuple(t.shape) == shape for t in found.values())):  # fmt: skip
        return None
    return found
