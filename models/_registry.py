"""timm-style model registry: `@register_model("name")` on a builder, `create_model(name, **kw)`.

Two name forms are resolved here rather than registered one by one, because they are open-ended:
`timm:<timm model name>` (any timm architecture adapted to 1x28x28 input) and
`c4_pooled(<any zoo name>)` (a wrapper made invariant to rot90 by averaging logits over the four
poses). Both nest: `c4_pooled(timm:resnet18)` works.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Callable

from torch import nn

from orbitbench.errors import OrbitbenchError

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}
_C4_PATTERN = re.compile(r"^c4_pooled\((?P<inner>.+)\)$")
TIMM_PREFIX = "timm:"
ENTRY_POINT_GROUP = "orbitbench.models"  # installed packages add models here (see CONTRIBUTING.md)
_PLUGIN_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_ENTRY_POINT_SOURCES: set[str] = set()  # distributions whose entry points were loaded
_entry_points_loaded = False


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(**kwargs) -> nn.Module` under `name`; the builder maps [B,1,28,28] -> [B,10]."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Registered names, sorted; `timm:<name>` and `c4_pooled(<name>)` are accepted on top of these."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the zoo model `name`; `kwargs` go to its builder (for `c4_pooled(...)`: the inner model).

    Unknown names and builder arguments raise `OrbitbenchError` with one line saying what is accepted.
    """
    name = name.strip()
    match = _C4_PATTERN.match(name)
    if match:
        from orbitbench.models.c4_pooled import C4Pooled

        return C4Pooled(create_model(match.group("inner"), **kwargs))
    if name.startswith(TIMM_PREFIX):
        from orbitbench.models.timm_adapter import create_timm_model

        return create_timm_model(name[len(TIMM_PREFIX):], **kwargs)
    try:
        return _registered(name)(**kwargs)
    except TypeError as error:  # a bad keyword for this builder: user input, not a bug
        raise OrbitbenchError(f"model {name!r}: {error}") from error


def builder_path(name: str) -> str:
    """`module:qualname` of the code that builds `name`: what a leaderboard entry records."""
    name = name.strip()
    if _C4_PATTERN.match(name):
        return "orbitbench.models.c4_pooled:C4Pooled"
    if name.startswith(TIMM_PREFIX):
        return "orbitbench.models.timm_adapter:create_timm_model"
    builder = _registered(name)
    return f"{builder.__module__}:{builder.__qualname__}"


def _registered(name: str) -> ModelBuilder:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if _PLUGIN_PATTERN.match(name):
        return _import_builder(name)
    _load_entry_points()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        groups = ", ".join(sorted(_ENTRY_POINT_SOURCES)) or "none installed"
        raise OrbitbenchError(
            f"unknown model {name!r}{hint}; looked in the zoo at {Path(__file__).parent} ({', '.join(list_models())}) "
            f"and in the '{ENTRY_POINT_GROUP}' entry points of installed packages ({groups}); also accepted: "
            f"'package.module:builder', 'timm:<timm model name>', 'c4_pooled(<model>)'{_other_checkout_hint(name)}"
        )
    return _REGISTRY[name]


def _other_checkout_hint(name: str) -> str:
    """A `models/` folder here that is not the installed zoo, and mentions `name`: say so."""
    here = Path.cwd() / "models"
    installed = Path(__file__).resolve().parent
    if not here.is_dir() or here.resolve() == installed:
        return ""
    if any(f'"{name}"' in path.read_text(errors="ignore") for path in here.glob("*.py")):
        return (f". Note: {here} defines {name!r} but this environment's orbitbench is installed from "
                f"{installed.parent}; run `make install` (pip install -e .) in this checkout")
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


def _load_entry_points() -> None:
    """Register the models that installed packages declare under the `orbitbench.models` group.

    Each entry point names a module (importing it runs its `@register_model` decorators) or a
    builder (registered under the entry point's name). Loaded once, on the first unknown name.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = entry_point.dist.name if entry_point.dist is not None else entry_point.value
        _ENTRY_POINT_SOURCES.add(source)
        try:
            loaded = entry_point.load()
        except Exception as error:  # a broken plug-in must not hide the built-in zoo
            raise OrbitbenchError(f"model plug-in {entry_point.value!r} of {source} failed to load: {error}") from error
        if callable(loaded) and not isinstance(loaded, type(importlib)) and entry_point.name not in _REGISTRY:
            register_model(entry_point.name)(loaded)
