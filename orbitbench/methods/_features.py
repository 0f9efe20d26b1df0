"""The representation a method reads from a zoo backbone: the input of its last `nn.Linear`.

Every zoo model ends in a linear read-out (paper models, mlp, cnn_*, timm heads, SimpleViT's
head, steerable_cnn), so "what the read-out sees" is a definition that needs no per-model code.
A forward hook records it during the ordinary forward pass: one call gives both the logits and
the features, and the network itself stays an unchanged `images -> logits` module (what the
empirical-NTK callback differentiates).
"""

from __future__ import annotations

from einops import reduce
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError


def last_linear(net: nn.Module) -> nn.Linear:
    """The last `nn.Linear` in registration order: the read-out of every zoo model."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise OrbitbenchError(
            f"{type(net).__name__} has no nn.Linear read-out; this method reads the input of the last "
            "nn.Linear as the representation (orbitbench.methods.last_linear)"
        )
    return linears[-1]


class FeatureTap:
    """Keeps the input of `net`'s read-out from the latest forward pass.

    Use: `tap = FeatureTap(net)`, then after `logits = net(images)`, `tap.features(B)` is [B, D].
    A wrapper that runs its backbone on k poses at once (`c4_pooled`: rows ordered (pose, image))
    gives [k*B, D]; the k rows of an image are averaged, as the wrapper averages their logits.
    """

    def __init__(self, net: nn.Module) -> None:
        self._latest: Tensor | None = None
        self.handle = last_linear(net).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._latest = inputs[0]

    def features(self, batch_size: int) -> Tensor:
        latest = self._latest
        if latest is None:
            raise RuntimeError("FeatureTap.features() before any forward pass of the network")
        self._latest = None
        flat = latest.flatten(1)  # [k*B, D]; a read-out applied per token would give [.., T, D]
        if flat.shape[0] % batch_size:
            raise OrbitbenchError(f"read-out saw {flat.shape[0]} rows for a batch of {batch_size} images")
        return reduce(flat, "(k b) d -> b d", "mean", b=batch_size)  # [B, D]

    def remove(self) -> None:
        self.handle.remove()
