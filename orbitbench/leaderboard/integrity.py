"""Everything an entry claims, derived again from its cells: `recompute`, `check_entry`, `verify`.

The cells are the evidence (copied from the run records); the protocol, the per-order
statistics, the score and the parameter count are recomputed from them and from the model
registry, never taken from a sweep file's claims. `verify` re-runs cells and compares.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orbitbench.errors import OrbitbenchError
from orbitbench.io import as_json_value
from orbitbench.leaderboard.intervals import clip, t_interval, unit_scores
from orbitbench.leaderboard.scale import cell_at_scale, order_at_scale, rerun_settings, value_pairs
from orbitbench.theory.registry import predictor_names, recorded_predictions
from orbitbench.leaderboard.schema import Entry, EntryCell, Interval, KappaStat, PoseResult, Protocol, summarize
from orbitbench.run.record import RunRecord
from orbitbench.sweep.spec import PROTOCOL_DATA_KEYS_EXCLUDED, SweepSpec, load_sweep_file

# DataModule settings that are not the protocol: the grid's own axes and how data is loaded.
NOT_PROTOCOL = {"leave_out_class", "download", *PROTOCOL_DATA_KEYS_EXCLUDED}


# ---- the track ---------------------------------------------------------------------------------


def _protocol_data(datamodule: str, hparams: dict[str, Any]) -> dict[str, Any]:
    from orbitbench.datamodules import datamodule_class

    order = datamodule_class(datamodule).order_argument
    return as_json_value({k: v for k, v in sorted(hparams.items()) if k not in NOT_PROTOCOL and k != order})


def track_protocol(spec: SweepSpec) -> Protocol:
    """The protocol a track's sweep file sets: every DataModule setting (defaults included)."""
    data = spec.data_arguments()
    module = spec.datamodule_class(**{spec.order_argument: spec.n_poses[0], "leave_out_class": spec.grid.leave_out_class[0], **data})
    hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
    from orbitbench.datamodules import datamodule_name

    return Protocol(datamodule=datamodule_name(spec.datamodule_class), n_poses=sorted(spec.n_poses),
                    leave_out_classes=sorted(spec.grid.leave_out_class), seeds=sorted(spec.grid.seed),
                    data=_protocol_data(spec.datamodule, hparams))


@dataclass(frozen=True)
class Track:
    """A track as its sweep file defines it: the protocol and the one-line description shown."""

    path: Path
    protocol: Protocol
    description: str


def load_tracks(sweeps: Path) -> dict[str, Track]:
    """Track name -> Track, from `sweeps/*.yaml`; several sweep files of one track must agree."""
    if not Path(sweeps).is_dir():
        raise OrbitbenchError(f"{sweeps} is not a folder: expected the sweep files that define the tracks "
                              "(run from the checkout, or give --sweeps)")
    tracks: dict[str, Track] = {}
    for path in sorted(Path(sweeps).glob("*.yaml")):
        spec = load_sweep_file(path)
        protocol = track_protocol(spec)
        if protocol.data.get("source") == "auto":  # full MNIST here, the subset there: not one protocol
            raise OrbitbenchError(f"{path}: track {spec.track!r} has data.source auto, which resolves per machine; "
                                  "a track names its data (data.source: mnist or mnist5k)")
        if spec.track in tracks and tracks[spec.track].protocol != protocol:
            raise OrbitbenchError(f"{path}: track {spec.track!r} is also defined by {tracks[spec.track].path} with another protocol")
        tracks.setdefault(spec.track, Track(path, protocol, spec.description))
    return tracks


def load_sweeps(sweeps: Path) -> dict[str, SweepSpec]:
    """Sweep name -> spec of every `sweeps/*.yaml`: an entry names the sweep that ran it."""
    found: dict[str, SweepSpec] = {}
    for path in sorted(Path(sweeps).glob("*.yaml")):
        spec = load_sweep_file(path)
        if spec.name in found:
            raise OrbitbenchError(f"{path}: sweep name {spec.name!r} is used by another sweeps/*.yaml too")
        found[spec.name] = spec
    return found


