"""The trained network of a leaderboard cell, in one call (as RobustBench's `load_model`).

    load_model("mnist5k-quick__paper_mlp", "paper_mlp-n4-c3-s0")   # -> nn.Module in eval mode
    orbitbench leaderboard load mnist5k-quick__paper_mlp --cell paper_mlp-n4-c3-s0 --out net.ckpt

Entries carry run records, not weights. The network comes from the local cache
(`$ORBITBENCH_MODELS`, default `~/.cache/orbitbench/models/<entry>/<cell>.ckpt`) when it holds this
very cell (its sidecar names the entry's cell digest), otherwise the cell is re-run with the
configuration the entry recorded (`integrity.rerun_spec`, what `leaderboard verify` re-runs) and
its metrics must equal the entry's bit for bit (`tolerance` 0, at the cell's recorded torch thread
count) before the checkpoint is cached and returned: the weights are the ones that scored the
entry's numbers. Checkpoints load as data (`orbitbench.trust.load_checkpoint`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_bytes, atomic_write_text
from orbitbench.leaderboard import integrity
from orbitbench.leaderboard.schema import Entry, EntryCell

MODELS_ENV = "ORBITBENCH_MODELS"


def cache_root() -> Path:
    """`$ORBITBENCH_MODELS`, else `${XDG_CACHE_HOME:-~/.cache}/orbitbench/models`."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orbitbench" / "models"


def entry_path(entry: str | Path, root: Path) -> Path:
    """An entry file from its path, `<track>__<name>`, or `<track>/<name>`."""
    given = Path(entry)
    if given.suffix == ".json" or given.is_file():
        return given
    name = str(entry).replace("/", "__", 1) if "__" not in str(entry) else str(entry)
    path = Path(root) / "entries" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(root) / "entries").glob("*.json"))
        raise OrbitbenchError(f"no leaderboard entry {str(entry)!r} in {Path(root) / 'entries'}; "
                              f"expected a path or one of: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}")
    return path


def _cell(entry: Entry, cell_id: str, source: str) -> EntryCell:
    found = next((c for c in entry.cells if c.cell == cell_id), None)
    if found is None:
        ids = [c.cell for c in entry.cells]
        raise OrbitbenchError(f"{source} has no cell {cell_id!r}; its cells: {', '.join(ids[:6])}{' ...' if len(ids) > 6 else ''}")
    return found


def rerun_checkpoint(entry: Entry, cell: EntryCell, tolerance: float = 0.0) -> bytes:
    """Re-run one cell as the entry recorded it; its last checkpoint once its metrics match the entry's."""
    from orbitbench.run.record import load_record
    from orbitbench.sweep.cell import execute_cell
    from orbitbench.sweep.results import cell_dir

    spec, config_content = integrity.rerun_spec(entry)
    with tempfile.TemporaryDirectory(prefix="orbitbench-load-") as tmp:
        root = Path(tmp)
        if config_content is not None:
            import yaml

            config_path = root / "config.yaml"
            config_path.write_text(yaml.safe_dump(config_content))
            spec = spec.model_copy(update={"config_files": {entry.model: str(config_path)}})
        grid_cell = next(c for c in spec.cells() if (c.n_poses, c.leave_out_class, c.seed) == (cell.n_poses, cell.leave_out_class, cell.seed))
        with integrity.recorded_threads(cell):
            outcome = execute_cell(spec, root, grid_cell, in_process=True)
        if outcome.status != "ran":
            raise OrbitbenchError(f"re-running {cell.cell} failed: {outcome.message}")
        record = load_record(cell_dir(root, grid_cell))
        difference = integrity.max_metric_difference(cell, integrity.cell_from_record(cell.cell, record))
        if difference > tolerance:
            raise OrbitbenchError(f"re-running {cell.cell} gives metrics {difference:.3g} away from the entry's (tolerance "
                                  f"{tolerance:g}): another machine or package versions; nothing cached")  # fmt: skip
        checkpoint = Path(record.last_checkpoint or "")
        if not checkpoint.is_absolute():
            checkpoint = cell_dir(root, grid_cell) / "checkpoints" / "last.ckpt"
        return checkpoint.read_bytes()


def cell_checkpoint(entry: str | Path, cell: str, root: Path = Path("leaderboard"), sweeps: Path = Path("sweeps"),
                    tolerance: float = 0.0) -> tuple[Path, bool]:
    """(the cached checkpoint of the cell's network, whether it was re-run now)."""
    from orbitbench.leaderboard.cli import check_one, read_entry

    path = entry_path(entry, root)
    parsed = read_entry(path)
    check_one(parsed, str(path), sweeps)  # only a valid entry's cells are re-run
    chosen = _cell(parsed, cell, str(path))
    folder = cache_root() / f"{parsed.track}__{parsed.name}"
    cached, sidecar = folder / f"{chosen.cell}.ckpt", folder / f"{chosen.cell}.json"
    stamp = {"entry": f"{parsed.track}__{parsed.name}", "cell": chosen.cell, "cells_digest": parsed.cells_digest,
             "metrics": chosen.metrics.model_dump(mode="json")}
    try:
        if cached.is_file() and json.loads(sidecar.read_text()) == stamp:
            return cached, False
    except (OSError, ValueError):
        pass  # a missing or unreadable sidecar: re-run
    data = rerun_checkpoint(parsed, chosen, tolerance)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cached, data)
    atomic_write_text(sidecar, json.dumps(stamp, indent=1) + "\n")
    return cached, True


def network_from_checkpoint(path: Path):
    """The LightningModule a fit saved (its `forward` gives logits), weights loaded, in eval mode."""
    import importlib

    from orbitbench import trust

    checkpoint = trust.load_checkpoint(path)  # data only: weights_only, every saved class checked first
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    module_name, _, class_name = hparams.get("_class_path", "orbitbench.run.module.OrbitClassifier").rpartition(".")
    model = getattr(importlib.import_module(module_name), class_name)(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_model(entry: str | Path, cell: str, root: Path = Path("leaderboard"), sweeps: Path = Path("sweeps"),
               tolerance: float = 0.0):
    """The network of leaderboard cell `cell` of `entry` (`<track>__<name>`, `<track>/<name>` or a path)."""
    cached, _ = cell_checkpoint(entry, cell, root, sweeps, tolerance)
    return network_from_checkpoint(cached)


def load(entry: Path, cell: str | None = None, out: Path | None = None, tolerance: float = 0.0,
         root: Path = Path("leaderboard"), sweeps: Path = Path("sweeps")) -> dict:
    """Put the checkpoint of an entry's cell at `out` (default: only the cache); re-run and checked if not cached."""
    if not cell:
        raise OrbitbenchError("leaderboard load: --cell is required (a cell id of the entry, e.g. paper_mlp-n4-c3-s0)")
    if out is not None and (Path(out).is_dir() or not Path(out).absolute().parent.is_dir()):
        raise OrbitbenchError(f"--out {out}: expected a file name in an existing folder")
    cached, rerun = cell_checkpoint(entry, cell, root, sweeps, tolerance)
    network_from_checkpoint(cached)  # it loads, as data, into the model it names
    if out is not None:
        atomic_write_bytes(Path(out), cached.read_bytes())
    return {"cell": cell, "cached": str(cached), "out": None if out is None else str(out), "rerun": rerun}


def format_loaded(done: dict) -> str:
    how = "re-run, metrics bit-identical to the entry's" if done["rerun"] else "from the cache"
    return f"{done['cell']}: {how}; checkpoint {done['out'] or done['cached']}" + (f" (cached at {done['cached']})" if done["out"] else "")
