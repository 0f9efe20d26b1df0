"""Any timm architecture as `timm:<name>`, adapted to 1-channel 28x28 digits and 10 classes.

timm already adapts the stem to `in_chans=1` and the head to `num_classes`; models whose
constructor takes an image size (ViTs, MLP-mixers, ...) also get `img_size=28`. Weights are
never downloaded (`pretrained=False`): runs must work offline and start from default init.
"""

from __future__ import annotations

import inspect

from torch import nn

from orbitbench.errors import OrbitbenchError


def _accepts_img_size(name: str) -> bool:
    import timm.models

    entrypoint = timm.models.model_entrypoint(name)
    # Entry points forward **kwargs to the model class; its name is not exposed, so look at
    # the architecture class registered in the entry point's module.
    module = inspect.getmodule(entrypoint)
    return any(
        "img_size" in inspect.signature(obj.__init__).parameters
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    )


def create_timm_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """`timm.create_model(name, in_chans=1, num_classes=..., [img_size=28], **kwargs)`, no weights."""
    import timm

    if not timm.is_model(name):
        raise OrbitbenchError(
            f"unknown timm model {name!r}; expected a name from timm.list_models() (e.g. 'resnet18')"
        )
    if _accepts_img_size(name):
        kwargs.setdefault("img_size", 28)
    try:
        return timm.create_model(name, pretrained=False, in_chans=1, num_classes=num_classes, **kwargs)
    except (TypeError, AssertionError, ValueError) as error:  # bad kwargs / size for this architecture
        raise OrbitbenchError(f"timm model {name!r} with {kwargs}: {error}") from error
