"""Schema 2 -> 3: add the derived digests to committed entries (no measured number changes).

    python -m orbitbench.leaderboard.migrate [leaderboard/entries]

Schema 3 adds `cells_digest` (sha256 of the cells) and `verified.digest` (sha256 of the cells a
verification re-ran, with its own fields). Both are derived from what the entry already holds;
a schema-2 verification's digest is taken over the cells as they are now, which `check` has
recomputed and accepted since that verification ran. Every file is written atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ValidationError

from orbitbench.errors import OrbitbenchError
from orbitbench.io import atomic_write_text, one_line_validation_error, read_text_file


def migrated(data: dict) -> dict:
    """A schema-2 entry as JSON, with schema 3's derived fields added (other fields untouched)."""
    from orbitbench.leaderboard import crosscheck
    from orbitbench.leaderboard.schema import EntryCell, Verified

    if data.get("schema_version") != 2:
        return data
    cells = [EntryCell.model_validate_json(json.dumps(cell)) for cell in data["cells"]]
    out = {k: v for k, v in data.items() if k != "cells"}
    out["schema_version"] = 3
    out["cells_digest"] = crosscheck.cells_digest(cells)
    out["cells"] = data["cells"]
    if data.get("verified") is not None:
        verified = Verified.model_validate_json(json.dumps({**data["verified"], "digest": "0" * 64}))
        entry_like = type("Cells", (), {"cells": cells})()
        out["verified"] = {**data["verified"], "digest": crosscheck.verification_digest(entry_like, verified)}
    return out


def migrate_folder(folder: Path) -> list[Path]:
    """Rewrite every schema-2 entry of `folder`; the rewritten paths."""
    from orbitbench.leaderboard.schema import Entry

    written = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(read_text_file(path, "entry", follow_links=False))
        new = migrated(data)
        if new is data:
            continue
        try:
            entry = Entry.model_validate_json(json.dumps(new))
        except ValidationError as error:
            raise OrbitbenchError(one_line_validation_error(str(path), error)) from None
        atomic_write_text(path, entry.model_dump_json(indent=1) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    try:
        done = migrate_folder(Path(sys.argv[1] if len(sys.argv) > 1 else "leaderboard/entries"))
    except OrbitbenchError as error:
        sys.exit(f"orbitbench: {error}")
    print(f"migrated {len(done)} entries")
