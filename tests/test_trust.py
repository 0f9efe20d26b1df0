"""Data never runs code (orbitbench.trust), and hostile files are one `orbitbench:` line.

Code is planted in a real checkpoint of a tiny fit on the embedded digits, in real run records and
leaderboard entries (tests/fixtures/leaderboard) and in sweep files: a `class_path` to
`trust_helpers.Marker` / `trust_helpers.write_marker` (which write a marker file when called) and a
pickled `trust_helpers.Payload` (whose `__reduce__` calls `write_marker` on unpickling). Every
command that reads them must refuse in one line, exit non-zero, and leave no marker.
"""

from __future__ import annotations

import re

import contextlib
import gzip
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from orbitbench import trust
from orbitbench.cli import main as cli_main
from orbitbench.cli import main
from orbitbench.data import DataSourceError, read_idx
from test_data import idx_header
from trust_helpers import MARKER_ENV, Payload

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_thread")]

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
SWEEP, SWEEPS = FIXTURES / "sweep", FIXTURES / "sweeps"
TINY = ["--data.n_angles", "2", "--data.images_per_class", "10", "--data.batch_size", "256", "--data.source", "mnist5k",
        "--data.leave_out_class", "3", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]  # fmt: skip


@pytest.fixture(autouse=True)
def marker(tmp_path, monkeypatch) -> Path:
    """Where planted code would leave its trace; checked absent after every test."""
    path = tmp_path / "MARKER"
    monkeypatch.setenv(MARKER_ENV, str(path))
    yield path
    assert not path.exists(), f"planted code ran: {path.read_text()}"


