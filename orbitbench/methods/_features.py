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
    """Runs `net` and returns its logits together with the input of its read-out.

    Use: `tap = FeatureTap(net)`, then `logits, features = tap(images)`: [B, classes], [B, D].
    The hook keeps nothing outside such a call, so other users of `net` (evaluation, the
    empirical-NTK callback's functional transforms) are untouched. A wrapper that runs its
    backbone on k poses at once (`c4_pooled`: rows ordered (pose, image)) gives [k*B, D]; the k
    rows of an image are averaged, as the wrapper averages their logits.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self._latest: Tensor | None = None
        self._active = False
        last_linear(net).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if self._active:
            self._latest = inputs[0]

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self._active, self._latest = True, None
        try:
            logits = self.net(images)
            latest = self._latest
        finally:
            self._active, self._latest = False, None
        if latest is None:
            raise OrbitbenchError(f"{type(self.net).__name__}: its read-out did not run in the forward pass")
        flat = latest.flatten(1)  # [k*B, D]
        if flat.shape[0] % images.shape[0]:
            raise OrbitbenchError(f"read-out saw {flat.shape[0]} rows for a batch of {images.shape[0]} images")
        return logits, reduce(flat, "(k b) d -> b d", "mean", b=images.shape[0])  # [B, D]
