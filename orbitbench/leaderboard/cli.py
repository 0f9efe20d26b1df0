"""The leaderboard commands as plain typed functions (any front end can expose them), and the
what `orbitbench leaderboard ...` prints (the command line is `orbitbench.cli`).

    add(sweep_dir, ...)   validate a finished sweep against its track and write its entries
    build(...)            README.md (Markdown), index.html (static page), out_test_vs_angles.png
    check(...)            recompute every entry from its cells; README.md and index.html up to date
    verify(entry, cells)  re-run randomly chosen cells and record how far they are from the entry
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from orbitbench.errors import OrbitbenchError
from orbitbench.entrants import entrant_id
from orbitbench.io import atomic_write_bytes, atomic_write_text, one_line_validation_error, read_text_file
from orbitbench.provenance import git_commit
from orbitbench.leaderboard import crosscheck, integrity, readme_table
from orbitbench.leaderboard.schema import Entry, Provenance, Verified

DEFAULT_ROOT = Path("leaderboard")
DEFAULT_SWEEPS = Path("sweeps")
README, PAGE, FIGURE = "README.md", "index.html", "out_test_vs_angles.png"


# ---- reading -----------------------------------------------------------------------------------


def parse_entry(text: str, source: str) -> Entry:
    """A validated entry whose every named class is allowed (orbitbench.trust): it is data."""
    from orbitbench import trust

    try:
        entry = Entry.model_validate_json(text)
    except ValidationError as error:
        version = next((e.get("input") for e in error.errors() if e["loc"] == ("schema_version",)), None)
        if isinstance(version, int) and version < Entry.model_fields["schema_version"].default:
            raise OrbitbenchError(f"{source}: schema_version {version} is older than this orbitbench's "
                                  f"{Entry.model_fields['schema_version'].default}; run `orbitbench leaderboard migrate --root <leaderboard folder>`"
                                  " (no measured number changes)") from None
        raise OrbitbenchError(one_line_validation_error(source, error)) from None
    trust.check_entry(entry, source)
    return entry


def check_one(entry: Entry, path: str, sweeps: Path) -> None:
    """One entry against its track, its sweep file and its own cells."""
    tracks = integrity.load_tracks(sweeps)
    integrity.check_entry(entry, path, tracks[entry.track].protocol if entry.track in tracks else None,
                          integrity.load_sweeps(sweeps), Path(sweeps).parent)  # fmt: skip


MAX_ENTRY_BYTES = 8 * 2**20  # 40 cells take 200 kB


def read_entry(path: Path) -> Entry:
    """An entry file: a regular file (not a link, a FIFO, a device) of bounded size, parsed."""
    return parse_entry(read_text_file(path, "entry", MAX_ENTRY_BYTES, follow_links=False), str(path))


def check_collection(entries: dict[str, Entry], sweeps: Path) -> None:
    """Each entry against its track and its own cells first, then across entries: the same
    training (track, model, settings) or one same cell run in two entries is a duplicate."""
    tracks, specs = integrity.load_tracks(sweeps), integrity.load_sweeps(sweeps)
    seen: dict[tuple[str, str], str] = {}
    runs: dict[str, str] = {}
    for path, entry in entries.items():
        if Path(path).name != entry.file_name:
            raise OrbitbenchError(f"{path}: file name must be {entry.file_name!r} (<track>__<name>.json)")
        integrity.check_entry(entry, path, tracks[entry.track].protocol if entry.track in tracks else None,
                              specs, Path(sweeps).parent)  # fmt: skip
        key = (entry.track, integrity.effective_config(entry))
        if key in seen:
            raise OrbitbenchError(f"{path}: duplicate of {seen[key]} (same track, model and effective configuration); remove one")
        seen[key] = path
        for run in sorted(crosscheck.cell_identity(entry)):
            if run in runs:
                raise OrbitbenchError(f"{path}: duplicate of {runs[run]} (they hold the same cell run); remove one")
            runs[run] = path


def entries_folder(root: Path) -> Path:
    """`root/entries`, which must exist."""
    folder = Path(root) / "entries"
    if not folder.is_dir():
        raise OrbitbenchError(f"{folder} does not exist: expected the leaderboard folder with entries/*.json")
    return folder


def load_entries(root: Path, sweeps: Path = DEFAULT_SWEEPS) -> dict[str, Entry]:
    """Every `root/entries/*.json`, validated alone, against its track and together; path -> entry."""
    entries = {str(path): read_entry(path) for path in sorted(entries_folder(root).glob("*.json"))}
    check_collection(entries, sweeps)
    return entries


# ---- add ---------------------------------------------------------------------------------------


def entry_name(model: str, method: str = "supervised") -> str:
    """The default entry name: the model's, with `__<method>` unless it is trained supervised."""
    base = model.replace(":", "_").replace("(", "_").replace(")", "")
    return entrant_id(base, method, sep="__")