def differing_setting(found: Protocol, expected: Protocol) -> str | None:
    """`field` or `data.key` of the first difference, with both values; None when equal."""
    if found.datamodule != expected.datamodule:
        return f"protocol.datamodule is {found.datamodule!r}, the track's is {expected.datamodule!r}"
    for key in sorted(set(found.data) | set(expected.data)):
        if found.data.get(key, "<unset>") != expected.data.get(key, "<unset>"):
            return f"data.{key} is {found.data.get(key, '<unset>')!r}, the track's is {expected.data.get(key, '<unset>')!r}"
    for field in ("n_poses", "leave_out_classes", "seeds"):
        if getattr(found, field) != getattr(expected, field):
            return f"protocol.{field} is {getattr(found, field)!r}, the track's is {getattr(expected, field)!r}"
    return None


# ---- cells -------------------------------------------------------------------------------------


def method_kernel_predictors(method: str) -> tuple[str, ...]:
    """The kernel predictors that describe a network trained by `method` (its MethodInfo)."""
    from orbitbench.methods._base import method_class

    return method_class(method).info.predictors()


def cell_from_record(cell_id: str, record: RunRecord) -> EntryCell:
    """What an entry keeps of one run record: settings, measurements, provenance. Only the kernel
    predictions the cell's training method defines are kept (a record written before methods
    declared them may hold others)."""
    defined = method_kernel_predictors(record.model.method)
    found = {name: values for name, values in recorded_predictions(record).items()
             if name in defined and values["out_test"] is not None}  # fmt: skip
    predicted = {name: values["out_test"] for name, values in found.items()}
    kappa = {name: values["kappa"] for name, values in found.items() if values["kappa"] is not None}
    return EntryCell(cell=cell_id, seed=record.seeds.seed_everything if record.seeds.seed_everything is not None else -1,
                model=record.model, data=record.data, metrics=record.metrics, predicted=predicted, kappa=kappa,
                at_scale=cell_at_scale(record, defined),
                epochs=record.epochs, global_step=record.global_step, wall_time_s=record.wall_time_s,
                git_commit=record.git_commit, versions=record.versions, finished=record.finished)


def protocol_from_cells(cells: Sequence[EntryCell], source: str) -> Protocol:
    """The protocol the cells actually ran; cells that disagree on a data setting are refused."""
    first = cells[0]
    data = _protocol_data(first.data.datamodule, first.data.hparams)
    for cell in cells:
        if cell.data.datamodule != first.data.datamodule:
            raise OrbitbenchError(f"{source}: cell {cell.cell} ran {cell.data.datamodule}, cell {first.cell} {first.data.datamodule}")
        other = _protocol_data(cell.data.datamodule, cell.data.hparams)
        for key in sorted(set(data) | set(other)):
            if data.get(key) != other.get(key):
                raise OrbitbenchError(f"{source}: cells {first.cell} and {cell.cell} ran different data.{key} "
                                      f"({data.get(key)!r} vs {other.get(key)!r})")
    return Protocol(datamodule=first.data.datamodule, n_poses=sorted({c.n_poses for c in cells}),
                    leave_out_classes=sorted({c.leave_out_class for c in cells}), seeds=sorted({c.seed for c in cells}),
                    data=data)


def check_grid(cells: Sequence[EntryCell], protocol: Protocol, source: str) -> None:
    """Exactly one cell per (group order, leave-out class, seed) of the protocol."""
    want = {(n, c, s) for n in protocol.n_poses for c in protocol.leave_out_classes for s in protocol.seeds}
    have: dict[tuple[int, int, int], str] = {}
    for cell in cells:
        key = (cell.n_poses, cell.leave_out_class, cell.seed)
        if key in have:
            raise OrbitbenchError(f"{source}: cells {have[key]} and {cell.cell} are the same grid cell {key}")
        have[key] = cell.cell
    missing = sorted(want - set(have))
    if missing:
        raise OrbitbenchError(f"{source}: no cell for (n_poses, leave_out_class, seed) {missing[0]} ({len(missing)} missing)")


# ---- aggregates ----------------------------------------------------------------------------------


