"""Every field of an entry that is not recomputed from its cells is compared with them here.

`integrity` recomputes the aggregates (protocol, per-order statistics, score, parameter count);
this module compares the rest with the evidence: the model name with the registry's one
canonical form, the training settings and cell ids with the sweep file the entry names, each
cell's data settings with its DataModule, its accuracies with the split sizes its data implies,
its step count with its epochs, the provenance and dates with the cells, and the verification
with the cells it re-ran (`verification_digest`). A field that can be neither derived nor
compared is refused, except the few free-text ones (`schema.FREE_TEXT`), which are escaped
when rendered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from orbitbench._moved import current_path
from orbitbench.errors import OrbitbenchError
from orbitbench.leaderboard.schema import Entry, EntryCell, Verified

# Images per class of the built-in sources (full MNIST's training set; the embedded subset).
CLASS_SIZES = {"mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949), "mnist5k": (500,) * 10}
COUNT_SLACK = 0.02  # accuracy x split size is a whole count up to float32 rounding (seen: 0.003)
MEAN_SLACK = 1e-6  # float32 metrics vs float64 per-pose values
CLOCK_SLACK = dt.timedelta(days=1)  # time zones
UNSUPPORTED_BUDGET_KEYS = ("trainer.accumulate_grad_batches", "trainer.limit_train_batches")


def _fail(source: str, message: str) -> OrbitbenchError:
    return OrbitbenchError(f"{source}: {message}")


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cells_digest(cells: Sequence[EntryCell]) -> str:
    """sha256 of the cells as JSON: any edit of a cell changes it."""
    return _sha256([cell.model_dump(mode="json") for cell in cells])


def verification_digest(entry: Entry, verified: Verified) -> str:
    """sha256 of the cells a verification re-ran and of its own fields (the digest aside)."""
    named = [c.model_dump(mode="json") for c in entry.cells if c.cell in set(verified.cells)]
    return _sha256([verified.model_dump(mode="json", exclude={"digest"}), named])


# ---- names ---------------------------------------------------------------------------------------


def canonical_model_name(name: str) -> str:
    """The one spelling the registry gives a model: no spaces, a registered name rather than its
    builder's `module:function` path, a timm architecture without a pretrained tag, nested forms
    canonical inside `c4_pooled(...)` and `linearized(...)`. Unknown names raise the registry's one line."""
    from timm.models import split_model_name_tag

    from orbitbench.models import model_info

    name = name.strip()
    inner = re.fullmatch(r"(?P<wrapper>c4_pooled|linearized)\((?P<inner>.+)\)", name)
    if inner:
        return f"{inner.group('wrapper')}({canonical_model_name(inner.group('inner'))})"
    if name.startswith("timm:"):
        return "timm:" + split_model_name_tag(name.removeprefix("timm:").strip())[0]
    info = model_info(name)
    if ":" in name and info.source != "import path":
        from orbitbench.models._registry import _REGISTRY  # read only: which registered name this builder has

        return next((key for key, known in _REGISTRY.items() if known.builder is info.builder), name)
    return name


def check_names(entry: Entry, source: str) -> None:
    """The model is named in canonical form and its invariance is the registry's."""
    from orbitbench.models import model_info

    try:
        canonical = canonical_model_name(entry.model)
        invariance = model_info(entry.model).invariance
    except OrbitbenchError as error:
        raise _fail(source, f"model: {error}") from None
    if entry.model != canonical:
        raise _fail(source, f"model {entry.model!r} is not the registry's name for it; write {canonical!r}")
    if entry.invariance != invariance:
        raise _fail(source, f"invariance is {entry.invariance!r} but the registry says {entry.model} is {invariance!r}")


# ---- the sweep file ------------------------------------------------------------------------------


def _without_file(config: dict[str, Any]) -> dict[str, Any]:
    """The settings to compare: class paths of the flat layout at their current homes (`orbitbench._moved`)."""
    return {k: current_path(v) for k, v in config.items() if k not in ("config_file", "config_file_content")}