def entry_from_sweep(sweep_dir: Path, model: str, tracks: dict[str, integrity.Track], name: str | None = None,
                     method: str = "supervised", **metadata) -> Entry:
    """Summarise the finished cells of one model trained by one method; the protocol is what the
    cells ran, checked against the track."""
    from orbitbench.models import model_info
    from orbitbench.run.record import RECORD_FILE, load_record
    from orbitbench.sweep.results import cell_dir, read_sweep_dir

    state = read_sweep_dir(sweep_dir)  # every finished record must be its cell's
    spec = state.spec
    if model not in spec.grid.model:
        raise OrbitbenchError(f"model {model!r} is not in {state.root}'s grid ({', '.join(spec.grid.model)})")
    if method not in spec.grid.method:
        raise OrbitbenchError(f"method {method!r} is not in {state.root}'s grid ({', '.join(spec.grid.method)})")
    missing = [cell.cell_id for cell in state.missing if cell.model == model and cell.method == method]
    if missing:
        raise OrbitbenchError(f"sweep {state.root} is incomplete for {model}: {len(missing)} cells have no result "
                              f"(e.g. {missing[0]}); finish it with `orbitbench sweep run` first")
    cells = [integrity.cell_from_record(c.cell_id, load_record(cell_dir(state.root, c) / RECORD_FILE))
             for c in spec.cells() if c.model == model and c.method == method]
    source = f"sweep {state.root}"
    if spec.track not in tracks:
        raise OrbitbenchError(f"{source}: track {spec.track!r} is not defined by any sweeps/*.yaml")
    protocol = integrity.protocol_from_cells(cells, source)
    difference = integrity.differing_setting(protocol, tracks[spec.track].protocol)
    if difference:
        raise OrbitbenchError(f"{source}: a cell's {difference}; it is not track {spec.track!r}")
    results, score = integrity.recompute(cells)
    commits = {c.git_commit for c in cells}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    info = model_info(model)
    metadata.setdefault("invariance", info.invariance)
    try:
        return Entry(
            name=name or entry_name(model, method), model=model, method=method, builder=info.builder_path, config=spec.training_config(model),
            param_count=cells[0].model.n_params, track=spec.track, protocol=protocol, score=score, results=results,
            provenance=Provenance(orbitbench=cells[0].versions.get("orbitbench", "unknown"),
                                  git_commit=commits.pop() if len(commits) == 1 else None, versions=cells[0].versions),
            sweep=spec.name, date=max(c.finished for c in cells).date(), cells=cells,
            cells_digest=crosscheck.cells_digest(cells), **metadata,
        )
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(f"entry for {model} from {state.root}", error)) from None