def run(*argv: str) -> tuple[int, str, str]:
    """`orbitbench ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def one_line(status: int, err: str) -> str:
    """The single `orbitbench:` line of a refused command (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("orbitbench: ")]
    assert status != 0 and len(lines) == 1 and "Traceback" not in err, (status, err)
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The last checkpoint of a real one-epoch paper_mlp fit (2 angles, 10 digits per class)."""
    torch.set_num_threads(1)
    save_dir = tmp_path_factory.mktemp("runs")
    status, _, err = run("fit", *TINY, "--trainer.logger.init_args.save_dir", str(save_dir))
    assert status == 0, err
    (ckpt,) = save_dir.glob("*/version_*/checkpoints/last.ckpt")
    return ckpt


def edited(source: Path, target: Path, change) -> Path:
    ckpt = torch.load(source, weights_only=True)
    change(ckpt)
    torch.save(ckpt, target)
    return target


PLANTED = {
    "datamodule class_path": lambda c: c["datamodule_hyper_parameters"].update(_class_path="trust_helpers.Marker"),
    "model class_path": lambda c: c["hyper_parameters"].update(_class_path="trust_helpers.Marker"),
    "subprocess.run": lambda c: c["hyper_parameters"].update(_class_path="subprocess.run"),
    "instantiator": lambda c: c["hyper_parameters"].update(_instantiator="trust_helpers.write_marker"),
    "builder": lambda c: c["hyper_parameters"].update(backbone="trust_helpers:write_marker"),
    "nested class_path": lambda c: c["hyper_parameters"].update(method_kwargs={"x": {"class_path": "trust_helpers.Marker"}}),
    "pickle payload": lambda c: c.update(extra=Payload()),
    "pickle payload in settings": lambda c: c["datamodule_hyper_parameters"].update(seed=Payload()),
}
READERS = {  # every command that reads a checkpoint
    "validate": ["validate"], "test": ["test"], "predict": ["predict"], "fit": ["fit", "--trainer.max_epochs", "2"],
    "predict-kernel": ["predict-kernel"],
}


@pytest.mark.parametrize("plant", PLANTED)
def test_code_planted_in_a_checkpoint_never_runs(checkpoint, tmp_path, plant) -> None:
    path = edited(checkpoint, tmp_path / "planted.ckpt", PLANTED[plant])
    for command, argv in READERS.items():
        extra = [] if command == "predict-kernel" else ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
        status, _, err = run(*argv, "--ckpt_path", str(path), *extra)
        line = one_line(status, err)
        assert status == 2 and str(path) in line, (command, line)
        assert ("trust_helpers" in line or "subprocess.run" in line), (command, line)
        assert ("would run code on load" in line) == plant.startswith("pickle"), (command, line)
        assert not (tmp_path / "runs").exists(), command


def test_a_clean_checkpoint_loads_as_data_and_evaluates(checkpoint) -> None:
    """The allow-list passes what `orbitbench fit` writes: settings restored, weights evaluated."""
    saved = trust.load_checkpoint(checkpoint)
    assert saved["hyper_parameters"]["_class_path"] == "orbitbench.run.module.OrbitClassifier"
    status, out, err = run("predict-kernel", "--ckpt_path", str(checkpoint), "--probe.n_seeds", "4",
                           "--probe.probe_digits_per_class", "2", "--probe.train_per_class", "4", "--probe.in_test_per_class", "2")
    assert status == 0 and "trained" in out, err


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c["hyper_parameters"].update(backbone="paper_convnet"), 'its weights do not fit the model .*Missing key\\(s\\) in state_dict: "net.'),
        # fewer outputs than the data has classes: refused before any weight is loaded
        (lambda c: c["hyper_parameters"].update(num_classes=5), "--model.num_classes 5: the data has 10 classes"),
        (lambda c: c["state_dict"].update({k: v[:, :-1] for k, v in c["state_dict"].items() if k == "net.1.weight"}),
         "its weights do not fit the model .*size mismatch for net.1.weight"),
    ],
    ids=["backbone", "output count", "weight shape"],
)
def test_a_checkpoint_with_edited_settings_or_weights_is_one_line(checkpoint, tmp_path, change, fragment) -> None:
    path = edited(checkpoint, tmp_path / "edited.ckpt", change)
    status, _, err = run("validate", "--ckpt_path", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))
    line = one_line(status, err)
    assert re.search(fragment, line), line
    assert [p for p in (tmp_path / "r").rglob("*") if p.is_file()] == []  # the failed evaluation left no run


@pytest.mark.parametrize("kind", ["folder", "empty", "dangling link"])
def test_a_checkpoint_path_that_is_no_checkpoint_is_one_line(tmp_path, kind) -> None:
    path = tmp_path / "model.ckpt"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.symlink_to(tmp_path / "gone.ckpt")
    expected = {"folder": "is a folder", "empty": "empty file", "dangling link": "no such file"}[kind]
    for argv in (["validate"], ["predict-kernel"]):
        line = one_line(*run(*argv, "--ckpt_path", str(path))[::2])
        assert str(path) in line and expected in line


def test_weights_only_cannot_be_switched_off(checkpoint) -> None:
    line = one_line(*run("validate", "--ckpt_path", str(checkpoint), "--weights_only", "false")[::2])
    assert "--weights_only false: orbitbench loads checkpoints as data only" in line


# ---- the allow-list itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["orbitbench.run.callbacks.EmpiricalNTKCallback", "orbitbench.datamodules.RotatedMNIST", "orbitbench.run.module.OrbitClassifier",
     "torch.optim.SGD", "torch.optim.lr_scheduler.StepLR", "lightning.pytorch.callbacks.EarlyStopping",
     "lightning.pytorch.loggers.CSVLogger", "Adam"],
)
def test_allowed_classes_pass(path) -> None:
    trust.check_class_path(path, "test")


@pytest.mark.parametrize(
    "path",
    ["os.system", "subprocess.Popen", "builtins.eval", "trust_helpers.Marker", "orbitbench.io.atomic_write_text",
     "orbitbench.__main__.main", "torch.optim.Optimizer.zero_grad", "torch.load", "lightning.pytorch.cli.LightningCLI",
     "timm.create_model", "a b", 7],
)
def test_other_classes_and_functions_are_refused(path) -> None:
    with pytest.raises(trust.UntrustedCode, match="is not"):
        trust.check_class_path(path, "test")


def test_a_package_the_user_trusts_by_environment(monkeypatch) -> None:
    with pytest.raises(trust.UntrustedCode):
        trust.check_model_name("trust_helpers:write_marker", "test")
    monkeypatch.setenv(trust.TRUSTED_PACKAGES_ENV, "trust_helpers")
    trust.check_model_name("trust_helpers:write_marker", "test")  # checked only: nothing is called
    for path in ("trust_helpers.write_marker", "trust_helpers.Marker"):  # a function, a class of no allowed kind
        with pytest.raises(trust.UntrustedCode, match="is not a model, DataModule"):
            trust.check_class_path(path, "test")


def test_dotted_values_in_flat_and_nested_configs_are_found() -> None:
    config = {"trainer.callbacks+": "os.system", "model": {"init_args": {"optimizer": {"class_path": "torch.optim.SGD"}}},
              "data.data_dir": "data", "description": "see os.path", "model.backbone": "c4_pooled(x:y)"}
    found = sorted((key, kind, value) for key, kind, value in trust.class_references(config))
    assert found == [("model.backbone", "model", "c4_pooled(x:y)"), ("model.init_args.optimizer.class_path", "class", "torch.optim.SGD"),
                     ("trainer.callbacks+", "class", "os.system")]  # fmt: skip


# ---- entries, records, sweep files -----------------------------------------------------------


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A leaderboard with the fixture sweep's entries (real run records)."""
    root = tmp_path_factory.mktemp("board") / "board"
    (root / "entries").mkdir(parents=True)
    assert cli_main(["leaderboard", "add", "--root", str(root), "--sweeps", str(SWEEPS), str(SWEEP), "--models", "[paper_mlp]"]) == 0
    assert cli_main(["leaderboard", "build", "--root", str(root), "--sweeps", str(SWEEPS)]) == 0
    return root