def check_against_sweep(entry: Entry, spec: Any, source: str, root: Path) -> None:
    """The sweep the entry names defines its track, grid, training settings and cell ids, and
    every cell's DataModule settings (the loader's `data_dir` aside, which must only agree)."""
    from orbitbench.sweep.spec import Cell

    if spec is None:
        raise _fail(source, f"sweep {entry.sweep!r} is not the name of any sweeps/*.yaml")
    if spec.track != entry.track:
        raise _fail(source, f"sweep {entry.sweep!r} runs track {spec.track!r}, not {entry.track!r}")
    if entry.model not in spec.grid.model or entry.method not in spec.grid.method:
        raise _fail(source, f"sweep {entry.sweep!r} does not train {entry.model!r} by {entry.method!r}")
    plain = json.loads(json.dumps(spec.training_config(entry.model)))
    if _without_file(entry.config) != _without_file(plain):
        key = next(k for k in sorted(set(_without_file(entry.config)) | set(_without_file(plain)))
                   if current_path(entry.config.get(k, "<unset>")) != current_path(plain.get(k, "<unset>")))  # fmt: skip
        raise _fail(source, f"config.{key} is {entry.config.get(key, '<unset>')!r}, sweep {entry.sweep!r} sets "
                            f"{plain.get(key, '<unset>')!r}")  # fmt: skip
    check_config_file(entry, spec, source, root)
    for key in UNSUPPORTED_BUDGET_KEYS:
        if key in entry.config:
            raise _fail(source, f"config {key} is not supported on the leaderboard (the step count could not be checked)")
    cls = spec.datamodule_class
    merged = {**spec.fit, **spec.model_fit.get(entry.model, {})}
    data = {k[5:]: v for k, v in merged.items() if k.startswith("data.") and "." not in k[5:]}
    first = entry.cells[0]
    for cell in entry.cells:
        expected_id = Cell(entry.model, cell.n_poses, cell.leave_out_class, cell.seed, entry.method).cell_id
        if cell.cell != expected_id:
            raise _fail(source, f"cell {cell.cell} holds the run of {expected_id} (its settings name it so)")
        if cell.model != first.model:
            raise _fail(source, f"cells {first.cell} and {cell.cell} trained differently set models")
        hparams = dict(cell.data.hparams)
        module = _datamodule(cls, json.dumps({**data, cls.order_argument: cell.n_poses, "leave_out_class": cell.leave_out_class}))
        if cell.data.order_argument != cls.order_argument or hparams.get(cls.order_argument) != cell.n_poses:
            raise _fail(source, f"cell {cell.cell}: order_argument {cell.data.order_argument!r} / n_poses {cell.n_poses} "
                                f"disagree with {cls.__name__}'s {cls.order_argument} = {hparams.get(cls.order_argument)!r}")  # fmt: skip
        if cell.data.group != module["group"]:
            raise _fail(source, f"cell {cell.cell}: group {cell.data.group!r}, but {cls.__name__} acts by {module['group']!r}")
        if hparams.get("data_dir") != first.data.hparams.get("data_dir"):
            raise _fail(source, f"cells {first.cell} and {cell.cell} read their data from different data_dir")
        hparams.pop("data_dir", None)
        for key in sorted(set(hparams) | set(module["hparams"])):
            if hparams.get(key, "<unset>") != module["hparams"].get(key, "<unset>"):
                raise _fail(source, f"cell {cell.cell}: data.{key} is {hparams.get(key, '<unset>')!r}, sweep {entry.sweep!r} "
                                    f"sets {module['hparams'].get(key, '<unset>')!r}")  # fmt: skip


def check_config_file(entry: Entry, spec: Any, source: str, root: Path) -> None:
    """`config_file` is the one the sweep names for the model, or `models/<model>.yaml` (which
    `sweep run --models` adds), and `config_file_content` is that file's YAML, read from `root`."""
    import yaml

    from orbitbench.io import check_yaml_size, read_text_file

    named = spec.config_files.get(entry.model)
    file, content = entry.config.get("config_file"), entry.config.get("config_file_content")
    if file is None:
        if named is not None or content is not None:
            raise _fail(source, f"config has no config_file but sweep {entry.sweep!r} trains {entry.model} with {named}")
        return
    if file not in {named, f"models/{entry.model}.yaml"} - {None}:
        raise _fail(source, f"config.config_file {file!r} is not the config file sweep {entry.sweep!r} gives {entry.model}")
    text = read_text_file(Path(root) / file, "config file")
    check_yaml_size(text, f"config file {file}")
    if current_path(content) != current_path(json.loads(json.dumps(yaml.safe_load(text)))):
        raise _fail(source, f"config.config_file_content is not the content of {file}")