def add(sweep_dir: Path, models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
        name: str | None = None, notes: str = "", authors: Sequence[str] = (), paper: str | None = None,
        code: str | None = None, invariance: str | None = None, replace: bool = False, root: Path = DEFAULT_ROOT,
        sweeps: Path = DEFAULT_SWEEPS) -> list[Path]:
    """Write one entry per (model, method) of a finished sweep (default: all of its grid).

    Every entry is checked (alone and with the existing ones) before any is written. The method is
    the one the cells trained with; `invariance` defaults to the registry's (`none`, `built-in:c4` for
    `c4_pooled(...)`, `built-in:c<n>` for `steerable_cnn_c<n>`)."""
    from orbitbench.sweep.results import read_spec

    tracks = integrity.load_tracks(sweeps)
    grid = read_spec(Path(sweep_dir)).grid
    pairs = [(m, t) for m in (models or grid.model) for t in (methods or grid.method)]
    if name and len(pairs) != 1:
        raise OrbitbenchError(f"--name needs exactly one (model, method); the selection has {len(pairs)} "
                              "(choose with --models and --methods)")  # fmt: skip
    new = [entry_from_sweep(Path(sweep_dir), m, tracks, name, method=t, notes=notes, authors=list(authors),
                            paper=paper, code=code, invariance=invariance) for m, t in pairs]  # fmt: skip
    folder = entries_folder(root)
    targets = {str(folder / entry.file_name): entry for entry in new}
    if len(targets) != len(new):
        raise OrbitbenchError("two models of this sweep map to the same entry name; add them one by one with --name")
    present = {str(path) for path in folder.glob("*.json")}
    for path in targets:
        if path in present and not replace:
            raise OrbitbenchError(f"{path} already exists; pass --replace to overwrite it or --name for another entry")
    # An entry being replaced is not checked against the track's file: a re-seed changes the file
    # first, and the old entry it replaces no longer matches it. Every other entry still must.
    others = {path: read_entry(Path(path)) for path in sorted(present - set(targets))}
    targets = {path: keep_verification(_replaced(Path(path)) if path in present else None, entry)
               for path, entry in targets.items()}  # fmt: skip
    check_collection({**others, **targets}, sweeps)
    for path, entry in targets.items():
        write_entry(Path(path), entry)
    return [Path(path) for path in targets]


def _replaced(path: Path) -> Entry | None:
    """The entry a `--replace` overwrites, for its verification; None where it cannot be read."""
    try:
        return read_entry(path)
    except OrbitbenchError:
        return None


# Free text a submitter may change without touching what a verification re-ran.
DESCRIPTIVE_FIELDS = {"notes", "authors", "paper", "code", "verified"}


def keep_verification(old: Entry | None, new: Entry) -> Entry:
    """Carry an entry's verification over a `--replace` that changes only its descriptive fields.

    A re-run of cells vouches for the cells; re-adding the same cells to fix a note must not
    silently turn a verified entry back into a reported one."""
    if old is None or old.verified is None:
        return new
    if old.model_dump(exclude=DESCRIPTIVE_FIELDS) != new.model_dump(exclude=DESCRIPTIVE_FIELDS):
        return new
    return new.model_copy(update={"verified": old.verified})


def write_entry(path: Path, entry: Entry) -> None:
    atomic_write_text(path, entry.model_dump_json(indent=1) + "\n")


# ---- build / check / verify ---------------------------------------------------------------------


def rendered(entries: dict[str, Entry], sweeps: Path) -> dict[str, str]:
    """File name -> text of every rendering that `check` compares (the PNG is not compared)."""
    from orbitbench.leaderboard.render import render_html, render_readme

    from orbitbench.leaderboard.rules import ranked_tracks

    about = {name: " ".join(track.description.split()) for name, track in integrity.load_tracks(sweeps).items()}
    unranked = frozenset(t for t, ranked in ranked_tracks(integrity.load_sweeps(sweeps)).items() if not ranked)
    return {README: render_readme(entries, about, unranked), PAGE: render_html(entries, about, unranked)}


def build(root: Path = DEFAULT_ROOT, sweeps: Path = DEFAULT_SWEEPS) -> list[Path]:
    """Check every entry, then write README.md, index.html and out_test_vs_angles.png."""
    from orbitbench.leaderboard.render import render_figure

    entries = load_entries(root, sweeps)
    written = []
    for file, text in rendered(entries, sweeps).items():
        atomic_write_text(Path(root) / file, text)
        written.append(Path(root) / file)
    atomic_write_bytes(Path(root) / FIGURE, render_figure(entries))
    readme = readme_table.project_readme(root)
    if readme is not None:  # the project README's tables: made from the entries, never by hand
        atomic_write_text(readme, readme_table.refreshed(read_text_file(readme, "README"), entries.values()))
        written.append(readme)
    return [*written, Path(root) / FIGURE]


