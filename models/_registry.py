"""timm-style model registry: `@register_model("name", ...)` on a builder, one `ModelInfo` per model.

Beside each builder sits its metadata, as timm keeps `default_cfgs` beside its models: the
model's *kernel twin* (the infinite-width network whose analytic NTK the finite model's kernel
converges to, read off the built network's layers or declared and checked against them:
`models/_twin.py`), its invariance by construction and its `classifier` (the read-out submodule,
timm's name for it). `model_info(name)` resolves every name form to one `ModelInfo`:

- a zoo name (`list_models()`), and the models of installed packages' `orbitbench.models` entry
  points and of the folders in `ORBITBENCH_MODELS_PATH` (a clone's own `models/`, CONTRIBUTING.md);
- `package.module:builder`, a builder importable from the user's own code;
- `timm:<timm model name>` (any timm architecture adapted to 1x28x28 input);
- `c4_pooled(<any of these>)` (a wrapper made invariant to rot90 by averaging logits over the
  four poses) and `linearized(<any of these>)` (the model's first-order Taylor model around its
  initial weights, `models/linearized.py`). The forms nest: `c4_pooled(timm:resnet18)` works.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Union

import torch
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models._twin import KernelTwin, check_twin, twin_from_layers

ModelBuilder = Callable[..., nn.Module]

# What a builder declares as its twin: DERIVED (read off the built network's layers), a twin, a
# function of the builder's keyword arguments giving a twin or the reason there is none, or that
# reason as a string. A declared twin is checked against the layers whenever it is resolved.
DERIVED = "derived from the built network's layers"
KernelSpec = Union[KernelTwin, str, Callable[..., Union[KernelTwin, str]]]

TIMM_PREFIX = "timm:"
ENTRY_POINT_GROUP = "orbitbench.models"  # installed packages add models here (see CONTRIBUTING.md)
MODELS_PATH_VARIABLE = "ORBITBENCH_MODELS_PATH"  # folders of builder files, imported like models/
_C4_PATTERN = re.compile(r"^c4_pooled\((?P<inner>.+)\)$")
_LINEARIZED_PATTERN = re.compile(r"^linearized\((?P<inner>.+)\)$")
_PLUGIN_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelInfo:
    """Everything the benchmark knows about one model, wherever it came from.

    builder: `builder(num_classes=..., **kwargs) -> nn.Module`, [B,1,28,28] -> [B,classes].
    twin: the kernel-twin declaration (`KernelSpec`); read it with `kernel_twin(**kwargs)`.
    invariance: `none` or `built-in:<group>` (invariant by construction; the leaderboard shows it).
    classifier: dotted path of the read-out submodule in the built network (integers index
        children, negative from the end), or None where the model declares none.
    builder_path: `module:qualname` of the code that builds it (what a leaderboard entry records).
    source: where the name was found (zoo, entry point, models path, import path, timm, c4_pooled).
    """

    name: str
    builder: ModelBuilder
    twin: KernelSpec = DERIVED
    invariance: str = "none"
    classifier: str | None = None
    builder_path: str = ""
    source: str = "zoo"

    def build(self, **kwargs: Any) -> nn.Module:
        """The network; a bad builder keyword is one `OrbitbenchError` line (user input, not a bug)."""
        try:
            return self.builder(**kwargs)
        except TypeError as error:
            raise OrbitbenchError(f"model {self.name!r}: {error}") from error

    def kernel_twin(self, **kwargs: Any) -> KernelTwin | str:
        """The analytic twin of the network built with `kwargs`, or one line saying why there is none."""
        spec = self.twin
        if isinstance(spec, str) and spec != DERIVED:
            return spec
        if callable(spec) and not isinstance(spec, KernelTwin):
            try:
                spec = spec(**kwargs)
            except TypeError as error:
                raise OrbitbenchError(f"model {self.name!r}: {error}") from error
            if isinstance(spec, str):
                return spec
        with torch.random.fork_rng(devices=[]):  # building must not move the training's random stream
            net = self.build(**kwargs)
        if spec == DERIVED:
            return twin_from_layers(net)
        problem = check_twin(spec, net, self.name)
        if problem is not None:
            raise OrbitbenchError(problem)
        return spec

    def readout(self, net: nn.Module) -> nn.Module:
        """The built network's read-out layer, the declared `classifier` (what feature methods read)."""
        if self.classifier is None:
            raise OrbitbenchError(
                f"model {self.name!r} declares no classifier (its read-out submodule); register it with "
                f"@register_model({self.name!r}, classifier='<submodule path>') to use it with this method"
            )
        module = net
        for part in self.classifier.split("."):
            children = list(module.children())
            index = int(part) if re.fullmatch(r"-?\d+", part) else None
            if index is not None and -len(children) <= index < len(children):
                module = children[index]
            elif index is None and isinstance(getattr(module, part, None), nn.Module):
                module = getattr(module, part)
            else:
                raise OrbitbenchError(f"model {self.name!r}: its classifier {self.classifier!r} is not a submodule")
        return module


