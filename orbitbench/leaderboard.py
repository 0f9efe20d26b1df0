"""`orbitbench leaderboard`: validated entries, one per submitted (architecture, track) result.

    orbitbench leaderboard add <sweep-dir> [--model M] [--name N] [--notes TEXT] [--replace]
    orbitbench leaderboard build      # leaderboard/README.md + leaderboard/out_test_vs_angles.png
    orbitbench leaderboard check      # every entry valid, no duplicates, README up to date

An entry is a JSON file `leaderboard/entries/<track>__<name>.json` checked by the `Entry` schema
(pydantic, strict: wrong types are errors, not coerced). A *track* fixes the protocol (data
source and subsampling, group, orders, leave-out classes); the training budget is the
submission's choice and is recorded in `config`. Entries of different tracks are never ranked
together, and all entries of a track must share its protocol.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_bytes, atomic_write_text, one_line_validation_error
from orbitbench.models import builder_path
from orbitbench.sweep.results import CellResult, SweepState, aggregate, read_sweep_dir
from orbitbench.sweep.spec import NAME_PATTERN, TRACK_PATTERN

DEFAULT_ROOT = Path("leaderboard")
README = "README.md"
FIGURE = "out_test_vs_angles.png"


class Stat(BaseModel):
    """An accuracy over leave-out classes (x seeds): mean, population std and how many cells."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mean: float = Field(ge=0.0, le=1.0)
    std: float = Field(ge=0.0, le=0.5)  # a [0, 1] quantity cannot spread more than 0.5
    n: int = Field(ge=1)


class PoseResult(BaseModel):
    """The results at one group order (one x value of Fig. 1C)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n_poses: int = Field(ge=1)
    train: Stat | None = None
    in_test: Stat
    out_test: Stat
    spectral_predicted: Stat | None = None


class Protocol(BaseModel):
    """What a track fixes: which images, which group and orders, which leave-out classes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    datamodule: str
    n_poses: list[int] = Field(min_length=1)
    leave_out_classes: list[int] = Field(min_length=1)
    data: dict[str, Any] = {}

    @field_validator("datamodule")
    @classmethod
    def _known_datamodule(cls, name: str) -> str:
        from orbitbench.datamodules import datamodule_class

        datamodule_class(name)
        return name

    @field_validator("n_poses", "leave_out_classes")
    @classmethod
    def _sorted_unique(cls, values: list[int]) -> list[int]:
        if values != sorted(set(values)):
            raise ValueError(f"must be sorted and unique, got {values}")
        return values


class Entry(BaseModel):
    """One leaderboard entry: an architecture's sweep on one track, summarised per group order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1)
    builder: str = Field(pattern=r"^[\w.]+:[\w.]+$")  # module:function
    config: dict[str, Any]
    param_count: int = Field(ge=1)
    track: str = Field(pattern=TRACK_PATTERN)
    protocol: Protocol
    seeds: list[int] = Field(min_length=1)
    results: list[PoseResult] = Field(min_length=1)
    sweep: str
    versions: dict[str, str]
    date: dt.date
    notes: str = ""

    @model_validator(mode="after")
    def _results_match_protocol(self) -> Entry:
        orders = [r.n_poses for r in self.results]
        if orders != self.protocol.n_poses:
            raise ValueError(f"results are for n_poses {orders} but protocol.n_poses is {self.protocol.n_poses}")
        expected = len(self.protocol.leave_out_classes) * len(self.seeds)
        for result in self.results:
            if result.out_test.n != expected or result.in_test.n != expected:
                raise ValueError(
                    f"n_poses={result.n_poses}: n must be {expected} (leave-out classes x seeds), "
                    f"got in_test {result.in_test.n}, out_test {result.out_test.n}"
                )
        return self

    @property
    def file_name(self) -> str:
        return f"{self.track}__{self.name}.json"

    @property
    def mean_out_test(self) -> float:
        """The ranking score: out-test accuracy averaged over the track's group orders."""
        return sum(r.out_test.mean for r in self.results) / len(self.results)

    @property
    def mean_in_test(self) -> float:
        return sum(r.in_test.mean for r in self.results) / len(self.results)

    @property
    def mean_spectral(self) -> float | None:
        values = [r.spectral_predicted.mean for r in self.results if r.spectral_predicted is not None]
        return sum(values) / len(values) if values else None

    def experiment_key(self) -> str:
        """Two entries with the same key report the same experiment twice (a duplicate)."""
        return json.dumps([self.track, self.model, self.config, self.seeds], sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Reading and validating
# ----------------------------------------------------------------------------------------------


def parse_entry(text: str, source: str) -> Entry:
    try:
        return Entry.model_validate_json(text)
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(source, error)) from None


