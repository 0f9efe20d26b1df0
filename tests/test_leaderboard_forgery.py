"""Forgeries of real committed entries, one test per class: each is made the way a pull request
could (edit the JSON, re-derive every aggregate and digest a tool would) and `check` must refuse it
with one line. The property test mutates every leaf of a committed entry in turn."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from orbitbench.errors import OrbitbenchError
from orbitbench.leaderboard import cli, crosscheck
from orbitbench.leaderboard.integrity import recompute
from orbitbench.leaderboard.schema import FREE_TEXT, Entry

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"
ENTRIES = REPO / "leaderboard" / "entries"
MLP = "mnist-cpu__paper_mlp.json"  # verified, full MNIST (digits and image count recorded)
QUICK = "mnist5k-quick__paper_mlp.json"


def _load(name: str) -> dict:
    return json.loads((ENTRIES / name).read_text())


def _rederive(data: dict) -> dict:
    """What a careful forger runs after editing cells: aggregates and digests recomputed (data the
    schema refuses is left as it is: `check` refuses it when parsing)."""
    try:
        entry = Entry.model_validate_json(json.dumps(data))
    except ValidationError:
        return data
    results, score = recompute(entry.cells)
    entry = entry.model_copy(update={"results": results, "score": score, "cells_digest": crosscheck.cells_digest(entry.cells)})
    if entry.verified is not None:
        entry = entry.model_copy(update={"verified": entry.verified.model_copy(
            update={"digest": crosscheck.verification_digest(entry, entry.verified)})})
    return json.loads(entry.model_dump_json())


def _check(tmp_path: Path, *entries: dict, file_name: str | None = None) -> str:
    """`check` of these entries (against the repository's sweeps): its one error line, or ''."""
    folder = tmp_path / "entries"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        parsed = {}
        for data in entries:
            path = folder / (file_name or f"{data['track']}__{data['name']}.json")
            path.write_text(json.dumps(data))
            parsed[str(path)] = cli.read_entry(path)
        cli.check_collection(parsed, SWEEPS)
    except OrbitbenchError as error:
        assert "\n" not in str(error)
        return str(error)
    return ""


def test_committed_entries_pass_as_they_are(tmp_path):
    assert _check(tmp_path, _load(MLP)) == "" and _check(tmp_path, _load(QUICK)) == ""


# ---- duplicates --------------------------------------------------------------------------------


def _renamed_model(model: str):
    def change(d):
        d["model"] = model
        for c in d["cells"]:
            c["model"]["backbone"] = model
    return change


COPIES = {
    "harmless config key": lambda d: d["config"].update({"trainer.enable_progress_bar": False}),
    "batch size removed": lambda d: d["config"].pop("data.batch_size"),
    "trailing space in the model": _renamed_model("paper_mlp "),
    "builder's dotted path": _renamed_model("orbitbench.models.paper:paper_mlp"),
    "only the notes differ": lambda d: d.update(notes="a better run"),
}


@pytest.mark.parametrize("case", sorted(COPIES))
def test_a_copy_under_another_name_is_refused(tmp_path, case):
    original = _load(MLP)
    copy = json.loads(json.dumps(original))
    copy["name"] = "paper_mlp_v2"
    COPIES[case](copy)
    error = _check(tmp_path, original, _rederive(copy))
    assert error.startswith(str(tmp_path)) and ("duplicate of" in error or "config." in error
                                                or "not the registry's name" in error or "model: String should match" in error), error


@pytest.mark.parametrize("model, canonical", [("timm:mobilenetv3_small_050.lamb_in1k", "timm:mobilenetv3_small_050"),
                                              ("c4_pooled( paper_mlp)", "c4_pooled(paper_mlp)"),
                                              ("orbitbench.models.paper:paper_mlp", "paper_mlp")])
def test_model_names_have_one_canonical_form(model, canonical):
    assert crosscheck.canonical_model_name(model) == canonical


# ---- verification ------------------------------------------------------------------------------


VERIFICATIONS = {
    "a cell the entry does not have": (lambda v: v.update(cells=["paper_mlp-n8-c5-s9"]), "does not have"),
    "difference above its tolerance": (lambda v: v.update(max_abs_diff=0.004), "exceeds its own tolerance"),
    "dated 2099": (lambda v: v.update(date="2099-01-01"), "is not between the cells' runs"),
    "loose tolerance": (lambda v: v.update(tolerance=0.5, max_abs_diff=0.4), "verified.tolerance"),
}


@pytest.mark.parametrize("case", sorted(VERIFICATIONS))
def test_a_verification_names_only_its_cells_within_tolerance_and_dates(tmp_path, case):
    change, expected = VERIFICATIONS[case]
    data = _load(MLP)
    change(data["verified"])
    assert expected in _check(tmp_path, _rederive(data))


def test_editing_a_verified_cell_drops_the_badge(tmp_path):
    data = _load(MLP)
    named = next(c for c in data["cells"] if c["cell"] in data["verified"]["cells"])
    named["wall_time_s"] += 1.0  # then every aggregate and the entry's digest re-derived, the badge's kept
    entry = Entry.model_validate_json(json.dumps(data))
    data["cells_digest"] = crosscheck.cells_digest(entry.cells)
    assert "the verification no longer matches its cells" in _check(tmp_path, data)


# ---- fields compared with the cells -------------------------------------------------------------


def _cell(i, *keys_and_value):
    *keys, value = keys_and_value

    def change(d):
        target = d["cells"][i]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


COMPARED = {
    "provenance commit": (lambda d: d["provenance"].update(git_commit="0" * 40), "provenance.git_commit"),
    "provenance version": (lambda d: d["provenance"].update(orbitbench="9.9"), "provenance versions"),
    "entry date": (lambda d: d.update(date="2026-11-01"), "the last cell finished on"),
    "cells from two installations": (_cell(3, "versions", "torch", "2.0.0"), "different package versions"),
    "cell id of another cell": (_cell(0, "cell", "paper_mlp-n8-c0-s0"), "holds the run of"),
    "per-pose out-test contradicts": (_cell(0, "metrics", "out_test_acc_per_pose", 0, 0.5), "not the mean of its per-pose"),
    "data source": (_cell(0, "data", "digits", "mnist5k"), "contradicts data.source"),
    "image count": (_cell(0, "data", "n_images", 5000), "n_images 5000"),
    "group": (_cell(0, "data", "group", "translation"), "acts by 'rotation'"),
    "order in data and hparams": (_cell(0, "data", "hparams", "n_angles", 8), "disagree with RotatedMNIST's"),
    "impossible step count": (_cell(0, "global_step", 99999), "are not 99999 steps"),
    "accuracy not a count": (lambda d: [d["cells"][0]["metrics"].update(out_test_acc=0.70601, out_test_acc_per_pose=[0.70601, None, None, None])],
                             "not a whole number"),
    "invariance claimed": (lambda d: d.update(invariance="built-in:c4"), "the registry says"),
    "sweep renamed": (lambda d: d.update(sweep="mnist_cpu_invariant"), "does not train"),
}


@pytest.mark.parametrize("case", sorted(COMPARED))
def test_fields_that_contradict_the_cells_are_refused(tmp_path, case):
    change, expected = COMPARED[case]
    data = _load(MLP)
    data["verified"] = None
    change(data)
    error = _check(tmp_path, _rederive(data))
    assert expected in error, error


# ---- rendered text -----------------------------------------------------------------------------


INJECTIONS = {
    "sweep with a link": (lambda d: d.update(sweep="x](http://evil)"), "sweep: String should match pattern"),
    "order argument with an image": (_cell(0, "data", "order_argument", "![x](http://e/x.png)"), "order_argument"),
    "bidi override in notes": (lambda d: d.update(notes="safe \u202e txet"), "U+202E"),
    "zero-width space in an author": (lambda d: d.update(authors=["A\u200bB"]), "U+200B"),
    "paragraph separator in notes": (lambda d: d.update(notes="a\u2029b"), "U+2029"),
    "raw html in notes": (lambda d: d.update(notes="<img src=x onerror=alert(1)>"), "must be one plain line"),
}


@pytest.mark.parametrize("case", sorted(INJECTIONS))
def test_rendered_strings_are_validated_strictly(tmp_path, case):
    change, expected = INJECTIONS[case]
    data = _load(QUICK)
    data["verified"] = None
    change(data)
    assert expected in _check(tmp_path, _rederive(data))


HOSTILE = "see [x](javascript:alert(1)) ![i](http://e/i.png) **b** &lt;script&gt; _u_ `c` #h"


def test_free_text_is_escaped_in_markdown_and_html():
    from orbitbench.leaderboard.render import render_html, render_readme

    data = _load(QUICK)
    data.update(notes=HOSTILE, authors=["A [x](y) *b* &amp;"])
    entries = {"e": Entry.model_validate_json(json.dumps(data))}
    readme, page = render_readme(entries), render_html(entries)
    assert HOSTILE not in readme and "[x](" not in readme and "![i](" not in readme and "&lt;script" not in readme
    assert r"\[x\]\(javascript:alert\(1\)\) \!\[i\]\(http://e/i.png\) \*\*b\*\* &amp;lt;script&amp;gt;" in readme
    assert r"A \[x\]\(y\) \*b\* &amp;amp;" in readme and "A [x](y) *b* &amp;amp;" in page
    assert HOSTILE not in page and "see [x](javascript:alert(1)) ![i](http://e/i.png) **b** &amp;lt;script&amp;gt;" in page


# ---- reading -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_entries_records_and_data_files_must_be_regular_bounded_files(tmp_path):
    from orbitbench.data import DataSourceError, read_idx
    from orbitbench.run.record import load_record

    folder = tmp_path / "board" / "entries"
    folder.mkdir(parents=True)
    (folder / "mnist-cpu__zero.json").symlink_to("/dev/zero")
    with pytest.raises(OrbitbenchError, match="symbolic link"):
        cli.load_entries(tmp_path / "board", SWEEPS)
    (folder / "mnist-cpu__zero.json").unlink()
    os.mkfifo(folder / "mnist-cpu__fifo.json")
    with pytest.raises(OrbitbenchError, match="not a regular file"):
        cli.load_entries(tmp_path / "board", SWEEPS)
    os.mkfifo(tmp_path / "record.json")
    with pytest.raises(OrbitbenchError, match="no run record|not a regular file"):
        load_record(tmp_path / "record.json")
    (tmp_path / "link.json").symlink_to("/dev/zero")
    with pytest.raises(OrbitbenchError, match="no run record|not a regular file"):
        load_record(tmp_path / "link.json")
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(DataSourceError, match="not a regular file"):
        read_idx(tmp_path / "train-images-idx3-ubyte", 3)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (cli.MAX_ENTRY_BYTES + 1))
    with pytest.raises(OrbitbenchError, match="accepted"):
        cli.read_entry(big)