def recompute(cells: Sequence[EntryCell]) -> tuple[list[PoseResult], Interval]:
    """Per-order statistics and the score (out-test averaged over orders per unit, 95% t-interval)."""
    results = []
    for n in sorted({c.n_poses for c in cells}):
        group = [c for c in cells if c.n_poses == n]
        train = [c.metrics.train_acc for c in group if c.metrics.train_acc is not None]
        names = predictor_names()
        predicted = {p: summarize([c.predicted[p] for c in group]) for p in names if all(p in c.predicted for c in group)}
        kappa = {p: summarize([c.kappa[p] for c in group], KappaStat) for p in names
                 if all(p in c.kappa for c in group)}  # fmt: skip
        results.append(PoseResult(
            n_poses=n, train=summarize(train) if len(train) == len(group) else None,
            in_test=summarize([c.metrics.in_test_acc for c in group]),
            out_test=summarize([c.metrics.out_test_acc for c in group]), predicted=predicted, kappa=kappa,
            at_scale=order_at_scale(group, names),
        ))
    units = unit_scores(cell_units(cells))
    mean, low, high = t_interval(list(units.values()))
    score = Interval(mean=round(mean, 6), low=round(max(0.0, clip(low)), 6), high=round(min(1.0, clip(high)), 6), n=len(units))
    return results, score


def cell_units(cells: Sequence[EntryCell]) -> list[tuple[tuple[int, int], int, float]]:
    return [((c.leave_out_class, c.seed), c.n_poses, c.metrics.out_test_acc) for c in cells]


def built_param_count(model: str, kwargs: dict[str, Any] | None, method: str = "supervised",
                      method_kwargs: dict[str, Any] | None = None, num_classes: int = 10) -> int:
    """Build the network a cell trained (the registry's model, wrapped by its method, which may add
    parameters: `latent_operator`'s encoder) and count its parameters (unknown names raise)."""
    from orbitbench.methods import build_network, create_method

    net = build_network(create_method(method, **(method_kwargs or {})), model, num_classes, **(kwargs or {}))
    return sum(p.numel() for p in net.parameters())


def _config_key_error(key: str, datamodule: str) -> str | None:
    """Why `key` is not an `orbitbench fit` setting (None when it is one)."""
    import lightning as L

    from orbitbench.datamodules import datamodule_class
    from orbitbench.run.module import OrbitClassifier

    if key in ("config_file", "config_file_content", "seed_everything"):
        return None
    head, _, rest = key.partition(".")
    first = rest.split(".")[0].rstrip("+")
    known = {"trainer": L.Trainer.__init__, "model": OrbitClassifier.__init__}
    if head == "data":
        cls = datamodule_class(datamodule)
        params = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(cls.__mro__[1].__init__).parameters)
    elif head in known:
        params = set(inspect.signature(known[head]).parameters)
    else:
        return f"{key!r} is not an `orbitbench fit` setting (expected trainer.*, model.*, data.*)"
    return None if first in params - {"self", "kwargs"} else f"{key!r} is not an `orbitbench fit` setting"


