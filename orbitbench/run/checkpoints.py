"""What a checkpoint was trained with, and whether that agrees with what the user asked for.

Lightning's CLI, given `--ckpt_path`, silently replaces the model settings of the config with the
checkpoint's, and leaves the data settings alone: `fit --config models/paper_convnet.yaml
--ckpt_path <paper_mlp ckpt>` trains paper_mlp, and `validate` on a checkpoint trained with 4
angles evaluates on 8. Here the checkpoint's saved settings become the defaults: a setting the user
did not give is restored from the checkpoint, a setting the user gave that disagrees with it is one
error line. Data may differ on purpose (evaluating on another group order) with `--override_data`.

Also here: where an evaluation of a checkpoint logs (inside the run it evaluates), and what a
failed run leaves behind (nothing, or a run marked FAILED when it has checkpoints to resume from).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI

from orbitbench._moved import current_path
from orbitbench.errors import OrbitbenchError
from orbitbench.io import as_json_value, atomic_write_bytes
from orbitbench.run.folders import ClaimedFolder, claim_new, numbered, remove
from orbitbench.run.record import LEGACY_DATA_NAMES
from orbitbench.trust import load_checkpoint

EVAL_COMMANDS = ("validate", "test", "predict")
FAILED = "FAILED"

_PRIVATE = ("_class_path", "_instantiator")


@dataclass(frozen=True)
class SavedSettings:
    """The model and data settings stored in a Lightning checkpoint (class path + init args)."""

    path: Path
    model_class: str | None
    model: dict[str, Any]
    data_class: str | None
    data: dict[str, Any]


def read_settings(path: str | Path) -> SavedSettings:
    """Load only the settings of a checkpoint; one clear error for a missing, truncated, foreign or
untrusted file."""
    path = Path(path)
    ckpt = load_checkpoint(path)  # data only: weights_only, every saved class checked (orbitbench.trust)

    def split(key: str) -> tuple[str | None, dict[str, Any]]:
        """(class path, init args) as today's code names them (a checkpoint may predate a move or rename)."""
        saved = dict(ckpt.get(key) or {})
        class_path = current_path(saved.get("_class_path"))
        renamed = LEGACY_DATA_NAMES if key == "datamodule_hyper_parameters" else {}
        return class_path, {renamed.get(k, k): v for k, v in saved.items() if k not in _PRIVATE}

    model_class, model = split("hyper_parameters")
    data_class, data = split("datamodule_hyper_parameters")
    return SavedSettings(path, model_class, model, data_class, data)


def given_settings(cli: LightningCLI, subcommand: str) -> Any:
    """What the user set, however they set it (`--data.n_angles 4`, `--data '{n_angles: 4}'`,
    `--config FILE` or `--config=FILE`): the parser's own record, the command line parsed again
    without the defaults (nothing instantiated, nothing validated)."""
    return cli._parser(subcommand).parse_args(cli.argv[1:], defaults=False, _skip_validation=True)


def _section_given(given: Any, section: str, default_class: str | None) -> tuple[bool, dict[str, Any]]:
    """(a class other than the parser's default named?, the init args given) of one config section.

    jsonargparse fills in the default class for init args given alone, so naming the default class
    itself reads as not naming one: the checkpoint's class is then restored under the given args.
    """
    block = given.get(section)
    if block is None or not hasattr(block, "get"):
        return False, {}
    init_args = block.get("init_args")
    values = dict(init_args.items()) if init_args is not None and hasattr(init_args, "items") else {}
    named = block.get("class_path")
    return named is not None and named != default_class, {k.split(".")[0]: v for k, v in values.items()}


def reconcile(section: str, asked: Any, given: set[str], saved: dict[str, Any], may_differ: bool) -> list[str]:
    """Restore `saved` init args into the config section `asked` (a jsonargparse Namespace of the
    checkpoint's class) unless the user `given` them; return the user's settings that disagree.

    `may_differ`: the user allowed other values for this section (kept as given, not reported).
    """
    conflicts: list[str] = []
    for key, value in saved.items():
        if key not in asked.init_args or as_json_value(asked.init_args[key]) == as_json_value(value):
            continue
        if key not in given:
            asked.init_args[key] = value  # not set by the user: the checkpoint's value
        elif not may_differ:
            current = as_json_value(asked.init_args[key])
            conflicts.append(f"--{section}.{key} is {current!r}, the checkpoint was trained with {as_json_value(value)!r}")
    return conflicts


def short_class(class_path: str | None) -> str:
    return str(class_path).rsplit(".", 1)[-1]