ENTRY_PLANTS = {
    "config callback": lambda e: e["config"].update({"trainer.callbacks+": "trust_helpers.Marker"}),
    "config file class_path": lambda e: e["config"].update(
        config_file_content={"model": {"init_args": {"optimizer": {"class_path": "trust_helpers.Marker"}}}}),
    "model builder": lambda e: e.update(model="trust_helpers:write_marker"),
    "cell datamodule": lambda e: e["cells"][0]["data"].update(datamodule="trust_helpers.Marker"),
    "cell backbone kwargs": lambda e: e["cells"][0]["model"].update(backbone_kwargs={"act": {"class_path": "os.system"}}),
}


@pytest.mark.parametrize("plant", ENTRY_PLANTS)
def test_code_planted_in_an_entry_never_runs(board, tmp_path, plant) -> None:
    root = tmp_path / "board"
    shutil.copytree(board, root)
    (path,) = (root / "entries").glob("*.json")
    entry = json.loads(path.read_text())
    ENTRY_PLANTS[plant](entry)
    path.write_text(json.dumps(entry))
    before = path.read_bytes()
    common = ["--root", str(root), "--sweeps", str(SWEEPS)]
    for argv in (["leaderboard", "check", *common], ["leaderboard", "build", *common],
                 ["leaderboard", "verify", str(path), "--sweeps", str(SWEEPS), "--cells", "1"],
                 ["leaderboard", "add", str(SWEEP), "--models", "[cnn_gap]", *common]):
        line = one_line(*run(*argv)[::2])
        assert str(path) in line and "is not allowed" in line, (argv[1], line)
    assert path.read_bytes() == before and len(list((root / "entries").iterdir())) == 1


def test_a_pickle_payload_as_an_entry_is_one_line(board, tmp_path) -> None:
    root = tmp_path / "board"
    shutil.copytree(board, root)
    (path,) = (root / "entries").glob("*.json")
    path.write_bytes(pickle.dumps(Payload()))
    for argv in (["check", "--root", str(root), "--sweeps", str(SWEEPS)], ["verify", str(path), "--sweeps", str(SWEEPS)]):
        line = one_line(*run("leaderboard", *argv)[::2])
        assert f"entry {path}: not UTF-8 text" in line