def check_collection(entries: dict[str, Entry]) -> None:
    """Cross-entry rules: canonical file names, no duplicates, one protocol per track."""
    seen: dict[str, str] = {}
    protocols: dict[str, tuple[str, Protocol]] = {}
    for path, entry in entries.items():
        if Path(path).name != entry.file_name:
            raise OrbitbenchError(f"{path}: file name must be {entry.file_name!r} (<track>__<name>.json)")
        key = entry.experiment_key()
        if key in seen:
            raise OrbitbenchError(
                f"{path}: duplicate of {seen[key]} (same track, model, config and seeds); remove one"
            )
        seen[key] = path
        if entry.track in protocols and protocols[entry.track][1] != entry.protocol:
            other, protocol = protocols[entry.track]
            field = next(f for f in Protocol.model_fields if getattr(protocol, f) != getattr(entry.protocol, f))
            raise OrbitbenchError(
                f"{path}: protocol.{field} differs from {other} on track {entry.track!r} "
                f"({getattr(entry.protocol, field)!r} vs {getattr(protocol, field)!r}); a new protocol needs a new track"
            )
        protocols.setdefault(entry.track, (path, entry.protocol))


def load_entries(root: Path) -> dict[str, Entry]:
    """Every `root/entries/*.json`, validated one by one and then together; path -> entry."""
    folder = root / "entries"
    if not folder.is_dir():
        raise OrbitbenchError(f"{folder} does not exist: expected the leaderboard folder with entries/*.json")
    entries = {str(path): parse_entry(path.read_text(), str(path)) for path in sorted(folder.glob("*.json"))}
    check_collection(entries)
    return entries


# ----------------------------------------------------------------------------------------------
# From a sweep to entries
# ----------------------------------------------------------------------------------------------


def _stat(stats: dict[tuple[str, int], tuple[float, float, int]], model: str, n: int) -> Stat | None:
    if (model, n) not in stats:
        return None
    mean, std, count = stats[(model, n)]
    return Stat(mean=round(mean, 6), std=round(std, 6), n=count)


def entry_from_sweep(state: SweepState, model: str, name: str | None = None, notes: str = "") -> Entry:
    """Summarise one model's finished cells; refuse an incomplete sweep (every cell is needed)."""
    spec = state.spec
    if model not in spec.grid.model:
        raise OrbitbenchError(f"model {model!r} is not in {state.root}'s grid ({', '.join(spec.grid.model)})")
    missing = [cell.cell_id for cell in state.missing if cell.model == model]
    if missing:
        raise OrbitbenchError(
            f"sweep {state.root} is incomplete for {model}: {len(missing)} cells have no result "
            f"(e.g. {missing[0]}); finish it with `orbitbench sweep run` first"
        )
    results: list[CellResult] = [r for r in state.results.values() if r.model == model]
    params = {r.param_count for r in results}
    if None in params or len(params) != 1:
        raise OrbitbenchError(f"sweep {state.root}: {model}'s cells report parameter counts {sorted(params, key=str)}; expected one number")
    stats = {key: aggregate(results, key) for key in ("train_acc", "in_test_acc", "out_test_acc", "spectral_pred_acc")}
    per_pose = [
        PoseResult(
            n_poses=n,
            train=_stat(stats["train_acc"], model, n),
            in_test=_stat(stats["in_test_acc"], model, n),
            out_test=_stat(stats["out_test_acc"], model, n),
            spectral_predicted=_stat(stats["spectral_pred_acc"], model, n),
        )
        for n in sorted(spec.n_poses)
    ]
    finished = max(r.finished for r in results)
    try:
        return Entry(
            name=name or model.replace(":", "_").replace("(", "_").replace(")", ""),
            model=model,
            builder=builder_path(model),
            config=spec.training_config(model),
            param_count=params.pop(),
            track=spec.track,
            protocol=Protocol(
                datamodule=spec.datamodule,
                n_poses=sorted(spec.n_poses),
                leave_out_classes=sorted(spec.grid.leave_out_class),
                data=spec.protocol_data(),
            ),
            seeds=sorted(spec.grid.seed),
            results=per_pose,
            sweep=spec.name,
            versions=results[0].versions,
            date=finished.date(),
            notes=notes,
        )
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(f"entry for {model} from {state.root}", error)) from None


