"""Model zoo: a timm-style registry, one file per family.

    from orbitbench.models import create_model, list_models
    net = create_model("paper_mlp")               # [B,1,28,28] -> [B,10]
    net = create_model("mlp", depth=5, width=1024)
    net = create_model("timm:resnet18")           # any timm model, 1 channel, 28x28, no weights
    net = create_model("c4_pooled(paper_convnet)")  # invariant to rot90 by construction
    info = model_info("paper_mlp")                 # the one record: builder, twin, invariance, classifier
    list_models("paper*")                          # fnmatch pattern; entry points and ORBITBENCH_MODELS_PATH too

Adding an architecture: one file here with a `@register_model("name")` builder and a
`models/<name>.yaml` CLI config. Every module of this package whose name does not start with an
underscore is imported below, so a new file registers itself without touching this one.
"""

import importlib
import pkgutil

from orbitbench.models._registry import (
    DERIVED, MODELS_PATH_VARIABLE, ModelInfo, create_model, list_models, model_info, register_model,
)
from orbitbench.models._twin import KernelTwin

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DERIVED", "MODELS_PATH_VARIABLE", "KernelTwin", "ModelInfo", "create_model", "list_models", "model_info", "register_model",
]