@pytest.mark.parametrize("field", ["datamodule", "backbone"])
def test_code_planted_in_a_run_record_never_runs(tmp_path, field) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    record = sweep / "cells" / "paper_mlp-n2-c3-s0" / "record.json"
    data = json.loads(record.read_text())
    if field == "datamodule":
        data["data"]["datamodule"] = "trust_helpers.Marker"
    else:
        data["model"]["backbone"] = "trust_helpers:write_marker"
    record.write_text(json.dumps(data))
    (tmp_path / "board" / "entries").mkdir(parents=True)
    for argv in (["leaderboard", "add", str(sweep), "--root", str(tmp_path / "board"), "--sweeps", str(SWEEPS)],
                 ["sweep", "collect", str(sweep)]):
        line = one_line(*run(*argv)[::2])
        assert str(record) in line and "trust_helpers" in line and "is not allowed" in line
    assert list((tmp_path / "board" / "entries").iterdir()) == []


SWEEP_PLANTS = {
    "os.system callback": {"fit": {"trainer.callbacks+": "os.system"}},
    "optimizer": {"fit": {"model.optimizer": "trust_helpers.Marker"}},
    "nested class_path": {"fit": {"trainer.callbacks": [{"class_path": "trust_helpers.Marker"}]}},
    "datamodule": {"datamodule": "trust_helpers.Marker"},
    "model builder": {"grid": {"model": ["trust_helpers:write_marker"]}},
    "config file": {"config_files": {"paper_mlp": "CONFIG"}},
}


@pytest.mark.parametrize("plant", SWEEP_PLANTS)
def test_code_planted_in_a_sweep_file_never_runs(tmp_path, plant) -> None:
    from sweep_helpers import TINY as TINY_SWEEP

    spec = yaml.safe_load(TINY_SWEEP)
    config = tmp_path / "paper_mlp.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "trust_helpers.Marker"}]}}))
    for key, value in SWEEP_PLANTS[plant].items():
        value = json.loads(json.dumps(value).replace("CONFIG", str(config)))
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    for command in ("list", "run"):
        line = one_line(*run("sweep", command, str(path), "--out", str(tmp_path / "out"), "--in_process", "true")[::2]
                        if command == "run" else run("sweep", command, str(path))[::2])
        assert str(path) in line and "is not allowed" in line and ("os.system" in line or "trust_helpers" in line), line
    assert not (tmp_path / "out").exists()


# ---- one line instead of a traceback ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["fit"], ["theory", "toy"], ["leaderboard", "check"], ["sweep", "list"], ["predict-kernel"]],
    ids=["fit", "theory", "leaderboard", "sweep", "predict-kernel"],
)
def test_a_binary_config_file_is_one_line(tmp_path, argv) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x80\x04\x95binary\xff\xfe")
    line = one_line(*run(*argv, "--config", str(path))[::2])
    assert f"--config {path}: not UTF-8 text (byte 0x80 at offset 0)" in line


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_config_path_that_is_no_file_is_one_line(tmp_path, kind) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir() if kind == "folder" else path.symlink_to(tmp_path / "gone.yaml")
    line = one_line(*run("fit", f"--config={path}")[::2])
    assert f"--config {path}: " + ("is a folder" if kind == "folder" else "no such file (a symbolic link to a missing file)") in line


@pytest.mark.parametrize("kind", ["binary", "folder", "dangling link"])
def test_an_entry_file_that_is_not_text_is_one_line(board, tmp_path, kind) -> None:
    root = tmp_path / "board"
    shutil.copytree(board, root)
    path = root / "entries" / "tiny-rot__other.json"
    if kind == "binary":
        path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not an entry")
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "gone.json")
    expected = {"binary": "not UTF-8 text", "folder": "is a folder", "dangling link": "is a symbolic link; expected a regular file"}[kind]
    line = one_line(*run("leaderboard", "check", "--root", str(root), "--sweeps", str(SWEEPS))[::2])
    assert f"entry {path}: {expected}" in line
    line = one_line(*run("leaderboard", "verify", str(path), "--sweeps", str(SWEEPS))[::2])
    assert f"entry {path}: {expected}" in line


