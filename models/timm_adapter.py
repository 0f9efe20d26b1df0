"""Any timm architecture as `timm:<name>`, adapted to 1-channel 28x28 digits and 10 classes.

timm already adapts the stem to `in_chans=1` and the head to `num_classes`; models whose
constructor takes an image size (ViTs, MLP-mixers, ...) also get `img_size=28`. Runs start from
default init and work offline: `pretrained=False` unless asked. `pretrained=True` loads weights
only from timm's local cache (Hugging Face hub offline mode, nothing is downloaded); without
cached weights it is one `orbitbench:` line saying so.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from typing import Iterator

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


def timm_classifier(name: str) -> str | None:
    """The read-out submodule timm declares for `name` (its pretrained config's `classifier`)."""
    import timm.models

    if not timm.is_model(name):
        return None
    config = timm.models.get_pretrained_cfg(name)
    classifier = getattr(config, "classifier", None)
    return classifier[0] if isinstance(classifier, (tuple, list)) else classifier


@contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face hub and timm's URL loader read their caches only (no network) inside."""
    import huggingface_hub.constants as hub

    before = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before[1]
        if before[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before[0]


def create_timm_model(name: str, num_classes: int = 10, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model(name, in_chans=1, num_classes=..., [img_size=28], **kwargs)`; weights
    only with `pretrained=True`, and then only from the local cache."""
    import timm

    if not timm.is_model(name):
        raise OrbitbenchError(
            f"unknown timm model {name!r}; expected a name from timm.list_models() (e.g. 'resnet18')"
        )
    if not isinstance(pretrained, bool):
        raise OrbitbenchError(f"timm model {name!r}: pretrained={pretrained!r}; accepted: true, false")
    if _accepts_img_size(name):
        kwargs.setdefault("img_size", 28)
    try:
        if not pretrained:
            return timm.create_model(name, pretrained=False, in_chans=1, num_classes=num_classes, **kwargs)
        source = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
        if not source:  # timm would fetch a URL through torch.hub: no offline mode to hold it to the cache
            raise OrbitbenchError(f"timm model {name!r}: pretrained=True, but its weights are not on the Hugging Face "
                                  "hub, and orbitbench never downloads weights; use pretrained=false")
        with _offline():
            return timm.create_model(name, pretrained=True, in_chans=1, num_classes=num_classes, **kwargs)
    except (TypeError, AssertionError, ValueError) as error:  # bad kwargs / size for this architecture
        raise OrbitbenchError(f"timm model {name!r} with {kwargs}: {error}") from error
    except (OSError, RuntimeError) as error:  # pretrained: not in the local cache (offline)
        raise OrbitbenchError(
            f"timm model {name!r}: pretrained=True, but its weights are not in the local cache and orbitbench "
            "never downloads them (fetch them once with timm where the network is reachable, then re-run)"
        ) from error
