"""What orbitbench reads as data and what it runs as code: the one allow-list every reader uses.

Checkpoints, run records, leaderboard entries, sweep files (with the config files they name) and a
sweep directory's copies of them are *data*: they come from other people (a submission, a shared
run, a downloaded checkpoint). Reading them never runs code:

- a checkpoint is unpickled with `torch.load(weights_only=True)`: tensors, containers, numbers,
  strings and the few types in `SAFE_GLOBALS`; a pickled object of any other type is refused;
- every class such data names (`class_path`, a checkpoint's `_class_path` and `_instantiator`, a
  dotted `package.module.Class` value such as `model.optimizer: torch.optim.SGD`, a model named
  `package.module:builder`, a DataModule named by dotted path) is checked by `check_class_path`
  *before* anything is imported or built. Allowed: orbitbench's own models, DataModules, methods,
  LightningModules and callbacks; torch optimisers and LR schedulers; timm models; Lightning's
  callbacks and loggers; and the same kinds from packages the user trusts (an installed
  `orbitbench.models` entry point's package, or `ORBITBENCH_TRUSTED_PACKAGES=pkg1,pkg2`).

What the user types on the command line, and the `--config` files named there, is their own code
and is not checked. A refusal is one `orbitbench:` line naming the file and the class (exit 2).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from orbitbench.errors import OrbitbenchError

TRUSTED_PACKAGES_ENV = "ORBITBENCH_TRUSTED_PACKAGES"
INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module",)  # what LightningCLI writes as `_instantiator`
SAFE_GLOBALS: list[Any] = []  # nothing beyond torch's own safe set: orbitbench checkpoints hold plain data
HOW_TO_TRUST = (f"orbitbench runs only its own, torch's, timm's and Lightning's classes from data; "
                f"trust your own package with {TRUSTED_PACKAGES_ENV}=<package> (docs/ARCHITECTURE.md, trust model)")
FREE_TEXT = ("description", "notes", "config_file")  # prose and paths: never imported
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_BUILDER = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)$")  # package.module:builder
_C4 = re.compile(r"^(?:c4_pooled|linearized)\((?P<inner>.+)\)$")  # the registry's wrapper forms
_PLAIN_NAME = re.compile(r"^[\w.+-]+$")  # a short class name the parser resolves itself (no colon, no spaces)


class UntrustedCode(OrbitbenchError):
    """Data that names code orbitbench does not run from data (a class outside the allow-list, a
    pickled object): refused before anything is imported, built or called."""


# ---- the allow-list --------------------------------------------------------------------------------


def _bases(prefix: str) -> tuple[type, ...]:
    """The kinds of class allowed under a package prefix (imported only when a path is checked)."""
    import lightning.pytorch as pl
    import torch

    if prefix == "torch.optim":
        return (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if prefix == "timm":
        return (torch.nn.Module,)
    if prefix == "lightning.pytorch.callbacks":
        return (pl.Callback,)
    if prefix == "lightning.pytorch.loggers":
        return (pl.loggers.Logger,)
    from orbitbench.methods._base import Method
    from orbitbench.orbits import GroupAction

    # orbitbench's own and trusted packages: models, DataModules, methods, LightningModules, callbacks,
    # group actions
    return (torch.nn.Module, pl.LightningDataModule, pl.Callback, Method, GroupAction)


def trusted_packages() -> tuple[str, ...]:
    """orbitbench, the packages of installed `orbitbench.models` entry points, and the user's list."""
    return ("orbitbench", *_entry_point_packages(), *_env_packages())


@lru_cache(maxsize=1)
def _entry_point_packages() -> tuple[str, ...]:
    found = []
    for entry_point in importlib.metadata.entry_points(group="orbitbench.models"):
        found.append(entry_point.value.split(":")[0].split(".")[0])
    return tuple(sorted(set(found)))


def _env_packages() -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(TRUSTED_PACKAGES_ENV, "").split(",") if p.strip())


