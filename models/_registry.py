"""timm-style model registry: `@register_model("name")` on a builder, `create_model(name, **kw)`.

Two name forms are resolved here rather than registered one by one, because they are open-ended:
`timm:<timm model name>` (any timm architecture adapted to 1x28x28 input) and
`c4_pooled(<any zoo name>)` (a wrapper made invariant to rot90 by averaging logits over the four
poses). Both nest: `c4_pooled(timm:resnet18)` works.
"""

from __future__ import annotations

import difflib
import re
from typing import Callable

from torch import nn

from orbitbench.errors import OrbitbenchError

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}
_C4_PATTERN = re.compile(r"^c4_pooled\((?P<inner>.+)\)$")
TIMM_PREFIX = "timm:"


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
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OrbitbenchError(
            f"unknown model {name!r}{hint}; expected one of {', '.join(list_models())}, "
            f"'timm:<timm model name>' or 'c4_pooled(<model>)'"
        )
    return _REGISTRY[name]


def invariance(name: str) -> str:
    """`built-in:<group>` for a model invariant by construction (`c4_pooled(...)`: rot90), else `none`."""
    return "built-in:c4" if _C4_PATTERN.match(name.strip()) else "none"