_REGISTRY: dict[str, ModelInfo] = {}
_SOURCES: set[str] = set()  # distributions and folders whose models were loaded
_plugins_loaded = False
_loading = "zoo"  # the source of the models being registered now (a plug-in while it is imported)


def register_model(
    name: str, kernel: KernelSpec = DERIVED, invariance: str = "none", classifier: str | None = None,
    source: str | None = None,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(**kwargs) -> nn.Module` under `name`; the builder maps [B,1,28,28] -> [B,10].

    `kernel`: the model's analytic twin; by default read off the built network's layers, else a
    `KernelTwin`, a function of the builder's keyword arguments returning one or a reason, or the
    reason there is none. `invariance`: `none` or `built-in:<group>`. `classifier`: the read-out
    submodule's path in the built network (`ModelInfo.classifier`).
    """
    if not re.fullmatch(r"none|built-in:[a-z0-9_-]+", invariance):
        raise ValueError(f"register_model({name!r}): invariance={invariance!r}; accepted: none, built-in:<group>")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].builder.__module__}")
        _REGISTRY[name] = ModelInfo(name, builder, kernel, invariance, classifier, _qualified(builder), source or _loading)
        return builder

    return decorator


def _qualified(builder: ModelBuilder) -> str:
    return f"{builder.__module__}:{builder.__qualname__}"


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch `pattern` (`paper*`, `*mlp*`), sorted; entry-point and
    `ORBITBENCH_MODELS_PATH` models included. `timm:<name>` and `c4_pooled(<name>)` are accepted on top."""
    if not isinstance(pattern, str):
        raise OrbitbenchError(f"list_models: pattern={pattern!r}; expected a string such as 'paper*'")
    _load_plugins()
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def model_info(name: str) -> ModelInfo:
    """The one record of model `name`, for every name form; unknown names raise one `OrbitbenchError` line."""
    name = name.strip()
    match = _C4_PATTERN.match(name)
    if match:
        return _c4_pooled(model_info(match.group("inner")), name)
    match = _LINEARIZED_PATTERN.match(name)
    if match:
        return _linearized(model_info(match.group("inner")), name)
    if name.startswith(TIMM_PREFIX):
        from orbitbench.models.timm_adapter import create_timm_model, timm_classifier

        timm_name = name[len(TIMM_PREFIX):]
        return ModelInfo(name, partial(create_timm_model, timm_name), "timm architectures have no analytic kernel twin here",
                         classifier=timm_classifier(timm_name), builder_path="orbitbench.models.timm_adapter:create_timm_model",
                         source="timm")  # fmt: skip
    if name in _REGISTRY:
        return _REGISTRY[name]
    if _PLUGIN_PATTERN.match(name):
        builder = _import_builder(name)
        declared = next((info for info in _REGISTRY.values() if info.builder is builder), None)
        return replace(declared, name=name) if declared else ModelInfo(name, builder, builder_path=_qualified(builder), source="import path")
    _load_plugins()
    if name not in _REGISTRY:
        raise OrbitbenchError(_unknown(name))
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model `name` (any form `model_info` accepts); `kwargs` go to its builder."""
    return model_info(name).build(**kwargs)


def _c4_pooled(inner: ModelInfo, name: str) -> ModelInfo:
    from orbitbench.models.c4_pooled import C4Pooled

    def twin(**kwargs: Any) -> KernelTwin | str:
        found = inner.kernel_twin(**kwargs)
        if isinstance(found, str) or found.pool is not None:
            return found if isinstance(found, str) else "c4_pooled of a pooled model has no twin here"
        return replace(found, pool="rot90")

    def builder(**kwargs: Any) -> nn.Module:
        return C4Pooled(inner.build(**kwargs))

    classifier = None if inner.classifier is None else f"backbone.{inner.classifier}"
    return ModelInfo(name, builder, twin, "built-in:c4", classifier, "orbitbench.models.c4_pooled:C4Pooled", "c4_pooled")


def _linearized(inner: ModelInfo, name: str) -> ModelInfo:
    """The twin, invariance and read-out of the network it linearises: at initialisation the two are
    the same function with the same NTK, and the linearisation's NTK never moves from it."""
    from orbitbench.models.linearized import Linearized

    def builder(**kwargs: Any) -> nn.Module:
        net = inner.build(**kwargs)
        return Linearized(net, inner.readout(net) if inner.classifier is not None else None, name)

    classifier = None if inner.classifier is None else "features"
    return ModelInfo(name, builder, inner.kernel_twin, inner.invariance, classifier,
                     "orbitbench.models.linearized:Linearized", "linearized")


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    sources = ", ".join(sorted(_SOURCES)) or "none installed"
    return (f"unknown model {name!r}{hint}; looked in the zoo at {Path(__file__).parent} ({', '.join(list_models())}), "
            f"in the '{ENTRY_POINT_GROUP}' entry points of installed packages and {MODELS_PATH_VARIABLE} ({sources}); "
            f"also accepted: 'package.module:builder', 'timm:<timm model name>', "
            f"'c4_pooled(<model>)', 'linearized(<model>)'{_other_checkout_hint(name)}")  # fmt: skip


def _other_checkout_hint(name: str) -> str:
    """A `models/` folder here that is not the installed zoo, and mentions `name`: say how to use it."""
    here = Path.cwd() / "models"
    installed = Path(__file__).resolve().parent
    if not here.is_dir() or here.resolve() == installed:
        return ""
    if any(f'"{name}"' in path.read_text(errors="ignore") for path in here.glob("*.py")):
        return (f". Note: {here} defines {name!r} but this environment's orbitbench is installed from "
                f"{installed.parent}; add the folder with `export {MODELS_PATH_VARIABLE}={here}` "
                "(no new environment), or run `make install` in this checkout")
    return ""


def _import_builder(name: str) -> ModelBuilder:
    """`package.module:builder` from the user's own importable code (no registration needed)."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise OrbitbenchError(
            f"model {name!r}: cannot import {module_name!r} ({error}); is its package installed in this "
            f"environment (pip install -e <your package>) or on PYTHONPATH?"
        ) from error
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise OrbitbenchError(f"model {name!r}: {module_name} has no callable {attribute!r}")
    return builder


def _load_plugins() -> None:
    """Register the models of installed packages' `orbitbench.models` entry points and of the
    folders in `ORBITBENCH_MODELS_PATH`, once.

    An entry point names a module (importing it runs its `@register_model` decorators) or a builder
    (registered under the entry point's name). A folder's files whose names do not start with `_`
    are imported as the zoo's own are, so a clone's `models/` works from another clone's environment.
    """
    global _plugins_loaded, _loading
    if _plugins_loaded:
        return
    _plugins_loaded = True
    try:
        _load_entry_points()
        for folder in filter(None, os.environ.get(MODELS_PATH_VARIABLE, "").split(os.pathsep)):
            _loading = f"{MODELS_PATH_VARIABLE} {folder}"
            _import_folder(Path(folder))
    finally:
        _loading = "zoo"


def _load_entry_points() -> None:
    global _loading
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = entry_point.dist.name if entry_point.dist is not None else entry_point.value
        _SOURCES.add(source)
        _loading = f"entry point of {source}"
        try:
            loaded = entry_point.load()
        except (Exception, SystemExit) as error:  # a broken plug-in must not hide the built-in zoo (nor end it)
            raise OrbitbenchError(f"model plug-in {entry_point.value!r} of {source} failed to load: {error}") from error
        if callable(loaded) and not isinstance(loaded, type(importlib)) and entry_point.name not in _REGISTRY:
            register_model(entry_point.name)(loaded)


def _import_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise OrbitbenchError(f"{MODELS_PATH_VARIABLE}: {folder} is not a folder")
    if folder.resolve() == Path(__file__).resolve().parent:
        return  # the installed zoo itself
    _SOURCES.add(str(folder))
    zoo = Path(__file__).resolve().parent
    for path in sorted(folder.glob("[!_]*.py")):
        if (zoo / path.name).is_file() and (zoo / path.name).read_bytes() == path.read_bytes():
            continue  # the zoo's own file in another clone: already imported
        module_name = f"orbitbench_models_path.{path.stem}"
        if module_name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # the user's file (or a name it registers twice): say which, in one line
            del sys.modules[module_name]  # SystemExit too: an exit() in a model file would end orbitbench silently
            raise OrbitbenchError(f"{MODELS_PATH_VARIABLE}: importing {path} failed: {type(error).__name__}: {error}") from None