@pytest.mark.parametrize("kind", ["truncated gzip", "garbage gzip", "huge header"])
def test_a_broken_idx_file_is_one_line(tmp_path, kind) -> None:
    suffix = "" if kind == "huge header" else ".gz"
    images, labels = tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"train-labels-idx1-ubyte{suffix}"
    whole = gzip.compress(idx_header(50, 28, 28) + np.zeros(50 * 784, np.uint8).tobytes())
    images.write_bytes({"truncated gzip": whole[: len(whole) // 2], "garbage gzip": b"\x1f\x8b not really gzip" * 10,
                        "huge header": idx_header(2**32 - 1, 2**32 - 1, 2**16) + bytes(784)}[kind])
    labels.write_bytes(gzip.compress(idx_header(50) + bytes(50)) if suffix else idx_header(50) + bytes(50))
    expected = "IDX header announces shape" if kind == "huge header" else "not a readable gzip file"
    with pytest.raises(DataSourceError, match=f"{images}: {expected}"):
        read_idx(images, ndim=3)
    line = one_line(*run("fit", "--data.source", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))[::2])
    assert f"{images}: {expected}" in line


def test_a_yaml_alias_bomb_is_one_line_and_expands_nothing(tmp_path) -> None:
    from sweep_helpers import TINY as TINY_SWEEP

    # 9 ** 9 = 387 million values from 90 lines: reading it expanded would fill the memory.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    config = tmp_path / "bomb.yaml"
    config.write_text(bomb + "trainer:\n  max_epochs: *i\n")
    line = one_line(*run("fit", "--config", str(config))[::2])
    assert f"--config {config}: its YAML aliases expand to more than 1,000,000 values" in line
    spec = tmp_path / "bomb_sweep.yaml"
    spec.write_text(bomb + TINY_SWEEP)
    line = one_line(*run("sweep", "list", str(spec))[::2])
    assert f"{spec}: its YAML aliases expand to more than 1,000,000 values" in line


def test_a_python_tag_in_a_config_constructs_nothing(tmp_path) -> None:
    config = tmp_path / "tag.yaml"
    config.write_text("trainer: !!python/object/apply:trust_helpers.write_marker ['x']\n")
    line = one_line(*run("fit", "--config", str(config), "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))[::2])
    assert "could not determine a constructor for the tag" in line


def test_a_log_folder_under_a_file_is_one_line(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    line = one_line(*run("fit", "--trainer.logger.init_args.save_dir", str(tmp_path / "afile" / "runs"))[::2])
    assert f"{tmp_path / 'afile'} is a file, expected a folder" in line


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999"])
def test_a_seed_outside_numpys_range_is_one_line(tmp_path, seed) -> None:
    line = one_line(*run("fit", "--seed_everything", seed, "--trainer.logger.init_args.save_dir", str(tmp_path / "r"))[::2])
    assert f"--seed_everything {seed}: expected an integer from 0 to 4294967295" in line
    assert not (tmp_path / "r").exists()


def test_an_entry_or_sweep_name_longer_than_a_file_name_is_one_line(tmp_path) -> None:
    from sweep_helpers import TINY as TINY_SWEEP

    long = "n" * 300
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SWEEP.replace("name: tiny", f"name: {long}"))
    line = one_line(*run("sweep", "run", str(path))[::2])
    assert f"{path}: name: String should have at most 100 characters" in line
    (tmp_path / "board" / "entries").mkdir(parents=True)
    line = one_line(*run("leaderboard", "add", str(SWEEP), "--models", "[paper_mlp]", "--name", long,
                         "--root", str(tmp_path / "board"), "--sweeps", str(SWEEPS))[::2])
    assert "name: String should have at most 100 characters" in line
    assert list((tmp_path / "board" / "entries").iterdir()) == []