@lru_cache(maxsize=512)
def _datamodule_cached(cls: type, arguments: str) -> str:
    module = cls(**json.loads(arguments))
    hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_") and k != "data_dir"}
    return json.dumps({"group": module.group.kind, "hparams": json.loads(json.dumps(hparams))})


def _datamodule(cls: type, arguments: str) -> dict[str, Any]:
    """The group kind and the hyper-parameters (data_dir aside) a DataModule built with `arguments` has."""
    return json.loads(_datamodule_cached(cls, arguments))


# ---- measurements --------------------------------------------------------------------------------


def split_sizes(hparams: dict[str, Any], n_poses: int) -> tuple[int, int, int, int]:
    """(images, train, in-test, out-test) pairs of a built-in source, as `split_pairs` makes them."""
    sizes = CLASS_SIZES[hparams["source"]]
    if hparams.get("images_per_class") is not None:
        sizes = (hparams["images_per_class"],) * len(sizes)
    out_test = sizes[hparams["leave_out_class"]] * len(hparams["held_out_poses"])
    rest = sum(sizes) * n_poses - out_test
    in_test = round(hparams["in_test_fraction"] * rest)
    return sum(sizes), rest - in_test, in_test, out_test


def _whole(accuracy: float | None, count: int) -> bool:
    return accuracy is None or abs(accuracy * count - round(accuracy * count)) <= COUNT_SLACK


def check_measurements(entry: Entry, source: str) -> None:
    """Per cell: the resolved source and image count, per-pose accuracies consistent with the
    split accuracies, each accuracy a whole count of its split, and the step count the one the
    epochs run (or `trainer.max_steps`) make with the split size and batch size."""
    max_steps = entry.config.get("trainer.max_steps", -1)
    for cell in entry.cells:
        where = f"cell {cell.cell}"
        hp, m = cell.data.hparams, cell.metrics
        if hp.get("source") not in CLASS_SIZES:
            raise _fail(source, f"{where}: data source {hp.get('source')!r} is not a built-in one (mnist, mnist5k)")
        images, train, in_test, out_test = split_sizes(hp, cell.n_poses)
        if cell.data.digits is not None and cell.data.digits != hp["source"]:
            raise _fail(source, f"{where}: digits {cell.data.digits!r} contradicts data.source {hp['source']!r}")
        if cell.data.n_images is not None and cell.data.n_images != images:
            raise _fail(source, f"{where}: n_images {cell.data.n_images} but its data settings give {images}")
        pose_in, pose_out = m.in_test_acc_per_pose, m.out_test_acc_per_pose
        if len(pose_in) != cell.n_poses or len(pose_out) != cell.n_poses:
            raise _fail(source, f"{where}: per-pose accuracies list {len(pose_in)} / {len(pose_out)} poses, not {cell.n_poses}")
        held = [i for i, v in enumerate(pose_out) if v is not None]
        if held != sorted(hp["held_out_poses"]) or None in pose_in:
            raise _fail(source, f"{where}: per-pose accuracies are not given exactly for the poses its splits hold")
        if any(not 0.0 <= v <= 1.0 for v in [*pose_in, *(pose_out[i] for i in held)]):
            raise _fail(source, f"{where}: a per-pose accuracy outside [0, 1]")
        if abs(sum(pose_out[i] for i in held) / len(held) - m.out_test_acc) > MEAN_SLACK:
            raise _fail(source, f"{where}: out_test_acc {m.out_test_acc} is not the mean of its per-pose values")
        if not min(pose_in) - MEAN_SLACK <= m.in_test_acc <= max(pose_in) + MEAN_SLACK:
            raise _fail(source, f"{where}: in_test_acc {m.in_test_acc} lies outside its per-pose values")
        for name, value, count in (("train_acc", m.train_acc, train), ("in_test_acc", m.in_test_acc, in_test),
                                   ("out_test_acc", m.out_test_acc, out_test)):  # fmt: skip
            if not _whole(value, count):
                raise _fail(source, f"{where}: {name} {value} is not a whole number of its {count} images right")
        per_epoch = math.ceil(train / hp["batch_size"])
        if isinstance(max_steps, int) and max_steps > 0:
            if cell.epochs != math.ceil(cell.global_step / per_epoch):
                raise _fail(source, f"{where}: {cell.global_step} steps of {per_epoch} per epoch are not {cell.epochs} epochs")
        elif cell.global_step != cell.epochs * per_epoch:
            raise _fail(source, f"{where}: {cell.epochs} epochs of {per_epoch} steps are not {cell.global_step} steps")