def _prefix_of(path: str) -> str | None:
    """The allow-list prefix `path` lies under (at a dot boundary), or None."""
    for prefix in ("torch.optim", "timm", "lightning.pytorch.callbacks", "lightning.pytorch.loggers", *trusted_packages()):
        if path == prefix or path.startswith(prefix + "."):
            return prefix
    return None


def _refuse(source: str, what: str, value: Any) -> UntrustedCode:
    return UntrustedCode(f"{source}: {what} {value!r} is not allowed ({HOW_TO_TRUST})")


def check_class_path(path: Any, source: str, what: str = "class_path") -> None:
    """Refuse `path` unless it names an allowed class; imports only modules of allowed packages.

    A name without dots (`Adam`, `RotatedMNIST`) is resolved by the parser among the subclasses it
    already knows, and passes.
    """
    if not isinstance(path, str) or not (_DOTTED.match(path) or _PLAIN_NAME.match(path)):
        raise _refuse(source, what, path)
    if "." not in path:
        return
    prefix = _prefix_of(path)
    if prefix is None or any(part.startswith("__") for part in path.split(".")):  # `pkg.__main__` runs on import
        raise _refuse(source, what, path)
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except Exception:  # noqa: BLE001 (a trusted package that fails to import names no class)
        found = None
    if not (isinstance(found, type) and issubclass(found, _bases(prefix))):
        raise UntrustedCode(f"{source}: {what} {path!r} is not a model, DataModule, method, callback, logger, "
                            f"optimiser, LR scheduler or group action class of {prefix} ({HOW_TO_TRUST})")


def check_model_name(name: Any, source: str, what: str = "model") -> None:
    """A model named in data: a registry or `timm:` name, `c4_pooled(<name>)`, `linearized(<name>)`, or a builder
    `package.module:function` of a trusted package."""
    if not isinstance(name, str):
        raise _refuse(source, what, name)
    name = name.strip()
    inner = _C4.match(name)
    if inner:
        return check_model_name(inner.group("inner"), source, what)
    if name.startswith("timm:"):
        return None
    builder = _BUILDER.match(name)
    if builder:
        if _prefix_of(builder.group("module")) not in trusted_packages():
            raise _refuse(source, what, name)
        return None
    if ":" in name or "(" in name:
        raise _refuse(source, what, name)
    return None


def check_instantiator(value: Any, source: str) -> None:
    if value not in INSTANTIATORS:
        raise _refuse(source, "_instantiator", value)


# ---- configs -----------------------------------------------------------------------------------


def _normalised(key: str) -> list[str]:
    """`model.init_args.optimizer` and `trainer.callbacks+` as the setting they name."""
    return [part.rstrip("+") for part in key.split(".") if part not in ("init_args", "dict_kwargs")]