def add_entries(
    sweep_dir: str | Path, root: Path, models: Sequence[str] | None = None, name: str | None = None,
    notes: str = "", replace: bool = False,
) -> list[Path]:
    """Validate every requested entry (alone and with the existing ones) before writing any."""
    state = read_sweep_dir(sweep_dir)
    models = list(models or state.spec.grid.model)
    if name and len(models) != 1:
        raise OrbitbenchError(f"--name needs exactly one --model (the sweep has {', '.join(models)})")
    new = [entry_from_sweep(state, model, name, notes) for model in models]
    existing = load_entries(root)
    folder = root / "entries"
    targets = {str(folder / entry.file_name): entry for entry in new}
    if len(targets) != len(new):
        raise OrbitbenchError("two models of this sweep map to the same entry name; add them one by one with --name")
    for path in targets:
        if path in existing and not replace:
            raise OrbitbenchError(f"{path} already exists; pass --replace to overwrite it or --name for another entry")
    check_collection({**existing, **targets})
    for path, entry in targets.items():
        atomic_write_text(Path(path), entry.model_dump_json(indent=2) + "\n")
    return [Path(path) for path in targets]


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def by_track(entries: dict[str, Entry]) -> dict[str, list[Entry]]:
    """Track -> its entries ranked by mean out-test accuracy (ties: name). Tracks never mix."""
    tracks: dict[str, list[Entry]] = {}
    for entry in entries.values():
        tracks.setdefault(entry.track, []).append(entry)
    return {
        track: sorted(group, key=lambda e: (-round(e.mean_out_test, 9), e.name))
        for track, group in sorted(tracks.items())
    }


def _pm(stat: Stat | None) -> str:
    return "–" if stat is None else f"{stat.mean:.3f} ± {stat.std:.3f}"


