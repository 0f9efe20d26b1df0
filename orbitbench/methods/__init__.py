"""Training methods: how a backbone is trained, chosen independently of which backbone.

    orbitbench fit --config models/paper_mlp.yaml --model.method pose_consistency \
        --model.method_kwargs '{weight: 1.0}'

A method is a small `nn.Module` (its own heads and projectors are its parameters) that turns a
training batch into a loss. `supervised` is plain cross-entropy, the zoo's behaviour. Adding one:
a file here with a `@register_method("name")` class derived from `Method`; every module of this
package whose name does not start with an underscore is imported below, so it registers itself.
"""

import importlib
import pkgutil

from orbitbench.methods._base import (
    Method, MethodInfo, PoseViews, StepOutput, build_network, create_method, list_methods, method_class, register_method,
)
from orbitbench.methods._features import FeatureTap

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FeatureTap", "Method", "MethodInfo", "PoseViews", "StepOutput", "build_network", "create_method", "list_methods", "method_class",
    "register_method",
]
