"""What a checkpoint was trained with, and whether that agrees with what the user asked for.

Lightning's CLI, given `--ckpt_path`, silently replaces the model settings of the config with the
checkpoint's, and leaves the data settings alone: `fit --config models/paper_convnet.yaml
--ckpt_path <paper_mlp ckpt>` trains paper_mlp, and `validate` on a checkpoint trained with 4
angles evaluates on 8. Here the checkpoint's saved settings become the defaults: a setting the user
did not give is restored from the checkpoint, a setting the user gave that disagrees with it is one
error line. Data may differ on purpose (evaluating on another group order) with `--override_data`.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orbitbench.errors import OrbitbenchError

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
    """Load only the settings of a checkpoint; one clear error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise OrbitbenchError(f"--ckpt_path {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise OrbitbenchError(
            f"--ckpt_path {path}: not a readable PyTorch checkpoint (truncated, or not written by torch.save: "
            f"{type(error).__name__})"
        ) from error
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise OrbitbenchError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")

    def split(key: str) -> tuple[str | None, dict[str, Any]]:
        saved = dict(ckpt.get(key) or {})
        class_path = saved.get("_class_path")
        return class_path, {k: v for k, v in saved.items() if k not in _PRIVATE}

    model_class, model = split("hyper_parameters")
    data_class, data = split("datamodule_hyper_parameters")
    return SavedSettings(path, model_class, model, data_class, data)


def given_settings(argv: list[str], section: str) -> tuple[bool, set[str]]:
    """What the user set in `section` ("model" or "data"): (class named?, init-arg names), read from
    the `--section...` flags and the `section:` blocks of `--config` files in `argv`."""
    import yaml

    class_given, keys = False, set()
    for i, token in enumerate(argv):
        flag = token.split("=", 1)[0]
        if flag in (f"--{section}", f"--{section}.class_path"):
            class_given = True
        elif flag.startswith(f"--{section}."):
            keys.add(flag[len(section) + 3:].removeprefix("init_args.").split(".")[0])
        elif flag == "--config" and i + 1 < len(argv):
            try:
                block = (yaml.safe_load(Path(argv[i + 1]).read_text()) or {}).get(section) or {}
            except (OSError, yaml.YAMLError, AttributeError):
                continue  # the parser reports a bad config file itself
            if isinstance(block, dict):
                class_given |= "class_path" in block
                keys |= set(block.get("init_args") or {}) | (set(block) - {"class_path", "init_args"})
    return class_given, keys


def reconcile(section: str, asked: Any, given: set[str], saved: dict[str, Any], may_differ: bool) -> list[str]:
    """Restore `saved` init args into the config section `asked` (a jsonargparse Namespace of the
    checkpoint's class) unless the user `given` them; return the user's settings that disagree.

    `may_differ`: the user allowed other values for this section (kept as given, not reported).
    """
    conflicts: list[str] = []
    for key, value in saved.items():
        if key not in asked.init_args or _plain(asked.init_args[key]) == _plain(value):
            continue
        if key not in given:
            asked.init_args[key] = value  # not set by the user: the checkpoint's value
        elif not may_differ:
            current = _plain(asked.init_args[key])
            conflicts.append(f"--{section}.{key} is {current!r}, the checkpoint was trained with {_plain(value)!r}")
    return conflicts


def _plain(value: Any) -> Any:
    """Compare lists and tuples alike (YAML gives lists, checkpoints may hold tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in dict(value).items()}
    return value


def short_class(class_path: str | None) -> str:
    return str(class_path).rsplit(".", 1)[-1]