def check_checkpoint_settings(cli: LightningCLI, subcommand: str, ckpt_path: str) -> None:
    """`orbitbench.run.checkpoints` applied to the CLI's config: restore, or one error naming the conflicts."""
    saved = read_settings(ckpt_path)
    config = cli.config[subcommand]
    given = given_settings(cli, subcommand)
    defaults = cli._parser(subcommand).get_defaults()
    conflicts: list[str] = []
    model_conflicts = 0
    for section, saved_class, values, may_differ in (
        ("model", saved.model_class, saved.model, False),
        ("data", saved.data_class, saved.data, bool(config.get("override_data"))),
    ):
        default_class = (defaults.get(section) or {}).get("class_path") if defaults.get(section) else None
        class_given, given_values = _section_given(given, section, default_class)
        asked = config[section]
        if saved_class is not None and asked.class_path != saved_class:
            if class_given and not may_differ:
                conflicts.append(f"--{section} is {short_class(asked.class_path)}, the checkpoint's is {short_class(saved_class)}")
                continue
            if not class_given and not (may_differ and given_values):  # the checkpoint's class, with its settings
                restored = cli._parser(subcommand).parse_object(
                    {section: {"class_path": saved_class, "init_args": values}}, config
                )
                config[section] = asked = restored[section]
                for key, value in given_values.items():  # then what the user set, where it applies
                    if key not in asked.init_args:
                        conflicts.append(f"--{section}.{key} does not apply to the checkpoint's {short_class(saved_class)}")
                    else:
                        asked.init_args[key] = value
        if saved_class is None or asked.class_path == saved_class:
            conflicts += reconcile(section, asked, set(given_values), values, may_differ)
        if section == "model":
            model_conflicts = len(conflicts)
    if conflicts:
        raise OrbitbenchError(f"--ckpt_path {ckpt_path}: {'; '.join(conflicts)} ({conflict_hint(subcommand, model_conflicts, len(conflicts))})")


def conflict_hint(subcommand: str, model_conflicts: int, total: int) -> str:
    """What helps: a checkpoint holds one model's weights (no flag evaluates them as another model);
    other data is allowed on purpose with --override_data."""
    hints = []
    if model_conflicts:
        hints.append("a checkpoint holds the weights of the model it was trained as: drop the --model flags to use "
                     "its settings, or train the other model with `orbitbench fit` without --ckpt_path")  # fmt: skip
    if total > model_conflicts:
        hints.append("add --override_data true to evaluate on other data" if subcommand in EVAL_COMMANDS
                     else "a resumed run keeps its data; drop the --data flags or start a new run without --ckpt_path")  # fmt: skip
    return "; ".join(hints)


def discard_failed_run(trainer: L.Trainer | None, owned: list[ClaimedFolder]) -> str:
    """A run that failed before saving a checkpoint leaves nothing behind; one with checkpoints is
    kept for `--ckpt_path last` and marked `FAILED` (the sweep and leaderboard skip such folders).

    Only a folder this process created (`owned`, `orbitbench.run.folders`) is touched: never one
    another run, or an earlier run resumed here, owns. Returns what was done, for the error line.
    """
    from orbitbench.run.callbacks.record_writer import run_log_dir

    if trainer is None or not trainer.is_global_zero:
        return ""
    log_dir = run_log_dir(trainer)
    if log_dir is None or not Path(log_dir).is_dir():
        return ""
    log_dir = Path(log_dir)
    mine = next((folder for folder in owned if folder.created and folder.path.resolve() == log_dir.resolve()), None)
    if mine is None:
        return ""
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "close"):
            with contextlib.suppress(OSError):  # a full disk: its last events are lost either way
                experiment.close()  # release the event file before removing it
    if any(log_dir.rglob("*.ckpt")):
        with contextlib.suppress(OSError):  # a full disk: the folder is kept all the same
            (log_dir / FAILED).write_text("this run stopped with an error before it finished\n")
        return f"; run folder {log_dir} kept for --ckpt_path last and marked {FAILED}"
    remove(mine)
    return f"; run folder {log_dir} removed (no checkpoint yet)"


def place_eval_run(logger, ckpt_path: Path, subcommand: str, split: str | None = None) -> ClaimedFolder | None:
    """Log an evaluation of a run's checkpoint inside that run: `<run>/eval/<subcommand>-<time>`,
    a folder this process creates (`orbitbench.run.folders`: two evaluations in one second get two)."""
    run_dir = ckpt_path.resolve().parent.parent
    if ckpt_path.resolve().parent.name != "checkpoints" or not os.access(run_dir, os.W_OK):
        return None  # a checkpoint from elsewhere: the default run naming
    stem = f"{subcommand}-{split + '-' if split else ''}{time.strftime('%Y%m%d-%H%M%S')}"
    folder = claim_new(numbered(run_dir / "eval", stem))
    logger.init_args.save_dir = str(run_dir)
    logger.init_args.name = "eval"
    logger.init_args.version = folder.path.name
    return folder


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints appear whole or not at all (`orbitbench.io.atomic_write_bytes`: a temporary file
    beside the target, renamed over it, removed on failure): a full disk or a kill while saving
    never leaves a truncated `last.ckpt` for `--ckpt_path last` to choke on."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        import io

        import torch

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getbuffer())