def _looks_importable(value: str) -> bool:
    """A dotted value whose first name is an importable module: the parser may import it for a
    class- or callable-typed setting (found without importing anything)."""
    if not _DOTTED.match(value):
        return False
    try:
        return importlib.util.find_spec(value.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def class_references(config: Any, key: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (setting, kind, value) in a nested or dotted-key config that names code: kind is
    `class`, `model` or `instantiator`."""
    if isinstance(config, Mapping):
        for sub, value in config.items():
            full = f"{key}.{sub}" if key else str(sub)
            last = _normalised(full)[-1] if _normalised(full) else ""
            if last in FREE_TEXT:
                continue
            if last in ("class_path", "_class_path"):
                yield full, "class", value
            elif last == "_instantiator":
                yield full, "instantiator", value
            elif last == "backbone":
                yield full, "model", value
            else:
                yield from class_references(value, full)
    elif isinstance(config, (list, tuple)):
        for item in config:
            yield from class_references(item, key)
    elif isinstance(config, str) and _looks_importable(config):
        yield key, "class", config


def check_config(config: Any, source: str) -> None:
    """Refuse a config (a checkpoint's hyper-parameters, an entry's or a sweep's settings, a config
    file's content) that names code outside the allow-list; nothing is built."""
    for key, kind, value in class_references(config):
        where = key or "value"
        if kind == "instantiator":
            check_instantiator(value, source)
        elif kind == "model":
            check_model_name(value, source, where)
        else:
            check_class_path(value, source, where)


def check_run_settings(model: Any, data: Any, source: str) -> None:
    """A run record's (or an entry cell's) model and data settings: the backbone, the DataModule
    (a class name or dotted path) and every keyword argument."""
    check_model_name(model.backbone, source, "model.backbone")
    check_class_path(data.datamodule, source, "data.datamodule")
    check_config({"backbone_kwargs": model.backbone_kwargs, "method_kwargs": model.method_kwargs}, source)
    check_config(data.hparams, source)


def check_entry(entry: Any, source: str) -> None:
    """A leaderboard entry: its model, DataModule, training settings and every cell's settings."""
    check_model_name(entry.model, source, "model")
    check_class_path(entry.protocol.datamodule, source, "protocol.datamodule")
    check_config(entry.config, f"{source} (config)")
    for cell in entry.cells:
        check_run_settings(cell.model, cell.data, f"{source} (cell {cell.cell})")


def check_sweep(spec: Any, source: str) -> None:
    """A sweep file (or a sweep directory's copy): its models, DataModule and fit settings, and the
    content of each config file it names (read as YAML, never executed)."""
    import yaml

    for model in spec.grid.model:
        check_model_name(model, source, "grid.model")
    check_class_path(spec.datamodule, source, "datamodule")
    check_config(spec.fit, f"{source} (fit)")
    check_config(spec.model_fit, f"{source} (model_fit)")
    for model, file in spec.config_files.items():
        path = Path(file)
        if path.is_file():
            from orbitbench.io import check_yaml_size, read_text_file

            text = read_text_file(path, f"config_files.{model}")
            check_yaml_size(text, f"config_files.{model} {path}")
            try:
                content = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise OrbitbenchError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
            check_config(content, f"{source} (config_files.{model}: {path})")


# ---- checkpoints -------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, flag: str = "--ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint as data: unpickled with `weights_only=True`, its saved settings checked.

    Every way a file can fail is one line naming it: missing, a folder, empty, truncated, not a
    checkpoint, or pickling an object that is not plain data (a payload that would run on load).
    """
    import torch

    path = Path(path)
    where = f"{flag} {path}"
    if path.is_dir():
        raise OrbitbenchError(f"{where}: is a folder; expected a checkpoint file (.ckpt) written by `orbitbench fit`")
    if not path.exists():
        raise OrbitbenchError(f"{where}: no such file")
    if not path.is_file():
        raise OrbitbenchError(f"{where}: not a regular file (a FIFO, device or socket); expected a checkpoint written by `orbitbench fit`")
    if path.stat().st_size == 0:
        raise OrbitbenchError(f"{where}: empty file; expected a checkpoint written by `orbitbench fit`")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:
            raise UntrustedCode(
                f"{where}: refused: it pickles {found.group(1)}, which would run code on load; a checkpoint "
                "must hold plain data (tensors, numbers, strings, lists, dicts)"
            ) from None
        raise _unreadable(where, error) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as error:
        raise _unreadable(where, error) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise OrbitbenchError(f"{where}: not a Lightning checkpoint (no state_dict)")
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], Mapping):
            raise OrbitbenchError(f"{where}: {key} is a {type(ckpt[key]).__name__}, expected a mapping of settings")
        check_config(ckpt.get(key) or {}, f"{where} ({key})")
    return ckpt


def _unreadable(where: str, error: BaseException) -> OrbitbenchError:
    return OrbitbenchError(f"{where}: not a readable PyTorch checkpoint (truncated, or not written by torch.save: "
                           f"{type(error).__name__})")