# ---- every leaf ---------------------------------------------------------------------------------


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    elif isinstance(value, list) and value and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        for i, sub in enumerate(value):
            yield from _leaves(sub, (*path, i))
    else:
        yield path, value


def _mutated(value):
    """A plausible different value of the same type (None: no same-type value exists; skipped)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.5 + 0.25, 6) if 0 <= value <= 1 else value * 1.1 + 1
    if isinstance(value, str):
        try:
            return (dt.datetime.fromisoformat(value.replace("Z", "+00:00")) - dt.timedelta(hours=25)).isoformat().replace("+00:00", "Z")
        except ValueError:
            return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else None
    return None


def _sampled(path) -> bool:
    """Cells are alike: every leaf outside them, and every leaf of the first, a middle and the last cell."""
    return len(path) < 2 or path[0] != "cells" or path[1] in (0, 9, 19)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_field_of_a_committed_entry_is_derived_or_compared_or_free_text(tmp_path):
    original = _load(MLP)
    tried = 0
    for path, value in _leaves(original):
        if _mutated(value) is None or not _sampled(path):
            continue
        data = json.loads(json.dumps(original))
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = _mutated(value)
        error = _check(tmp_path, data, file_name=MLP)  # the file edited in place
        tried += 1
        if path[0] in FREE_TEXT:
            assert error == "", (path, error)
        else:
            assert error, f"{'.'.join(map(str, path))} changed from {value!r} and check still passes"
    assert tried > 150