def check_entry(entry: Entry, source: str, track: Protocol | None, sweeps: dict[str, SweepSpec], root: Path) -> None:
    """Re-derive what `entry` claims from its cells and the registry, then compare every other
    field with them (`crosscheck`); one line naming the first mismatch."""
    from orbitbench.leaderboard import crosscheck

    if track is None:
        raise OrbitbenchError(f"{source}: track {entry.track!r} is not defined by any sweeps/*.yaml")
    found = protocol_from_cells(entry.cells, source)
    difference = differing_setting(found, track)
    if difference:
        raise OrbitbenchError(f"{source}: the cells' {difference}; a new protocol needs a new track")
    if entry.protocol != found:
        raise OrbitbenchError(f"{source}: protocol does not match the cells ({differing_setting(entry.protocol, found)})")
    check_grid(entry.cells, found, source)
    from orbitbench.models import model_info

    try:
        builder = model_info(entry.model).builder_path
        first = entry.cells[0].model
        params = built_param_count(entry.model, first.backbone_kwargs, entry.method, first.method_kwargs, first.num_classes)
    except OrbitbenchError as error:
        raise OrbitbenchError(f"{source}: model: {error}") from None
    if entry.builder != builder:
        raise OrbitbenchError(f"{source}: builder is {entry.builder!r} but {entry.model!r} is built by {builder!r}")
    for cell in entry.cells:
        if cell.model.backbone != entry.model:
            raise OrbitbenchError(f"{source}: cell {cell.cell} trained {cell.model.backbone!r}, not model {entry.model!r}")
        if cell.model.method != entry.method:
            raise OrbitbenchError(f"{source}: cell {cell.cell} trained by method {cell.model.method!r}, not {entry.method!r}")
        if cell.model.n_params != params:
            raise OrbitbenchError(f"{source}: cell {cell.cell} reports {cell.model.n_params} parameters; {entry.model} has {params}")
    if entry.param_count != params:
        raise OrbitbenchError(f"{source}: param_count is {entry.param_count} but building {entry.model} gives {params}")
    try:
        defined = method_kernel_predictors(entry.method)
    except OrbitbenchError as error:
        raise OrbitbenchError(f"{source}: method: {error}") from None
    for cell in entry.cells:
        extra = sorted((set(cell.predicted) | set(cell.kappa) | set(cell.at_scale)) - set(defined))
        if extra:
            raise OrbitbenchError(f"{source}: cell {cell.cell} has a {extra[0]!r} kernel prediction, which method "
                                  f"{entry.method!r} does not define (it defines {', '.join(defined)})")
    for key, value in entry.config.items():
        error = _config_key_error(key, found.datamodule)
        if error:
            raise OrbitbenchError(f"{source}: config: {error}")
    check_budget(entry, source)
    results, score = recompute(entry.cells)
    for mine, theirs in zip(entry.results, results):
        for field in PoseResult.model_fields:
            if getattr(mine, field) != getattr(theirs, field):
                raise OrbitbenchError(f"{source}: results (n_poses={theirs.n_poses}).{field} does not match the cells "
                                      f"(recomputed {_short(getattr(theirs, field))}, entry says {_short(getattr(mine, field))})")
    if len(entry.results) != len(results):
        raise OrbitbenchError(f"{source}: results has {len(entry.results)} group orders, the cells {len(results)}")
    if entry.score != score:
        raise OrbitbenchError(f"{source}: score does not match the cells (recomputed {_short(score)}, entry says {_short(entry.score)})")
    crosscheck.check_all(entry, source, sweeps.get(entry.sweep), root)


def check_budget(entry: Entry, source: str) -> None:
    """The training budget in `config` is the one the cells ran: steps when `trainer.max_steps` is
    set (the run stops there), else epochs; and the batch size."""
    steps, epochs = entry.config.get("trainer.max_steps", -1), entry.config.get("trainer.max_epochs")
    for cell in entry.cells:
        if isinstance(steps, int) and steps > 0:
            if cell.global_step != steps:
                raise OrbitbenchError(f"{source}: config trainer.max_steps is {steps} but cell {cell.cell} trained {cell.global_step} steps")
        elif epochs is not None and cell.epochs != epochs:
            raise OrbitbenchError(f"{source}: config trainer.max_epochs is {epochs} but cell {cell.cell} trained {cell.epochs} epochs")
        batch = entry.config.get("data.batch_size")
        if batch is not None and cell.data.hparams.get("batch_size") != batch:
            raise OrbitbenchError(f"{source}: config data.batch_size is {batch} but cell {cell.cell} used {cell.data.hparams.get('batch_size')}")


def _short(value: Any) -> str:
    from pydantic_core import to_jsonable_python

    return json.dumps(to_jsonable_python(value), separators=(",", ":"))


def effective_config(entry: Entry) -> str:
    """What decides an entry's training besides the protocol: model, builder arguments, method and settings."""
    config = {k: v for k, v in entry.config.items() if k != "config_file"}
    first = entry.cells[0].model
    return json.dumps([entry.model, first.backbone_kwargs, entry.method, first.method_kwargs, config], sort_keys=True)


# ---- verify ------------------------------------------------------------------------------------


