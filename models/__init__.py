"""Model zoo: a timm-style registry, one file per family.

    from orbitbench.models import create_model, list_models
    net = create_model("paper_mlp")               # [B,1,28,28] -> [B,10]
    net = create_model("mlp", depth=5, width=1024)
    net = create_model("timm:resnet18")           # any timm model, 1 channel, 28x28, no weights
    net = create_model("c4_pooled(paper_convnet)")  # invariant to rot90 by construction

Adding an architecture: one file here with a `@register_model("name")` builder, imported below,
and a `models/<name>.yaml` CLI config.
"""

from orbitbench.models._registry import create_model, list_models, register_model
from orbitbench.models import cnn, mlp, paper  # noqa: F401  (registers the built-in families)

__all__ = ["create_model", "list_models", "register_model"]