def render_readme(entries: dict[str, Entry]) -> str:
    lines = [
        "# orbitbench leaderboard",
        "",
        "<!-- generated by `orbitbench leaderboard build` from leaderboard/entries/*.json: do not edit -->",
        "",
        "Can an architecture learn a symmetry it has only partly seen? Each track trains on every pose of",
        "every class except the upright pose of one leave-out class; **out-test** is the accuracy on those",
        "never-seen upright images, **in-test** on held-out images in seen (class, pose) combinations.",
        "Entries are ranked by out-test accuracy averaged over the track's group orders (each a mean over",
        "leave-out classes); the gap is mean in-test minus mean out-test. Tracks are never ranked together.",
        "How to add an entry: see [CONTRIBUTING.md](../CONTRIBUTING.md).",
        "",
        f"![out-test accuracy vs group order]({FIGURE})",
        "",
    ]
    if not entries:
        lines += ["No entries yet.", ""]
    for track, ranked in by_track(entries).items():
        protocol = ranked[0].protocol
        data = ", ".join(f"{k}={v}" for k, v in protocol.data.items()) or "defaults"
        orders = protocol.n_poses
        lines += [
            f"## Track `{track}`",
            "",
            f"{protocol.datamodule}, n_poses {orders}, leave-out classes {protocol.leave_out_classes}, data: {data}.",
            "Reproduce: " + ", ".join(
                f"`orbitbench sweep run sweeps/{name}.yaml`" for name in sorted({e.sweep for e in ranked})
            ) + " (each entry's training settings are in its JSON file).",
            "",
            "| Rank | Entry | Model | Params | Out-test | In-test | Gap | "
            + " | ".join(f"out-test n={n}" for n in orders)
            + " | Spectral-pred. | Seeds | Date |",
            "|---:|---|---|---:|---:|---:|---:|" + "---:|" * len(orders) + "---:|---:|---|",
        ]
        for rank, entry in enumerate(ranked, start=1):
            spectral = entry.mean_spectral
            cells = [
                str(rank), entry.name, f"`{entry.model}`", f"{entry.param_count:,}",
                f"**{entry.mean_out_test:.3f}**", f"{entry.mean_in_test:.3f}",
                f"{entry.mean_in_test - entry.mean_out_test:+.3f}",
                *(_pm(r.out_test) for r in entry.results),
                "–" if spectral is None else f"{spectral:.3f}", str(len(entry.seeds)), entry.date.isoformat(),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        noted = [e for e in ranked if e.notes]
        if noted:
            lines += ["", *(f"- **{e.name}**: {e.notes}" for e in noted)]
        lines.append("")
    return "\n".join(lines)


def render_figure(entries: dict[str, Entry]) -> bytes:
    """One panel per track: out-test accuracy vs group order, mean ± std band per entry."""
    from orbitbench.plots import Curve, Panel, accuracy_png

    panels = [
        Panel(f"track {track}", ranked[0].protocol.n_poses, "group order (n_angles / n_shifts)", "out-test accuracy",
              [Curve(e.name, [r.n_poses for r in e.results], [r.out_test.mean for r in e.results],
                     [r.out_test.std for r in e.results]) for e in ranked])
        for track, ranked in by_track(entries).items()
    ]
    return accuracy_png(panels, width=7.5, dpi=110, empty_text="no entries yet")


def build(root: Path) -> tuple[Path, Path]:
    entries = load_entries(root)
    readme, figure = root / README, root / FIGURE
    atomic_write_text(readme, render_readme(entries))
    atomic_write_bytes(figure, render_figure(entries))
    return readme, figure


def check(root: Path) -> int:
    """Validate every entry; the rendered README must match them (PNG bytes vary with matplotlib)."""
    entries = load_entries(root)
    readme = root / README
    if entries and (not readme.is_file() or readme.read_text() != render_readme(entries)):
        raise OrbitbenchError(f"{readme} is out of date with {root / 'entries'}; run `orbitbench leaderboard build`")
    return len(entries)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbitbench leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="leaderboard folder (default: leaderboard)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="validate a finished sweep and write its entries")
    add.add_argument("sweep_dir")
    add.add_argument("--model", action="append", help="only this model of the sweep (repeatable)")
    add.add_argument("--name", help="entry name (default: the model name); needs one --model")
    add.add_argument("--notes", default="", help="one line shown under the track's table")
    add.add_argument("--replace", action="store_true", help="overwrite an existing entry of the same name")
    sub.add_parser("build", help="render README.md and out_test_vs_angles.png from the entries")
    sub.add_parser("check", help="validate every entry and that README.md is up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    root = Path(args.root)
    try:
        if args.command == "add":
            for path in add_entries(args.sweep_dir, root, args.model, args.name, args.notes, args.replace):
                print(f"wrote {path}")
            print("now run `orbitbench leaderboard build` and commit the entry with the rendered README")
        elif args.command == "build":
            readme, figure = build(root)
            print(f"wrote {readme} and {figure}")
        elif args.command == "check":
            print(f"{check(root)} entries valid")
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        return 2
    return 0
