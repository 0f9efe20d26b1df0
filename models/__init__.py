"""Model zoo: a timm-style registry, one file per family.

    from orbitbench.models import create_model, list_models
    net = create_model("paper_mlp")               # [B,1,28,28] -> [B,10]
    net = create_model("mlp", depth=5, width=1024)
    net = create_model("timm:resnet18")           # any timm model, 1 channel, 28x28, no weights
    net = create_model("c4_pooled(paper_convnet)")  # invariant to rot90 by construction

Adding an architecture: one file here with a `@register_model("name")` builder and a
`models/<name>.yaml` CLI config. Every module of this package whose name does not start with an
underscore is imported below, so a new file registers itself without touching this one.
"""

import importlib
import pkgutil

from orbitbench.models._registry import KernelTwin, builder_path, create_model, kernel_twin, list_models, register_model

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["KernelTwin", "builder_path", "create_model", "kernel_twin", "list_models", "register_model"]