def rerun_spec(entry: Entry) -> tuple[SweepSpec, Any]:
    """A one-model sweep that runs the entry's cells again (the protocol's data, the entry's settings),
    and the content of the entry's config file (None if it had none)."""
    from orbitbench.datamodules import datamodule_class

    order = datamodule_class(entry.protocol.datamodule).order_argument
    settings = {k: v for k, v in entry.config.items() if k not in ("config_file", "config_file_content")}
    spec = {
        "name": entry.sweep, "track": entry.track, "datamodule": entry.protocol.datamodule,
        "grid": {"model": [entry.model], "method": [entry.method], order: entry.protocol.n_poses,
                 "leave_out_class": entry.protocol.leave_out_classes, "seed": entry.protocol.seeds},
        "fit": {**{f"data.{k}": v for k, v in entry.protocol.data.items()}, **settings},
    }
    return SweepSpec.model_validate(spec), entry.config.get("config_file_content")


def verify_cells(entry: Entry, k: int, workdir: Path | None = None, rng: random.Random | None = None) -> tuple[list[str], float]:
    """Re-run `k` randomly chosen cells in this process; (their ids, largest |difference| of any metric)."""
    from orbitbench.run.record import load_record
    from orbitbench.sweep.cell import execute_cell
    from orbitbench.sweep.results import cell_dir
    from orbitbench.theory.regression_cache import without_cache

    if not 1 <= k <= len(entry.cells):
        raise OrbitbenchError(f"--cells must be between 1 and {len(entry.cells)} (the entry's cells), got {k}")
    spec, config_content = rerun_spec(entry)
    chosen = sorted((rng or random.Random()).sample(entry.cells, k), key=lambda c: c.cell)
    with tempfile.TemporaryDirectory(prefix="orbitbench-verify-", dir=workdir) as tmp:
        root = Path(tmp)
        if config_content is not None:
            config_path = root / "config.yaml"
            config_path.write_text(yaml.safe_dump(config_content))
            spec = spec.model_copy(update={"config_files": {entry.model: str(config_path)}})
        worst = 0.0
        for cell in chosen:
            grid_cell = next(c for c in spec.cells() if (c.n_poses, c.leave_out_class, c.seed) == (cell.n_poses, cell.leave_out_class, cell.seed))
            with recorded_threads(cell), without_cache():  # a shared regression is read, never checked
                pinned = spec.model_copy(update={"fit": {**spec.fit, **rerun_settings(cell)}})
                outcome = execute_cell(pinned, root, grid_cell, in_process=True)
            if outcome.status != "ran":
                raise OrbitbenchError(f"re-running {cell.cell} failed: {outcome.message}")
            again = cell_from_record(cell.cell, load_record(cell_dir(root, grid_cell)))
            worst = max(worst, max_metric_difference(cell, again))
    return [c.cell for c in chosen], worst


@contextlib.contextmanager
def recorded_threads(cell: EntryCell):
    """Re-run at the cell's own torch thread count: CPU convolutions reduce in another order with
    another count, so only the same count gives bit-identical numbers (older records: as they are)."""
    import torch

    before = torch.get_num_threads()
    recorded = cell.versions.get("torch_threads")
    if recorded is not None:
        torch.set_num_threads(int(recorded))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def max_metric_difference(a: EntryCell, b: EntryCell) -> float:
    """Largest |a - b| over train, in-test, out-test, predicted accuracies and kappas, and the
    regression at scale (the numbers the first cell, the entry's, holds; m too: inf if the second lacks one)."""
    pairs = [(a.metrics.train_acc, b.metrics.train_acc), (a.metrics.in_test_acc, b.metrics.in_test_acc),
             (a.metrics.out_test_acc, b.metrics.out_test_acc)]
    pairs += [(a.predicted.get(p), b.predicted.get(p)) for p in set(a.predicted) | set(b.predicted)]
    pairs += [(a.kappa.get(p), b.kappa.get(p)) for p in set(a.kappa) | set(b.kappa)] + value_pairs(a, b)
    worst = 0.0
    for x, y in pairs:
        if (x is None) != (y is None):
            return float("inf")
        if x is not None:
            worst = max(worst, abs(x - y))
    return worst
