"""The method interface and its registry (`@register_method("name")`, `create_method(name, **kw)`).

A method decides two things: the network (`attach`: the backbone as is, or wrapped in the
method's own heads) and the training loss (`training_step(net, batch, views)`). Whatever it builds,
`net` stays an `nn.Module` mapping images [B, 1, 28, 28] to logits [B, classes], so evaluation, the
run record and the empirical-NTK callback work on every method unchanged. As DomainBed hands an
algorithm its data, a method is handed what it may use (the network, the batch, `PoseViews` of the
training split) and never sees the Trainer or the LightningModule.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, for docs, the run record and (later) the leaderboard.

    idea: the published idea it implements, one line.
    kernel_prediction: what the empirical NTK of `net`'s logits predicts for this method, or None
        where no kernel prediction is defined (then `kernel_note` says why).
    uses_pose_pairs: whether it asks the DataModule for a second training pose of each image.
    kernel_predictors: the kernel predictors (`orbitbench.theory.registry`) that describe a
        network trained by this method, None: every registered one; the others are reported as
        undefined, with `kernel_note`.
    """

    idea: str
    kernel_prediction: str | None
    kernel_note: str = ""
    uses_pose_pairs: bool = False
    kernel_predictors: tuple[str, ...] | None = None

    def predictors(self) -> tuple[str, ...]:
        """The registered predictors that describe this method's network, in display order."""
        from orbitbench.theory.registry import predictor_names

        names = predictor_names()
        return names if self.kernel_predictors is None else tuple(n for n in names if n in self.kernel_predictors)


class StepOutput(NamedTuple):
    loss: Tensor  # the scalar that is minimised
    logits: Tensor  # [B, classes] of the batch's own images (train accuracy)
    logs: dict[str, Tensor]  # extra per-step scalars, logged as train/<name>


class PoseViews:
    """Other training poses of a batch's images, for the pose-pair methods (bound by
    `OrbitClassifier.setup` to the DataModule; never an out-test pose)."""

    def __init__(self, datamodule: Any) -> None:
        self._data = datamodule

    @property
    def n_poses(self) -> int:
        return int(self._data.n_poses)

    def partners(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """Another training pose of each (image, pose) training pair: int64 [B]."""
        return self._data.partner_poses(image_index, pose)

    def images(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """The posed images [B, 1, 28, 28] on the batch's device."""
        return self._data.materialize(image_index, pose)


class Method(nn.Module):
    """Base class: parameters a method adds (projectors, operators) live in the network it returns."""

    name: ClassVar[str] = ""
    info: ClassVar[MethodInfo]

    # True: `attach` is given the backbone's read-out (the model's declared `classifier`).
    needs_readout: ClassVar[bool] = False

    def attach(self, net: nn.Module, num_classes: int, readout: nn.Module | None = None) -> nn.Module:
        """The network trained and evaluated: `net` itself unless the method wraps it."""
        return net

    def training_step(self, net: nn.Module, batch: Any, views: PoseViews | None) -> StepOutput:
        """The loss of one batch (`OrbitBatch`) for the network `attach` returned; `views`: None
        when the data offers no pose pairs."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def decorator(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def number_setting(method: str, name: str, value: Any, minimum: float, strict: bool = False, integer: bool = False) -> float:
    """`value` as a finite number >= `minimum` (> with `strict`), else one line: a NaN or infinite
    loss weight trains on a NaN loss and ends in a record of nulls, a negative one rewards the
    opposite of what the method means."""
    kind = "an integer" if integer else "a finite number"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_type or not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise OrbitbenchError(f"--model.method_kwargs: {method} {name}={value!r}; expected {kind} "
                              f"{'>' if strict else '>='} {minimum:g}")
    return value if integer else float(value)


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    name = name.strip()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OrbitbenchError(f"unknown method {name!r}{hint}; expected one of {', '.join(list_methods())}")
    return _REGISTRY[name]


def build_network(method: Method, model: str, num_classes: int = 10, **backbone_kwargs: Any) -> nn.Module:
    """The zoo model `model` built and handed to `method` (with its declared read-out if it needs one)."""
    from orbitbench.models import model_info

    info = model_info(model)
    net = info.build(num_classes=num_classes, **backbone_kwargs)
    return method.attach(net, num_classes, info.readout(net) if method.needs_readout else None)


def create_method(name: str, **kwargs: Any) -> Method:
    """Build the registered method `name`; a bad keyword is one `OrbitbenchError` line."""
    cls = method_class(name)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise OrbitbenchError(f"method {name!r}: {error}") from error