def check(root: Path = DEFAULT_ROOT, sweeps: Path = DEFAULT_SWEEPS) -> int:
    """What CI runs: every entry recomputed from its cells, and the renderings up to date."""
    entries = load_entries(root, sweeps)
    for file, text in rendered(entries, sweeps).items():
        path = Path(root) / file
        if not path.is_file() or read_text_file(path, follow_links=False) != text:
            raise OrbitbenchError(f"{path} is out of date with {Path(root) / 'entries'}; run `orbitbench leaderboard build`")
    readme = readme_table.project_readme(root)
    if readme is not None:
        text = read_text_file(readme, "README")
        if readme_table.refreshed(text, entries.values()) != text:
            raise OrbitbenchError(f"{readme}: a leaderboard table is out of date with the entries; run `orbitbench leaderboard build`")
    return len(entries)


@dataclass(frozen=True)
class VerifyOutcome:
    verified: Verified
    rebuilt: list[Path]  # the board's renderings, rewritten with the new verification


def verify(entry: Path, cells: int = 2, tolerance: float = 0.0, seed: int | None = None,
           sweeps: Path = DEFAULT_SWEEPS) -> VerifyOutcome:
    """Re-run `cells` randomly chosen cells of `entry` on this machine and record the result in it.

    CPU runs with the entry's seeds and package versions are bit-identical (`tolerance` 0); a
    difference above `tolerance` is an error and the entry is left unchanged. An entry inside a
    board (`<root>/entries/`) has the board's pages rebuilt, so `check` passes right after.
    """
    path = Path(entry)
    limit = Verified.model_fields["tolerance"].metadata
    top = next((m.le for m in limit if getattr(m, "le", None) is not None), 0.01)
    if isinstance(tolerance, bool) or not 0.0 <= tolerance <= top:  # before any cell runs
        raise OrbitbenchError(f"--tolerance {tolerance}: expected a difference from 0 (bit-identical) to {top}")
    parsed = read_entry(path)
    check_one(parsed, str(path), sweeps)
    ids, worst = integrity.verify_cells(parsed, cells, rng=random.Random(seed))
    if worst > tolerance:
        raise OrbitbenchError(f"{path}: re-running {', '.join(ids)} differs by up to {worst:.3g} (tolerance {tolerance:g}); not verified")
    verified = Verified(date=dt.datetime.now(dt.timezone.utc).date(), cells=ids, max_abs_diff=worst, tolerance=tolerance,
                        commit=git_commit(), digest="0" * 64)
    verified = verified.model_copy(update={"digest": crosscheck.verification_digest(parsed, verified)})
    write_entry(path, parsed.model_copy(update={"verified": verified}))
    rebuilt = build(path.parent.parent, sweeps) if path.parent.name == "entries" else []
    return VerifyOutcome(verified, rebuilt)


# ---- what the front end prints (orbitbench.cli) ------------------------------------------------


def format_added(paths: list[Path]) -> str:
    lines = [f"wrote {path}" for path in paths]
    return "\n".join([*lines, "now run `orbitbench leaderboard build` and commit the entry with the rendered README.md and index.html"])


def format_built(paths: list[Path]) -> str:
    return "wrote " + ", ".join(str(p) for p in paths)


def format_checked(count: int) -> str:
    return f"{count} entries valid"


def format_verified(done: VerifyOutcome) -> str:
    line = f"verified: {', '.join(done.verified.cells)} re-run, max |difference| {done.verified.max_abs_diff:.3g}"
    return line + (f"; rebuilt {', '.join(str(p) for p in done.rebuilt)}" if done.rebuilt else "")

