"""Entries of older schemas brought to the current one (no measured number changes).

    orbitbench leaderboard migrate [--root leaderboard]

- 2 -> 3 adds `cells_digest` (sha256 of the cells) and `verified.digest` (sha256 of the cells a
  verification re-ran, with its own fields). Both are derived from what the entry already holds;
  a schema-2 verification's digest is taken over the cells as they are now, which `check` has
  recomputed and accepted since that verification ran.
- 3 -> 4 renames the DataModule argument `seeds_per_class` to `images_per_class` (the protocol's
  data settings and every cell's DataModule settings) and derives both digests again over the
  renamed cells: a relabelling of the same values, which `check` then recomputes as always.

`check` refuses an older schema rather than migrating it on load: a digest recomputed at load
would vouch for whatever cells a file holds. Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_text, one_line_validation_error, read_text_file


RENAMED_DATA = {"seeds_per_class": "images_per_class"}  # schema 3 -> 4


def _with_digests(data: dict, version: int) -> dict:
    """`data` at `version` with `cells_digest` and `verified.digest` derived from its cells."""
    from orbitbench.leaderboard import crosscheck
    from orbitbench.leaderboard.schema import EntryCell, Verified

    cells = [EntryCell.model_validate_json(json.dumps(cell)) for cell in data["cells"]]
    out = {k: v for k, v in data.items() if k != "cells"}
    out["schema_version"] = version
    out["cells_digest"] = crosscheck.cells_digest(cells)
    out["cells"] = data["cells"]
    if data.get("verified") is not None:
        verified = Verified.model_validate_json(json.dumps({**data["verified"], "digest": "0" * 64}))
        entry_like = type("Cells", (), {"cells": cells})()
        out["verified"] = {**data["verified"], "digest": crosscheck.verification_digest(entry_like, verified)}
    return out


def _renamed(settings: dict) -> dict:
    return {RENAMED_DATA.get(k, k): v for k, v in settings.items()}


def migrated(data: dict) -> dict:
    """An entry as JSON at the current schema (the same object when it is already there)."""
    if data.get("schema_version") == 2:
        data = _with_digests(data, 3)
    if data.get("schema_version") == 3:
        protocol = {**data["protocol"], "data": _renamed(data["protocol"]["data"])}
        cells = [{**cell, "data": {**cell["data"], "hparams": _renamed(cell["data"]["hparams"])}} for cell in data["cells"]]
        data = _with_digests({**data, "protocol": protocol, "cells": cells}, 4)
    return data


def migrate_folder(folder: Path) -> list[Path]:
    """Rewrite every entry of `folder` that is not at the current schema; the rewritten paths.

    Every file is read and migrated before any is written, so a bad file leaves all as they were."""
    from orbitbench.leaderboard.schema import Entry

    if not Path(folder).is_dir():
        raise OrbitbenchError(f"{folder} is not a folder: expected the leaderboard's entries/ folder")
    pending = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(read_text_file(path, "entry", follow_links=False))
        except json.JSONDecodeError as error:
            raise OrbitbenchError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
            raise OrbitbenchError(f"{path}: not a leaderboard entry (no schema_version)")
        try:
            new = migrated(data)
        except (KeyError, TypeError, ValidationError) as error:
            raise OrbitbenchError(f"{path}: cannot migrate schema {data['schema_version']}: "
                                  f"{type(error).__name__} {str(error).splitlines()[0][:200]}") from None
        if new is data:
            continue
        try:
            entry = Entry.model_validate_json(json.dumps(new))
        except ValidationError as error:
            raise OrbitbenchError(one_line_validation_error(str(path), error)) from None
        pending.append((path, entry.model_dump_json(indent=1) + "\n"))
    for path, text in pending:
        atomic_write_text(path, text)
    return [path for path, _ in pending]


def migrate(root: Path = Path("leaderboard")) -> list[Path]:
    """`orbitbench leaderboard migrate`: bring every entry of `<root>/entries` to the current schema."""
    return migrate_folder(Path(root) / "entries")


def format_migrated(paths: list[Path]) -> str:
    return f"orbitbench leaderboard migrate: {len(paths)} entr{'y' if len(paths) == 1 else 'ies'} rewritten" + \
        "".join(f"\n  {p}" for p in paths)
