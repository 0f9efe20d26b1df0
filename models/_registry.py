"""timm-style model registry: `@register_model("name", kernel=...)` on a builder, `create_model(name, **kw)`.

Beside each builder sits its metadata, as timm keeps `default_cfgs` beside its models: here the
model's *kernel twin*, the infinite-width network whose analytic NTK the finite model's kernel
converges to (`KernelTwin`, computed by `orbitbench.twins`), or the reason it has none. Code
elsewhere reads it with `kernel_twin(name, **kwargs)` instead of guessing from module types.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Union

from torch import nn

from orbitbench.errors import OrbitbenchError

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class KernelTwin:
    """An infinite-width ReLU MLP declared as a zoo model's analytic twin (docs/THEORY.md §4).

    Layer l maps fan_in -> fan_out: `h = W a + b`, with `W` of variance `W_std**2 / fan_in` and
    `b` of variance `b_std**2 / fan_in` (`bias_scale="fan_in"`, PyTorch's default nn.Linear init
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)): W_std = b_std = 1/sqrt(3)) or `b_std**2`
    (`bias_scale="unit"`, neural-tangents' convention). `parameterization="standard"`: those are
    the trained parameters (PyTorch); "ntk": the trained parameters are unit Gaussians scaled in
    the forward pass (neural-tangents). A standard-parameterised NTK grows with the widths, so the
    twin keeps the model's own `widths`: its kernel is the one the model's empirical NTK
    concentrates on as all widths grow together (tests/test_twins.py). Dropout is not part of a
    twin (the kernel is the eval-mode network's), nor are the finite-width fluctuations.
    `pool="rot90"`: the network's outputs are averaged over the four rot90 poses (c4_pooled).
    `raw_std` (NTK parameterisation only): per layer, read-out last, the standard deviation of the
    trained weights and biases when it is not neural-tangents' 1 (paper_mlp(parameterization="ntk")).
    """

    widths: tuple[int, ...]  # hidden-layer widths; depth = len(widths)
    in_features: int = 784
    W_std: float = 3**-0.5  # noqa: N815 (neural-tangents' name)
    b_std: float | None = 3**-0.5  # None: no hidden biases
    bias_scale: Literal["fan_in", "unit"] = "fan_in"
    readout_bias: bool = True
    parameterization: Literal["standard", "ntk"] = "standard"
    pool: Literal["rot90"] | None = None
    arch: Literal["mlp"] = "mlp"
    raw_std: tuple[float, ...] | None = None  # None: unit (neural-tangents' stax init)

    @property
    def depth(self) -> int:
        return len(self.widths)


# What a builder declares: a twin, a function of the builder's keyword arguments giving a twin or
# the reason there is none, or that reason as a string.
KernelSpec = Union[KernelTwin, str, Callable[..., Union[KernelTwin, str]]]
NO_TWIN = "no analytic kernel twin declared for this architecture"

_REGISTRY: dict[str, ModelBuilder] = {}
_KERNELS: dict[str, KernelSpec] = {}
_INVARIANCE: dict[str, str] = {}  # name -> "none" | "built-in:<group>"
_C4_PATTERN = re.compile(r"^c4_pooled\((?P<inner>.+)\)$")
TIMM_PREFIX = "timm:"
ENTRY_POINT_GROUP = "orbitbench.models"  # installed packages add models here (see CONTRIBUTING.md)
_PLUGIN_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_ENTRY_POINT_SOURCES: set[str] = set()  # distributions whose entry points were loaded
_entry_points_loaded = False


def register_model(
    name: str, kernel: KernelSpec = NO_TWIN, invariance: str = "none"
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(**kwargs) -> nn.Module` under `name`; the builder maps [B,1,28,28] -> [B,10].

    `kernel`: the model's analytic twin (`KernelTwin`), a function of the builder's keyword
    arguments returning one or a reason, or the reason there is none. `invariance`: `none` or
    `built-in:<group>` for a model invariant by construction (the leaderboard shows it).
    """
    if not re.fullmatch(r"none|built-in:[a-z0-9_-]+", invariance):
        raise ValueError(f"register_model({name!r}): invariance={invariance!r}; accepted: none, built-in:<group>")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = builder
        _KERNELS[name] = kernel
        _INVARIANCE[name] = invariance
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


def kernel_twin(name: str, **kwargs) -> KernelTwin | str:
    """The analytic twin of zoo model `name` built with `kwargs`, or one line saying why there is none."""
    name = name.strip()
    match = _C4_PATTERN.match(name)
    if match:
        inner = kernel_twin(match.group("inner"), **kwargs)
        if isinstance(inner, str) or inner.pool is not None:
            return inner if isinstance(inner, str) else "c4_pooled of a pooled model has no twin here"
        return replace(inner, pool="rot90")
    if name.startswith(TIMM_PREFIX):
        return "timm architectures have no analytic kernel twin here"
    spec = _KERNELS.get(name, NO_TWIN) if name in _REGISTRY else _registered(name)
    if callable(spec) and not isinstance(spec, KernelTwin):
        try:
            spec = spec(**kwargs)
        except TypeError as error:
            raise OrbitbenchError(f"model {name!r}: {error}") from error
    return spec


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


def invariance(name: str) -> str:
    """`built-in:<group>` for a model invariant by construction (`c4_pooled(...)`: rot90; others as
    registered), else `none`."""
    name = name.strip()
    if _C4_PATTERN.match(name):
        return "built-in:c4"
    return _INVARIANCE.get(name, "none")