# ---- provenance, dates, verification ------------------------------------------------------------


def check_provenance(entry: Entry, source: str, now: dt.datetime | None = None) -> None:
    """One set of package versions for all cells (the provenance's), the provenance's commit the
    cells' one (None when they ran at several), the entry's date the last cell's, none in the future."""
    now = now or dt.datetime.now(dt.timezone.utc)
    versions = entry.cells[0].versions
    for cell in entry.cells:
        if cell.versions != versions:
            raise _fail(source, f"cells {entry.cells[0].cell} and {cell.cell} ran different package versions; "
                                "an entry's cells come from one installation")  # fmt: skip
        if cell.finished > now + CLOCK_SLACK:
            raise _fail(source, f"cell {cell.cell} finished in the future ({cell.finished.isoformat()})")
    if entry.provenance.versions != versions or entry.provenance.orbitbench != versions.get("orbitbench", "unknown"):
        raise _fail(source, "provenance versions do not match the cells' versions")
    commits = {c.git_commit for c in entry.cells}
    expected = commits.pop() if len(commits) == 1 else None
    if entry.provenance.git_commit != expected:
        raise _fail(source, f"provenance.git_commit is {entry.provenance.git_commit!r}, the cells' is {expected!r}"
                            + (" (they ran at several commits)" if expected is None else ""))
    last = max(c.finished for c in entry.cells).date()
    if entry.date != last:
        raise _fail(source, f"date is {entry.date.isoformat()}, the last cell finished on {last.isoformat()}")
    if entry.cells_digest != cells_digest(entry.cells):
        raise _fail(source, "cells_digest does not match the cells (a cell was edited by hand?)")


def check_verification(entry: Entry, source: str, today: dt.date | None = None) -> None:
    """A verification names only the entry's cells, stays within its tolerance, is dated between
    the cells' runs and today, and still matches the cells it re-ran (its digest)."""
    v = entry.verified
    if v is None:
        return
    today = today or dt.datetime.now(dt.timezone.utc).date()
    ids = [c.cell for c in entry.cells]
    unknown = [c for c in v.cells if c not in ids]
    if unknown or len(set(v.cells)) != len(v.cells):
        raise _fail(source, f"verified names cell {unknown[0] if unknown else v.cells[0]!r} that the entry does not have once")
    if v.max_abs_diff > v.tolerance:
        raise _fail(source, f"verified.max_abs_diff {v.max_abs_diff:g} exceeds its own tolerance {v.tolerance:g}")
    last = max(c.finished for c in entry.cells if c.cell in v.cells).date()
    if not last <= v.date <= today + CLOCK_SLACK:
        raise _fail(source, f"verified.date {v.date.isoformat()} is not between the cells' runs ({last.isoformat()}) and today")
    if v.digest != verification_digest(entry, v):
        raise _fail(source, "the verification no longer matches its cells (edited since the re-run); "
                            "drop `verified` or run `orbitbench leaderboard verify` again")  # fmt: skip


def cell_identity(entry: Entry) -> set[str]:
    """One key per cell run (grid position, measurements, when it finished): two entries sharing
    one are copies of the same runs, whatever their names, models or settings say."""
    return {json.dumps([c.n_poses, c.leave_out_class, c.seed, c.metrics.model_dump(mode="json"), c.finished.isoformat()],
                       sort_keys=True) for c in entry.cells}  # fmt: skip


def check_all(entry: Entry, source: str, spec: Any, root: Path) -> None:
    """Every cross-check above, in order (the first mismatch is the one line reported); `root`
    is the checkout the sweep files' paths are relative to."""
    check_names(entry, source)
    check_against_sweep(entry, spec, source, root)
    check_measurements(entry, source)
    check_provenance(entry, source)
    check_verification(entry, source)
    from orbitbench.leaderboard.rules import check_learnt

    check_learnt(entry, spec, source)  # last: a well-formed entry of a network that did not learn the task
